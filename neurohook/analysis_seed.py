"""One seed of one task of the study (:mod:`neurohook.analysis`): its probes, baselines, ranking,
ablation and prefix curves (:func:`one_seed`), then, for an informative task, its minimal neuron set
(:func:`minimal_set`).

Choices are made on the training rows alone: each probe's l2 by speaker-disjoint folds of them (the
accuracy over every fold's dev part, which also chooses the best layer), the ranking probe's l2 (the
one whose top ``ablation_percent`` of neurons alone scores best on dev) and the minimal set's size on
the first fold's dev part.
Test rows are only scored; every test accuracy is also kept per utterance (``outcomes``), which the
intervals resample.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from neurohook import ranking
from neurohook.ablation import (DevSearch, ablation_accuracy, ablation_masks, ablation_outcomes, masked_summary,
                                minimal_neuron_set)
from neurohook.control import control_labels, majority_accuracy, majority_class, selectivity
from neurohook.data.splits import seed_streams, train_test_split
from neurohook.probe import PREDICT_ROWS, LinearProbe, ProbeSpec, fit_probes, predict_rows
from neurohook.probe_tuning import Tuning, dev_phase, refit, tuning_folds
from neurohook.ranking_check import retrained_check
from neurohook.task_data import TaskData
from neurohook.zscore import CHUNK, take_rows

__all__: list[str] = []

logger = logging.getLogger("neurohook.analysis")

RANDOM_DRAWS = 10  # random sets per seed behind every random-k accuracy


def _probe(state: Any, params: dict[str, Any], tuning: Any = None, l2: float | None = None) -> LinearProbe:
    """A fitted LinearProbe from a trained state (and its dev phase)."""
    return LinearProbe(**params)._set_state(state, tuning, l2)


def _kernel_curves(probe: LinearProbe, X: Any, rows: np.ndarray, y: np.ndarray, live: np.ndarray, percent: float,
                   seed: int, orders: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The compiled kernels on rows ``rows`` of X (labels y), in row blocks (no normalised copy of them
    all): masked accuracies (2 + RANDOM_DRAWS,) of :func:`ablation_masks`, their per-row outcomes, and the
    prefix accuracy curve (len(orders), D) of each order. Block results are weighted by their rows."""
    masks = ablation_masks(live, percent, seed, X.shape[1], RANDOM_DRAWS)
    masked, prefix, parts = 0.0, 0.0, []
    for a in range(0, len(rows), PREDICT_ROWS * 4):
        block = slice(a, a + PREDICT_ROWS * 4)
        inputs = probe.kernel_inputs(X, y[block], rows[block])
        n = len(inputs.y)
        masked = masked + n * ranking.masked_accuracy(*inputs, masks)
        prefix = prefix + n * np.array([ranking.prefix_accuracy(*inputs, o) for o in orders])
        parts.append(ablation_outcomes(inputs, live, percent, seed, RANDOM_DRAWS))
    right = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return masked / len(rows), right, prefix / len(rows)


def _ranking_choice(tuning: Any, X: Any, dev: np.ndarray, y_dev: np.ndarray, constant: np.ndarray, percent: float,
                    seed: int, steps: Sequence[float] | None) -> tuple[int, np.ndarray]:
    """(grid index, dev-phase order) of the ranking probe: the l2 whose top ``percent`` of neurons,
    alone, scores best on the dev rows ``dev`` of X (ties: the stronger l2). With one grid value, that one."""
    orders = [ranking.neuron_ordering(state.coef, steps).order for state in tuning.states]
    if len(orders) == 1:
        return 0, orders[0]
    acc = [ablation_accuracy(LinearProbe()._set_state(state, l2=l2).kernel_inputs(X, y_dev, dev), o[~constant[o]],
                             percent, seed)["top"] for state, l2, o in zip(tuning.states, tuning.grid, orders)]
    best = max(range(len(acc)), key=lambda g: (acc[g], tuning.grid[g]))
    return best, orders[best]


def _dev_accuracy(tuning: Tuning, X: Any, y: np.ndarray, dev: np.ndarray) -> float:
    """Accuracy on rows ``dev`` of the first fold of the chosen l2's probe (trained on that fold's fit rows):
    what the minimal set, searched on the same dev rows, is held against."""
    probe = LinearProbe()._set_state(tuning.start, l2=tuning.l2)
    return float(np.mean(predict_rows(probe, X, dev) == y[dev]))


def one_seed(d: TaskData, seed: int, task: str, test_size: float, ablation_percent: float,
              steps: Sequence[float] | None, prefix_k: np.ndarray, probe_params: dict[str, Any]) -> dict[str, Any]:
    """One seed's measurements: probes per layer and on ALL, baselines, ranking, ablation, prefix curve.

    Choices are made on the training rows: each probe's l2 over the dev folds, the ranking probe's l2,
    (later) the best layer and the minimal set's size. Test rows are only scored.
    """
    streams = seed_streams(seed)  # independent draws: split, control labels, masks, minimal sets, dev
    tr, te = d.fixed if d.fixed is not None else train_test_split(d.y, test_size, streams.split, d.speakers)
    D = d.X.shape[1]
    starts = np.concatenate([[0], np.cumsum(d.sizes)])
    spans = [(int(starts[i]), int(starts[i + 1])) for i in range(len(d.names))] + [(0, D)]
    # the training and test rows are indexed in d.X, never copied (test predictions run in row blocks)
    y_tr, y_te = d.y[tr], d.y[te]
    template = LinearProbe(**probe_params)
    folds = tuning_folds(template, d.y, tr, d.speakers, streams.dev)  # rows of d.X
    tunings = dev_phase(d.X, d.y, spans, folds, template, seed)  # each probe's l2, over the folds
    fit, dev = folds[0]  # rows of d.X: the ranking l2, best layers and minimal set are chosen on its dev part
    g_rank, dev_order = _ranking_choice(tunings[-1], d.X, dev, d.y[dev], d.constant, ablation_percent, streams.masks,
                                        steps)
    rank_l2 = tunings[-1].grid[g_rank]
    refits = [(a, b, t.l2) for (a, b), t in zip(spans, tunings)]
    separate = rank_l2 != tunings[-1].l2
    init = [t.start for t in tunings] + ([tunings[-1].states[g_rank]] if separate else [])
    states = refit(d.X, d.y, refits + ([(0, D, rank_l2)] if separate else []), template, seed, init, rows=tr)
    probes = [_probe(st, probe_params, t) for st, t in zip(states, tunings)]
    probe_all = probes[-1]
    rank_probe = _probe(states[-1], probe_params, l2=rank_l2) if separate else probe_all
    right = [predict_rows(p, d.X, te, slice(a, b)) == y_te for p, (a, b) in zip(probes, spans)]
    layer_acc = [float(r.mean()) for r in right]
    oracle = layer_acc[-1]
    out: dict[str, Any] = {"n_train": len(tr), "n_test": len(te), "layers": layer_acc[:-1], "oracle": oracle,
                           "majority": majority_accuracy(y_tr, y_te), "probe_l2": tunings[-1].l2, "ranking_l2": rank_l2,
                           "layers_dev": [t.dev_accuracy[t.chosen] for t in tunings[:-1]],
                           "oracle_dev": _dev_accuracy(tunings[-1], d.X, d.y, dev), "dev_rows": (fit, dev),
                           "dev_order": dev_order}
    # per test utterance, 1 where right: what the intervals resample (columns named in `outcomes`)
    outcomes = {"oracle": right[-1], "majority": y_te == majority_class(y_tr),
                **{f"layer:{n}": r for n, r in zip(d.names, right)}}
    ctrl_train, ctrl_test = control_labels(y_tr, len(te), streams.control)
    ctrl_y = np.empty(len(d.y), dtype=ctrl_train.dtype)
    ctrl_y[tr] = ctrl_train  # per row of d.X; only the training rows are read
    # the control probe has the ALL probe's l2 (Hewitt & Liang: selectivity compares one probe, with the same
    # hyper-parameters, on the task and on control labels; dev accuracy cannot choose an l2 for random labels)
    (ctrl_probe,) = fit_probes(d.X, ctrl_y, [ProbeSpec(0, D, seed)], groups=d.speakers, rows=tr,
                               **{**probe_params, "l2": tunings[-1].l2})
    outcomes["control"] = predict_rows(ctrl_probe, d.X, te) == ctrl_test
    out["control"] = float(outcomes["control"].mean())
    out["selectivity"] = selectivity(oracle, out["control"])
    if d.X_rinit is not None:
        (rprobe,) = fit_probes(d.X_rinit, d.y, [ProbeSpec(0, d.X_rinit.shape[1], seed)], groups=d.speakers, rows=tr,
                               **probe_params)
        outcomes["rinit"] = np.concatenate([rprobe.predict(take_rows(d.X_rinit, te[a : a + CHUNK])) == y_te[a : a + CHUNK]
                                            for a in range(0, len(te), CHUNK)])  # in blocks: no copy of its test rows
        out["rinit"] = float(outcomes["rinit"].mean())
    order = ranking.neuron_ordering(rank_probe.coef_, steps).order
    live = order[~d.constant[order]]  # constant neurons stay out of the top / bottom / random draws
    check = retrained_check(d.X, d.y, d.X, y_te, test_rows=te, l2=rank_l2, retrain_l2=tunings[-1].l2, percent=ablation_percent,
                            seed=streams.check, groups=d.speakers, constant=d.constant, steps=steps, rows=tr)
    out["check"] = {k: float(v.mean()) for k, v in check.items()}
    outcomes.update({f"check:{k}": v for k, v in check.items()})
    rng = np.random.default_rng(streams.masks)
    shuffles = [np.concatenate([rng.permutation(live), order[d.constant[order]]]) for _ in range(RANDOM_DRAWS)]
    masked, right, prefix = _kernel_curves(rank_probe, d.X, te, y_te, live, ablation_percent, streams.masks,
                                           [order, *shuffles])
    out["masked"] = masked_summary(masked)
    outcomes.update({f"masked:{how}": c for how, c in right.items()})
    out["outcomes"] = outcomes
    out["groups"] = None if d.speakers is None else d.speakers[te]
    out["prefix"] = prefix[0][prefix_k - 1]
    randoms = prefix[1:, prefix_k - 1]  # random orders of the live neurons
    out["prefix_random"], out["prefix_random_std"] = randoms.mean(axis=0), randoms.std(axis=0)
    out.update(split=(tr, te), order=order)
    logger.info("%s seed %d: ALL %.3f (l2 %g; ranking l2 %g), best layer %.3f", task, seed, oracle, tunings[-1].l2,
                rank_l2, max(layer_acc[:-1]))
    return out


def minimal_set(d: TaskData, p: dict[str, Any], seed: int, task: str, percentages: Sequence[float], delta: float,
             probe_params: dict[str, Any]) -> dict[str, Any]:
    """One seed's minimal neuron set, its size chosen on dev (probes retrained on the top / random N%
    with the ALL probe's l2), reported on test; and its layer distribution."""
    tr, te = p["split"]
    fit, dev = p["dev_rows"]  # rows of d.X, as tr: indexed, never copied
    search = DevSearch(d.X, d.y, d.X, d.y[dev], p["dev_order"], p["oracle_dev"], fit_rows=fit, dev_rows=dev)
    params = {**probe_params, "l2": p["probe_l2"]}
    minimal = minimal_neuron_set(d.X, d.y, d.X, d.y[te], p["order"], p["oracle"], percentages, delta, seed,
                                 draw_seed=seed_streams(seed).minimal, dev=search, train_rows=tr, test_rows=te, **params)
    logger.info("%s seed %d: minimal %g%% (chosen on dev) -> %.3f on test", task, seed, minimal.percent, minimal.accuracy)
    return {"minimal": minimal, "distribution": ranking.layer_distribution(np.asarray(minimal.neurons), d.sizes).counts}
