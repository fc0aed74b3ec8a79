"""LinearProbe and batched probe training against independent references and properties."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from neurohook.probe import PAPER_SETTINGS, LinearProbe, ProbeSpec, fit_probes

ADAM = dict(solver="adam", l2=0.0)  # the minibatch solver, penalties fixed


def blobs(n=600, d=40, c=3, informative=5, seed=0, scale=2.0):
    """Classes separated along `informative` columns; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((n, d))
    centers = rng.standard_normal((c, informative)) * scale
    X[:, :informative] += centers[y]
    return X.astype(np.float32), y


def test_fit_predict_score_with_string_labels():
    X, y = blobs()
    names = np.array(["ar", "en", "zh"])[y]
    probe = LinearProbe().fit(X[:400], names[:400])
    assert probe.classes_.tolist() == ["ar", "en", "zh"]
    assert probe.coef_.shape == (3, 40) and probe.intercept_.shape == (3,)
    proba = probe.predict_proba(X[400:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probe.classes_[proba.argmax(1)], probe.predict(X[400:]))
    assert probe.score(X[400:], names[400:]) > 0.9
    assert probe.score(X[400:], np.full(200, "xx")) == 0.0  # unseen labels are errors


def test_lbfgs_reaches_scikit_learns_optimum_for_a_fixed_penalty():
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n=500, d=6, c=3, informative=3, scale=1.0, seed=3)
    l2 = 1e-3  # sklearn minimises 0.5 |W|^2 + C * sum(loss): the same optimum when C = 1 / (2 * l2 * N)
    ours = LinearProbe(l2=l2, tol=1e-7).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1 / (2 * l2 * len(X)), max_iter=10000, tol=1e-10).fit(Z, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Z), atol=2e-3)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-2)
    assert ours.tuning_ is None and ours.l2_ == l2


def test_adam_reaches_the_unregularised_optimum_when_run_long():
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n=500, d=6, c=3, informative=3, scale=1.0, seed=3)
    ours = LinearProbe(lr=5e-2, epochs=3000, batch_size=500, **ADAM).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1e6, max_iter=10000, tol=1e-10).fit(Z, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Z), atol=0.02)


def test_lbfgs_grid_and_blocks_batched_equal_each_probe_alone():
    X, y = blobs(n=300, d=30)
    specs = [ProbeSpec(a, a + 10, 0) for a in (0, 10, 20)] + [ProbeSpec(0, 30, 0), ProbeSpec(3, 13, 0)]
    together = fit_probes(X, y, specs, tol=1e-7)  # tuned: every block x every l2 in one L-BFGS pass
    for spec, probe in zip(specs, together):
        alone = LinearProbe(tol=1e-7).fit(X[:, spec.start : spec.end], y)
        assert probe.l2_ == alone.l2_ and probe.tuning_["l2_grid"] == alone.tuning_["l2_grid"]
        np.testing.assert_allclose(probe.tuning_["dev_accuracy"], alone.tuning_["dev_accuracy"], atol=1e-9)
        np.testing.assert_allclose(probe.predict_proba(X[:, spec.start : spec.end]),
                                   alone.predict_proba(X[:, spec.start : spec.end]), atol=1e-3)


def test_columns_train_as_the_gathered_columns_would():
    X, y = blobs(n=300, d=30)
    cols = np.random.default_rng(1).permutation(30)[:12]  # a ranking's top 12, in its order
    specs = [ProbeSpec(0, 4, 0), ProbeSpec(0, 12, 0)]
    for params in ({"tol": 1e-7}, {"l2": 1e-3, "tol": 1e-7}, {**ADAM, "epochs": 5}):
        picked = fit_probes(X, y, specs, columns=cols, **params)
        gathered = fit_probes(X[:, cols], y, specs, **params)
        for a, b, s in zip(picked, gathered, specs):
            assert a.l2_ == b.l2_
            np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-5)
            np.testing.assert_allclose(a.predict_proba(X[:, cols[: s.end]]), b.predict_proba(X[:, cols[: s.end]]),
                                       atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 13\) are outside X's 12 columns"):
        fit_probes(X, y, [ProbeSpec(0, 13, 0)], columns=cols)


def test_lbfgs_direction_equals_the_two_loop_recursion():
    import torch

    from neurohook.probe_lbfgs import _direction

    rng = np.random.default_rng(0)
    G, P, m = 3, 50, 6
    hist = []
    for i in range(m):
        s, y = rng.standard_normal((G, P)), rng.standard_normal((G, P))
        y = y + 3 * s  # positive curvature: s'y > 0
        rho = 1 / (s * y).sum(1)
        if i == 2:
            rho[1] = 0.0  # probe 1 took no update from this pair
        hist.append((s, y, rho))
    g, gamma = rng.standard_normal((G, P)), np.array([0.5, 1.0, 2.0])
    want = np.empty((G, P))
    for k in range(G):  # the textbook two-loop recursion (Nocedal & Wright, Algorithm 7.4), float64
        pairs = [(s[k], y[k], rho[k]) for s, y, rho in hist if rho[k] > 0]
        q, alphas = g[k].copy(), []
        for s, y, rho in reversed(pairs):
            alphas.append(rho * s @ q)
            q -= alphas[-1] * y
        r = gamma[k] * q
        for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
            r += (alpha - rho * y @ r) * s
        want[k] = -r
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    got = _direction(t(g), [(t(s), t(y), t(rho)) for s, y, rho in hist], t(gamma)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_normalisation_in_row_blocks_equals_numpy():
    from neurohook.zscore import CHUNK, column_stats, standardize

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((2 * CHUNK + 37, 9)) * 50 + 1e3).astype(np.float32)  # large means: float64 matters
    X[:, 4] = 7.0  # a constant column keeps scale 1
    rows, cols = rng.permutation(len(X))[:CHUNK + 5], np.array([8, 0, 4])
    ref = X.astype(np.float64)
    for r in (None, rows):
        sub = ref if r is None else ref[r]
        mean, scale = column_stats(X, r)
        np.testing.assert_allclose(mean, sub.mean(0), rtol=1e-12)
        np.testing.assert_allclose(scale, np.where(sub.std(0) == 0, 1.0, sub.std(0)), rtol=1e-9)
        Z = standardize(X, mean[cols], scale[cols], rows=r, cols=cols)
        assert Z.dtype == np.float32 and Z.flags.c_contiguous and Z.shape == (len(sub), 3)
        np.testing.assert_allclose(Z, (sub[:, cols] - mean[cols]) / scale[cols], atol=1e-5)


def test_a_warm_started_refit_starts_where_its_init_predicts_and_ends_at_the_same_optimum():
    from neurohook.probe_lbfgs import Block, _restart, lbfgs_probes

    X, y = blobs(n=400, d=12, c=3, seed=5)
    rows = np.arange(300)
    (part,) = lbfgs_probes(X, y, [Block(0, 12, 0.0, 1e-3)], rows, tol=1e-7)
    mean, scale = X.mean(0), X.std(0)
    v = _restart(part, part.classes, mean, scale)  # re-expressed for the statistics of all rows
    W, b = v[:36].reshape(3, 12), v[36:]
    before = (X - part.mean) / part.scale @ part.coef.T + part.intercept
    np.testing.assert_allclose((X - mean) / scale @ W.T + b, before, atol=1e-4)
    (cold,) = lbfgs_probes(X, y, [Block(0, 12, 0.0, 1e-3)], tol=1e-7)
    (warm,) = lbfgs_probes(X, y, [Block(0, 12, 0.0, 1e-3)], tol=1e-7, init=[part])
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-3)
    assert warm.epochs < cold.epochs  # the refit from the dev phase's weights needs fewer iterations


def test_choose_takes_the_best_accuracy_and_breaks_ties_by_loss():
    from neurohook.probe_tuning import choose

    assert choose([0.8, 0.9, 0.9], [0.1, 0.4, 0.3]) == 2
    assert choose([0.8, 0.9, 0.7], [0.1, 0.4, 0.3]) == 1


def test_the_default_probe_chooses_l2_on_dev_rows_only():
    X, y = blobs(n=400, d=20)
    speakers = np.arange(400) // 10
    probe = LinearProbe().fit(X, y, groups=speakers)
    t = probe.tuning_
    assert t["l2_grid"] == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0] and probe.l2_ in t["l2_grid"]
    chosen = t["l2_grid"].index(probe.l2_)
    best = [i for i, a in enumerate(t["dev_accuracy"]) if a == max(t["dev_accuracy"])]
    assert chosen in best and t["dev_loss"][chosen] == min(t["dev_loss"][i] for i in best)
    # the choice is the one made by hand from the dev parts of the same 3 folds: every row predicted once
    from neurohook.data.splits import train_dev_folds

    folds = train_dev_folds(y, 3, 0.25, 0, speakers)
    assert len(folds) == 3 and sorted(np.concatenate([d for _, d in folds]).tolist()) == list(range(400))
    right = np.zeros(len(t["l2_grid"]))
    for fit, dev in folds:
        assert not set(speakers[fit]) & set(speakers[dev])
        right += [(LinearProbe(l2=v).fit(X[fit], y[fit]).predict(X[dev]) == y[dev]).sum() for v in t["l2_grid"]]
    np.testing.assert_allclose(right / 400, t["dev_accuracy"], atol=0.011)  # up to 4 of 400 rows (float order)
    assert t["folds"] == 3
    one = LinearProbe(dev_folds=1).fit(X, y, groups=speakers).tuning_
    assert one["folds"] == 1
    fit, dev = train_dev_folds(y, 1, 0.25, 0, speakers)[0]
    assert len(dev) == round(0.25 * 40) * 10  # one dev part of a quarter of the speakers
    accs = [LinearProbe(l2=v).fit(X[fit], y[fit]).score(X[dev], y[dev]) for v in one["l2_grid"]]
    np.testing.assert_allclose(accs, one["dev_accuracy"], atol=0.021)  # up to 2 of 100 dev rows (float order)


def test_paper_settings_are_the_papers_adam_probe():
    X, y = blobs(n=300)
    probe = LinearProbe(**PAPER_SETTINGS).fit(X, y)
    assert (probe.solver, probe.l1, probe.l2_, probe.epochs, probe.n_epochs_, probe.tuning_) == ("adam", 1e-5, 1e-5, 20, 20, None)
    with pytest.raises(ValueError, match="fixed penalties"):
        LinearProbe(solver="adam").fit(X, y)


def test_batched_training_equals_training_each_probe_alone():
    X, y = blobs(n=300, d=30)
    layers = [ProbeSpec(a, a + 10, seed) for seed in (0, 1, 2) for a in (0, 10, 20)]  # trained in one bmm
    specs = [ProbeSpec(0, 30, 2), *layers, ProbeSpec(0, 30, 0), ProbeSpec(0, 30, 1),  # ALL: fused with layers
             ProbeSpec(0, 10, 7), ProbeSpec(5, 30, 7), ProbeSpec(3, 13, 7), ProbeSpec(3, 13, 7)]
    params = dict(solver="adam", l1=1e-4, l2=1e-3, epochs=5, batch_size=64)
    together = fit_probes(X, y, specs, **params)
    for spec, probe in zip(specs, together):
        alone = LinearProbe(seed=spec.seed, **params).fit(X[:, spec.start : spec.end], y)
        np.testing.assert_allclose(probe.coef_, alone.coef_, rtol=0, atol=1e-6)
        np.testing.assert_allclose(probe.intercept_, alone.intercept_, rtol=0, atol=1e-6)


def test_seeded_and_deterministic():
    X, y = blobs(n=300)
    a, b = LinearProbe(seed=4, **ADAM).fit(X, y), LinearProbe(seed=4, **ADAM).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = LinearProbe(seed=5, **ADAM).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)


def test_normalisation_makes_the_probe_blind_to_feature_scale():
    X, y = blobs(n=300)
    scaled = X * np.logspace(-3, 3, X.shape[1], dtype=np.float32)
    a, b = LinearProbe().fit(X, y), LinearProbe().fit(scaled, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-3)
    np.testing.assert_array_equal(a.predict(X), b.predict(scaled))


def test_l1_penalty_shrinks_noise_weights():
    X, y = blobs(n=600, d=60, informative=4)
    sparse = LinearProbe(solver="adam", l1=1e-2, l2=0.0, lr=1e-2, epochs=40).fit(X, y)
    dense = LinearProbe(lr=1e-2, epochs=40, **ADAM).fit(X, y)
    mass = np.abs(sparse.coef_).sum(axis=0)
    assert mass[:4].min() > 5 * np.median(mass[4:])
    noise_share = [np.abs(p.coef_[:, 4:]).sum() / np.abs(p.coef_).sum() for p in (sparse, dense)]
    assert noise_share[0] < 0.5 * noise_share[1]


def test_early_stopping_keeps_the_best_epoch(caplog):
    X, y = blobs(n=400)
    with caplog.at_level(logging.INFO, logger="neurohook.probe_batch"):
        probe = LinearProbe(early_stopping=True, patience=2, epochs=200, lr=5e-2, **ADAM).fit(X, y)
    assert probe.n_epochs_ < 200
    assert "early stopping" in caplog.text
    assert probe.score(X, y) > 0.8


def test_batched_early_stopping_keeps_each_probes_own_best_epoch():
    # With patience >= epochs nobody stops early, so each batched probe must end on the epoch that
    # is best on its own seed's validation rows, exactly as when trained alone.
    X, y = blobs(n=300, d=30, scale=0.7)
    specs = [ProbeSpec(a, a + 10, seed) for seed in (0, 1) for a in (0, 10, 20)]
    specs += [ProbeSpec(0, 30, 0), ProbeSpec(0, 30, 1), ProbeSpec(4, 9, 1)]
    params = dict(early_stopping=True, patience=8, epochs=8, lr=5e-2, batch_size=32, **ADAM)
    together = fit_probes(X, y, specs, **params)
    for spec, probe in zip(specs, together):
        alone = LinearProbe(seed=spec.seed, **params).fit(X[:, spec.start : spec.end], y)
        np.testing.assert_allclose(probe.coef_, alone.coef_, rtol=0, atol=1e-5)


def test_bad_input_is_rejected_clearly():
    X, y = blobs(n=50)
    with pytest.raises(ValueError, match="at least two classes"):
        LinearProbe().fit(X, np.zeros(50))
    with pytest.raises(ValueError, match="y has 49 labels but X has 50 rows"):
        LinearProbe().fit(X, y[:49])
    Xn = X.copy()
    Xn[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf .* row 7, column 3"):
        LinearProbe().fit(Xn, y)
    with pytest.raises(ValueError, match="empty"):
        LinearProbe().fit(X[:0], y[:0])
    with pytest.raises(NotFittedError, match="not fitted"):  # scikit-learn's check_is_fitted
        LinearProbe().predict(X)
    probe = LinearProbe(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 10 columns but the probe was trained on 40"):
        probe.predict(X[:, :10])
    with pytest.raises(ValueError, match="outside X's 40 columns"):
        fit_probes(X, y, [ProbeSpec(30, 41)])


def test_the_probe_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 12)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 3] > 0, "a", "b")
    probe = LinearProbe(l2=1e-4, epochs=100, lr=0.05)
    copy = clone(probe)
    assert copy is not probe and copy.get_params() == probe.get_params() and not hasattr(copy, "coef_")
    scores = cross_val_score(probe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    pipe = make_pipeline(StandardScaler(), LinearProbe(epochs=100, lr=0.05)).fit(X[:160], y[:160])
    assert pipe.score(X[160:], y[160:]) > 0.85
    search = GridSearchCV(LinearProbe(epochs=10, lr=0.01), {"l1": [0.0, 1e-3]}, cv=2).fit(X, y)
    assert search.best_params_["l1"] in (0.0, 1e-3)
    # the same data with neurohook's own normalisation and with a scaler in front: the same probe
    own = LinearProbe(epochs=100, lr=0.05).fit(X[:160], y[:160])
    np.testing.assert_allclose(pipe[-1].coef_, own.coef_, rtol=1e-4, atol=5e-5)  # L-BFGS's tol 1e-5 on the gradient


def test_predict_rows_equals_predict_on_the_copied_rows(monkeypatch):
    import neurohook.probe as probe_module
    from neurohook.probe import predict_rows

    X, y = blobs(n=500, d=20, c=3, seed=8)
    rows = np.random.default_rng(0).permutation(500)[:333]
    monkeypatch.setattr(probe_module, "PREDICT_ROWS", 64)  # several blocks
    for cols in (None, slice(4, 17), np.array([19, 0, 7, 3])):
        sub = X[:, cols] if cols is not None else X
        probe = LinearProbe(l2=1e-2).fit(sub[:300], y[:300])
        np.testing.assert_array_equal(predict_rows(probe, X, rows, cols), probe.predict(sub[rows]))
