"""Confidence intervals: the two-level bootstrap against the binomial interval and a coverage
simulation, and their place in the analysis results."""

from __future__ import annotations

import numpy as np

from neurohook.ablation import ablation_accuracy, ablation_outcomes
from neurohook.features import Features, LayerSpan
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.probe import LinearProbe
from neurohook import ranking
from neurohook.results import AnalysisResult


def test_one_seed_of_independent_utterances_gives_the_binomial_interval():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.7
    lo, hi = percentile_interval(replicate_means([correct], [None], seed=1)[:, 0])
    p = correct.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / len(correct))  # the normal approximation of the binomial
    assert lo < p < hi
    np.testing.assert_allclose([lo, hi], [p - half, p + half], atol=0.006)


def test_speakers_widen_the_interval_and_it_covers_the_truth():
    rng = np.random.default_rng(2)
    hits, widths = 0, []
    for r in range(120):
        values, groups = [], []
        for _ in range(3):  # three seeds, each with 30 test speakers of 20 utterances
            p_spk = np.clip(0.7 + rng.normal(0, 0.12, 30), 0, 1)
            g = np.repeat(np.arange(30), 20)
            values.append(rng.random(600) < p_spk[g])
            groups.append(g)
        reps = replicate_means(values, groups, seed=r)[:, 0]
        lo, hi = percentile_interval(reps)
        hits += lo <= 0.7 <= hi
        widths.append(hi - lo)
        if r == 0:  # ignoring the speakers would understate the uncertainty
            flat = percentile_interval(replicate_means(values, [None] * 3, seed=r)[:, 0])
            assert hi - lo > 1.3 * (flat[1] - flat[0])
    assert 0.88 <= hits / 120 <= 1.0  # ~95 % coverage, loosely


def test_analysis_numbers_carry_intervals_that_round_trip():
    import neurohook

    rng = np.random.default_rng(0)
    n, w = 600, 20
    speakers = np.arange(n) % 60
    y = speakers % 3
    X = rng.standard_normal((n, 2 * w)).astype(np.float32)
    X[:, :3] += 3.0 * np.eye(3)[y]
    feats = Features(X, [f"u{i}" for i in range(n)], [LayerSpan("a", 0, w, "mean"), LayerSpan("b", w, 2 * w, "mean")])
    task = neurohook.analyze(feats, y, speakers=speakers, seeds=(0, 1), epochs=20, lr=0.02).tasks["task"]
    for stat in (task.oracle, task.majority, task.control, task.selectivity, task.layer_accuracy["a"],
                 task.masked["top"], task.masked["random"]):
        lo, hi = stat.ci
        assert lo <= stat.mean <= hi and lo < hi
    assert task.layer_accuracy["a"].ci[0] > task.majority.ci[1]  # the informative layer, beyond chance
    again = AnalysisResult.from_dict(AnalysisResult({"task": task}, []).to_dict()).tasks["task"]
    assert again.oracle.ci == task.oracle.ci and again.layer_accuracy["b"].ci == task.layer_accuracy["b"].ci


def test_ablation_outcomes_are_the_kernels_accuracies_per_utterance():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 60)).astype(np.float32)
    y = (X[:, 0] + X[:, 5] > 0).astype(int)
    probe = LinearProbe(epochs=10, lr=0.05).fit(X[:300], y[:300])
    inputs = probe.kernel_inputs(X[300:], y[300:])
    order = ranking.neuron_ordering(probe.coef_).order
    acc = ablation_accuracy(inputs, order, 10, seed=4)
    per = ablation_outcomes(inputs, order, 10, seed=4)
    assert {k: float(v.mean()) for k, v in per.items()} == {k: acc[k] for k in ("top", "bottom", "random")}


def test_a_task_at_chance_is_gated_out_of_minimal_sets_and_overlaps():
    import neurohook

    rng = np.random.default_rng(5)
    n, w = 480, 16
    speakers = np.arange(n) % 48
    informative = speakers % 2
    noise = rng.integers(0, 2, 48)[speakers]  # a label per speaker that nothing in the features carries
    X = rng.standard_normal((n, 2 * w)).astype(np.float32)
    X[:, :4] += 2.5 * informative[:, None]
    feats = Features(X, [f"u{i}" for i in range(n)], [LayerSpan("a", 0, w, "mean"), LayerSpan("b", w, 2 * w, "mean")])
    labels = {"real": dict(zip(feats.ids, informative)), "noise": dict(zip(feats.ids, noise))}
    result = neurohook.analyze(feats, labels, speakers=speakers, seeds=(0, 1), epochs=15, lr=0.02)
    real, gated = result.tasks["real"], result.tasks["noise"]
    assert real.informative and real.minimal_percent is not None and real.minimal_neurons
    assert not gated.informative and gated.oracle.ci[0] <= gated.majority.mean
    assert gated.minimal_percent is None and gated.minimal_neurons == [] and gated.distribution == {}
    assert result.overlaps == []  # no overlap claim with a task at chance
    back = AnalysisResult.from_dict(result.to_dict()).tasks["noise"]
    assert back.informative is False and back.minimal_accuracy is None


def test_dead_neurons_are_counted_and_never_fill_the_bottom_set():
    import neurohook

    rng = np.random.default_rng(7)
    n, w = 400, 20
    speakers = np.arange(n) % 40
    y = speakers % 2
    X = rng.standard_normal((n, 2 * w)).astype(np.float32) + 1.5 * y[:, None]  # every live neuron carries y
    X[:, [0, 3, 5, 21, 22, 23, 24, 25]] = 0.0  # dead (e.g. ReLU units never active): 3 in layer a, 5 in b
    feats = Features(X, [f"u{i}" for i in range(n)], [LayerSpan("a", 0, w, "mean"), LayerSpan("b", w, 2 * w, "mean")])
    task = neurohook.analyze(feats, y, speakers=speakers, seeds=(0,), epochs=10, lr=0.02,
                             ablation_percent=20).tasks["task"]
    assert task.constant_neurons == {"a": 3, "b": 5}
    # the bottom 20 % of the live neurons still carry the label; 8 dead ones would have left the majority rate
    assert task.masked["bottom"].mean > task.majority.mean + 0.2
