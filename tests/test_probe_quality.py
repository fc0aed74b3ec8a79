"""The default probe against scikit-learn's tuned logistic regression, and its ranking, on planted data.

Planted data as the issue measured it: 20 informative neurons among many, every column on an
arbitrary scale; the paper's fixed setting fails there, the tuned default must not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurohook import ranking
from neurohook.analysis import analyze
from neurohook.features import Features, LayerSpan
from neurohook.probe import PAPER_SETTINGS, LinearProbe


def planted(n: int, d: int, informative: int = 20, classes: int = 3, seed: int = 0, signal: float = 1.5):
    """Rows (n, d): class means shifted on `informative` random columns; columns scaled over 6 decades."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, d))
    cols = rng.choice(d, informative, replace=False)
    X[:, cols] += rng.standard_normal((classes, informative))[y] * signal
    scale = 10.0 ** rng.uniform(-3, 3, d)
    return (X * scale + rng.uniform(-10, 10, d) * scale).astype(np.float32), y, cols


def sklearn_tuned(X, y):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the weakest penalties
        return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 0, 7), cv=3, max_iter=300)).fit(X, y)


@pytest.mark.slow
@pytest.mark.parametrize("n, d, signal", [(3000, 2000, 1.5), (400, 4000, 2.5)], ids=["N>D", "D>>N"])
def test_default_probe_within_a_point_of_tuned_scikit_learn(n, d, signal):
    X, y, cols = planted(n, d, signal=signal)
    tr, te = np.arange(n) < 0.6 * n, np.arange(n) >= 0.6 * n
    ours = LinearProbe().fit(X[tr], y[tr])
    ref = sklearn_tuned(X[tr], y[tr])
    acc, ref_acc = ours.score(X[te], y[te]), ref.score(X[te], y[te])
    assert acc >= 0.90 and acc >= ref_acc - 0.01, (acc, ref_acc, ours.l2_)
    if n > d:  # the paper's fixed setting is the one that fails here (measured 58.9 % in the issue)
        assert LinearProbe(**PAPER_SETTINGS).fit(X[tr], y[tr]).score(X[te], y[te]) < acc - 0.05
    top40 = ranking.neuron_ordering(ours.coef_).order[:40]
    assert len(set(top40.tolist()) & set(cols.tolist())) >= 18  # >= 90 % of the planted neurons


def test_ranking_top_beats_random_beats_bottom_and_says_so():
    X, y, cols = planted(900, 600, seed=1)
    spans = [LayerSpan("a", 0, 300, "mean"), LayerSpan("b", 300, 600, "mean")]
    feats = Features(X, [f"u{i}" for i in range(len(y))], spans)
    r = analyze(feats, y, seeds=(0,), percentages=(5, 25)).tasks["task"]
    m = r.masked
    assert m["top"].mean >= m["random"].mean >= m["bottom"].mean - 0.02
    assert r.ranking_verdict == "better than random" and r.top_minus_random.ci[0] > 0
    assert r.chosen_on["best_layer"] == "dev" and set(r.layer_dev_accuracy) == {"a", "b"}
    assert r.probe_l2[0] in LinearProbe().l2_grid and r.ranking_l2[0] in LinearProbe().l2_grid
    assert len(set(r.minimal_neurons) & set(cols.tolist())) >= 0.8 * min(len(r.minimal_neurons), 20)
    # the cross-fitted check: half A ranks, probes retrained on half B on its top / random 20 % score on test
    c = r.retrained_check
    assert c["top"].mean > c["random"].mean + 0.1 and r.check_verdict == "better than random"
    assert r.check_minus_random.ci[0] > 0
    # random-k prefix curve: below the ranking's curve where few neurons are kept, spread given per k
    assert len(r.prefix_random) == len(r.prefix_steps) == len(r.prefix_random_std)
    assert r.prefix_accuracy[1] > r.prefix_random[1] and min(r.prefix_random_std) >= 0


def test_the_cross_fitted_check_ranks_on_one_half_and_retrains_on_the_other():
    from neurohook.ranking_check import retrained_check

    X, y, cols = planted(800, 300, seed=2)
    speakers = np.arange(800) // 8
    tr, te = np.arange(800) < 600, np.arange(800) >= 600
    check = retrained_check(X[tr], y[tr], X[te], y[te], l2=1e-2, percent=10, seed=0, groups=speakers[tr])
    assert check["top"].dtype == bool and check["top"].shape == (200,) and check["random"].shape == (200,)
    assert check["top"].mean() > 0.9 and check["random"].mean() < check["top"].mean() - 0.1  # 30 neurons: 20 planted vs ~2
    dead = np.zeros(300, bool)
    dead[cols] = True  # neurons marked constant never enter the sets: top is no better than random then
    blind = retrained_check(X[tr], y[tr], X[te], y[te], l2=1e-2, percent=10, seed=0, constant=dead)
    assert blind["top"].mean() < check["random"].mean() < check["top"].mean()


def test_a_ranking_no_better_than_random_is_reported_as_such():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    X = rng.standard_normal((600, 200)).astype(np.float32)
    X[:, :200] += (2 * y[:, None] - 1) * 0.25  # every neuron carries the same small share: no neuron is special
    feats = Features(X, [f"u{i}" for i in range(600)], [LayerSpan("a", 0, 200, "mean")])
    r = analyze(feats, y, seeds=(0,), percentages=(25,), ablation_percent=50).tasks["task"]
    assert r.ranking_verdict in ("not better than random", "better than random")
    lo, hi = r.top_minus_random.ci
    assert (r.ranking_verdict == "better than random") == (lo > 0)
    assert (r.check_verdict == "better than random") == (r.check_minus_random.ci[0] > 0)


def test_l2_is_chosen_by_three_speaker_folds_below_ten_thousand_rows_and_one_dev_part_above(monkeypatch):
    import neurohook.analysis_seed as analysis_seed
    from neurohook.probe_tuning import FOLD_ROWS, fold_count

    assert [fold_count("auto", n) for n in (10, FOLD_ROWS - 1, FOLD_ROWS, 10 * FOLD_ROWS)] == [3, 3, 1, 1]
    assert fold_count(5, 10) == 5
    for bad in (0, "3", 2.0, True):
        with pytest.raises(ValueError, match="dev_folds must be 'auto' or a positive integer"):
            fold_count(bad, 10)
    with pytest.raises(ValueError, match="dev_folds"):
        LinearProbe(dev_folds="some").fit(*planted(60, 30)[:2])
    seen = []
    real = analysis_seed.tuning_folds

    def spy(params, y, rows, *a):
        folds = real(params, y, rows, *a)
        seen.append((len(rows), len(folds)))
        return folds

    monkeypatch.setattr(analysis_seed, "tuning_folds", spy)
    X, y, _ = planted(300, 40, seed=3)
    feats = Features(X, [f"u{i}" for i in range(300)], [LayerSpan("a", 0, 40, "mean")])
    speakers = (np.arange(300) // 6).astype(str)
    tuned = analyze(feats, y, speakers=speakers, seeds=(0,), percentages=(25,)).tasks["task"]
    fixed = analyze(feats, y, speakers=speakers, seeds=(0,), percentages=(25,), l2=1e-3).tasks["task"]
    one = analyze(feats, y, speakers=speakers, seeds=(0,), percentages=(25,), dev_folds=1).tasks["task"]
    assert [k for _, k in seen] == [3, 1, 1] and seen[0][0] == tuned.n_train
    assert fixed.probe_l2 == [1e-3] and one.probe_l2[0] in LinearProbe().l2_grid
