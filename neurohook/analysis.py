"""The paper's layer-wise and neuron-level study of one model, in one call: :func:`analyze`.

For each task (a label per utterance) and each seed: a train/test split (stratified, or
speaker-disjoint), and a dev part of the training rows (speaker-disjoint too) on which every choice
is made: each probe's l2 (:mod:`neurohook.probe_tuning`), the ranking probe's l2 (the one whose top
``ablation_percent`` of neurons alone scores best on dev), the best and redundant layers, the minimal
neuron set's size. Then, on test only: one probe per layer and one on ALL layers concatenated, the
majority, control-task (selectivity) and optional R.INIT baselines; masked top / bottom / random
accuracies of the ranking probe (random: the mean of 10 draws) and the verdict on top vs random; the
same verdict from probes that did not make the ranking (:mod:`neurohook.ranking_check`: rank on one
half of the training rows, retrain on the other on the top / random neurons only); the prefix curve
beside random orders' curves; the minimal neuron set's accuracy with its random counterpart; its
distribution over layers. Then means and standard deviations over seeds, and the overlap of the tasks' minimal sets
(polysemous neurons). Results are dataclasses that serialise to JSON and back.

Accuracies are fractions in [0, 1]; ``delta`` tolerances are fractions too (0.01 = one point). Every
accuracy measured on the test utterances (majority, ALL, control, R.INIT, each layer, the masked
probes, the cross-fitted check, the retrained curves and the minimal set) and the differences the
verdicts read carry a 95 % interval (``Stat.ci``): a two-level bootstrap over the
seeds and, within each, the test speakers (utterances without speakers; :mod:`neurohook.intervals`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook import distributed, ranking
from neurohook.features import Features
from neurohook.errors import DataError
from neurohook.ablation import DEFAULT_PERCENTAGES, DevSearch, ablation_accuracy, ablation_outcomes, minimal_neuron_set
from neurohook.control import control_labels, majority_accuracy, majority_class, selectivity
from neurohook.data.splits import seed_streams, train_dev_split, train_test_split
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.probe import PAPER_SETTINGS, LinearProbe, ProbeSpec, fit_probes
from neurohook.probe_tuning import dev_phase, refit
from neurohook.ranking_check import retrained_check
from neurohook.task_data import TaskData, task_data
from neurohook.zscore import CHUNK, take_rows
from neurohook.results import AnalysisResult, Overlap, Stat, TaskResult

__all__ = [
    "ALL",
    "analyze",
    "analyze_task",
    "train_test_split",
    "overlap",
]

logger = logging.getLogger(__name__)

ALL = "ALL"


def overlap(name_a: str, neurons_a: Sequence[int], name_b: str, neurons_b: Sequence[int]) -> Overlap:
    """Shared count, share of each set, and Jaccard index of two neuron sets."""
    a, b = set(map(int, neurons_a)), set(map(int, neurons_b))
    shared = len(a & b)
    union = len(a | b)
    return Overlap(name_a, name_b, shared, shared / len(a) if a else 0.0, shared / len(b) if b else 0.0,
                   shared / union if union else 0.0)


RANDOM_DRAWS = 10  # random sets per seed behind every random-k accuracy


def _probe(state: Any, params: dict[str, Any], tuning: Any = None, l2: float | None = None) -> LinearProbe:
    """A fitted LinearProbe from a trained state (and its dev phase)."""
    return LinearProbe(**params)._set_state(state, tuning, l2)


def _ranking_choice(tuning: Any, X_dev: np.ndarray, y_dev: np.ndarray, constant: np.ndarray, percent: float,
                    seed: int, steps: Sequence[float] | None) -> tuple[int, np.ndarray]:
    """(grid index, dev-phase order) of the ranking probe: the l2 whose top ``percent`` of neurons,
    alone, scores best on dev (ties: the stronger l2). With one grid value, that one."""
    orders = [ranking.neuron_ordering(state.coef, steps).order for state in tuning.states]
    if len(orders) == 1:
        return 0, orders[0]
    acc = [ablation_accuracy(LinearProbe()._set_state(state, l2=l2).kernel_inputs(X_dev, y_dev), o[~constant[o]],
                             percent, seed)["top"] for state, l2, o in zip(tuning.states, tuning.grid, orders)]
    best = max(range(len(acc)), key=lambda g: (acc[g], tuning.grid[g]))
    return best, orders[best]


def _one_seed(d: TaskData, seed: int, task: str, test_size: float, ablation_percent: float,
              steps: Sequence[float] | None, prefix_k: np.ndarray, probe_params: dict[str, Any]) -> dict[str, Any]:
    """One seed's measurements: probes per layer and on ALL, baselines, ranking, ablation, prefix curve.

    Choices are made on a dev part of the training rows: each probe's l2, the ranking probe's l2,
    (later) the best layer and the minimal set's size. Test rows are only scored.
    """
    streams = seed_streams(seed)  # independent draws: split, control labels, masks, minimal sets, dev
    tr, te = d.fixed if d.fixed is not None else train_test_split(d.y, test_size, streams.split, d.speakers)
    D = d.X.shape[1]
    starts = np.concatenate([[0], np.cumsum(d.sizes)])
    spans = [(int(starts[i]), int(starts[i + 1])) for i in range(len(d.names))] + [(0, D)]
    # the training rows are indexed in d.X, never copied; the test rows are copied once (scored many times)
    X_te, y_tr, y_te = take_rows(d.X, te), d.y[tr], d.y[te]
    spk_tr = None if d.speakers is None else d.speakers[tr]
    template = LinearProbe(**probe_params)
    fit, dev = (tr[i] for i in train_dev_split(y_tr, template.dev_size, streams.dev, spk_tr))  # rows of d.X
    tunings = dev_phase(d.X, d.y, spans, fit, dev, template, seed)
    g_rank, dev_order = _ranking_choice(tunings[-1], take_rows(d.X, dev), d.y[dev], d.constant, ablation_percent, streams.masks,
                                        steps)
    rank_l2 = tunings[-1].grid[g_rank]
    refits = [(a, b, t.l2) for (a, b), t in zip(spans, tunings)]
    separate = rank_l2 != tunings[-1].l2
    init = [t.start for t in tunings] + ([tunings[-1].states[g_rank]] if separate else [])
    states = refit(d.X, d.y, refits + ([(0, D, rank_l2)] if separate else []), template, seed, init, rows=tr)
    probes = [_probe(st, probe_params, t) for st, t in zip(states, tunings)]
    probe_all = probes[-1]
    rank_probe = _probe(states[-1], probe_params, l2=rank_l2) if separate else probe_all
    layer_acc = [p.score(X_te[:, a:b], y_te) for p, (a, b) in zip(probes, spans)]
    oracle = layer_acc[-1]
    out: dict[str, Any] = {"n_train": len(tr), "n_test": len(te), "layers": layer_acc[:-1], "oracle": oracle,
                           "majority": majority_accuracy(y_tr, y_te), "probe_l2": tunings[-1].l2, "ranking_l2": rank_l2,
                           "layers_dev": [t.dev_accuracy[t.chosen] for t in tunings[:-1]],
                           "oracle_dev": tunings[-1].dev_accuracy[tunings[-1].chosen], "dev_rows": (fit, dev),
                           "dev_order": dev_order}
    # per test utterance, 1 where right: what the intervals resample (columns named in `outcomes`)
    outcomes = {"oracle": probe_all.predict(X_te) == y_te, "majority": y_te == majority_class(y_tr),
                **{f"layer:{n}": p.predict(X_te[:, a:b]) == y_te for n, p, (a, b) in zip(d.names, probes, spans)}}
    ctrl_train, ctrl_test = control_labels(y_tr, len(te), streams.control)
    ctrl_y = np.empty(len(d.y), dtype=ctrl_train.dtype)
    ctrl_y[tr] = ctrl_train  # per row of d.X; only the training rows are read
    (ctrl_probe,) = fit_probes(d.X, ctrl_y, [ProbeSpec(0, D, seed)], groups=d.speakers, rows=tr, **probe_params)
    outcomes["control"] = ctrl_probe.predict(X_te) == ctrl_test
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
    check = retrained_check(d.X, d.y, X_te, y_te, l2=rank_l2, retrain_l2=tunings[-1].l2, percent=ablation_percent,
                            seed=streams.check, groups=d.speakers, constant=d.constant, steps=steps, rows=tr)
    out["check"] = {k: float(v.mean()) for k, v in check.items()}
    outcomes.update({f"check:{k}": v for k, v in check.items()})
    inputs = rank_probe.kernel_inputs(X_te, y_te)  # the test features normalised once for both kernels
    del X_te  # the normalised copy serves the rest
    out["masked"] = ablation_accuracy(inputs, live, ablation_percent, streams.masks, RANDOM_DRAWS)
    outcomes.update({f"masked:{how}": c for how, c in ablation_outcomes(inputs, live, ablation_percent,
                                                                           streams.masks, RANDOM_DRAWS).items()})
    out["outcomes"] = outcomes
    out["groups"] = None if d.speakers is None else d.speakers[te]
    out["prefix"] = ranking.prefix_accuracy(*inputs, order)[prefix_k - 1]
    rng = np.random.default_rng(streams.masks)
    randoms = np.array([ranking.prefix_accuracy(*inputs, np.concatenate([rng.permutation(live), order[d.constant[order]]]))
                        [prefix_k - 1] for _ in range(RANDOM_DRAWS)])  # random orders of the live neurons
    out["prefix_random"], out["prefix_random_std"] = randoms.mean(axis=0), randoms.std(axis=0)
    out.update(split=(tr, te), order=order)
    logger.info("%s seed %d: ALL %.3f (l2 %g; ranking l2 %g), best layer %.3f", task, seed, oracle, tunings[-1].l2,
                rank_l2, max(layer_acc[:-1]))
    return out


def _minimal(d: TaskData, p: dict[str, Any], seed: int, task: str, percentages: Sequence[float], delta: float,
             probe_params: dict[str, Any]) -> dict[str, Any]:
    """One seed's minimal neuron set, its size chosen on dev (probes retrained on the top / random N%
    with the ALL probe's l2), reported on test; and its layer distribution."""
    tr, te = p["split"]
    fit, dev = p["dev_rows"]  # rows of d.X, as tr: indexed, never copied
    search = DevSearch(d.X, d.y, take_rows(d.X, dev), d.y[dev], p["dev_order"], p["oracle_dev"], fit_rows=fit)
    params = {**probe_params, "l2": p["probe_l2"]}
    minimal = minimal_neuron_set(d.X, d.y, take_rows(d.X, te), d.y[te], p["order"], p["oracle"], percentages, delta,
                                 seed, draw_seed=seed_streams(seed).minimal, dev=search, train_rows=tr, **params)
    logger.info("%s seed %d: minimal %g%% (chosen on dev) -> %.3f on test", task, seed, minimal.percent, minimal.accuracy)
    return {"minimal": minimal, "distribution": ranking.layer_distribution(np.asarray(minimal.neurons), d.sizes).counts}


def _intervals(per: list[dict[str, Any]], seed: int) -> dict[str, tuple[float, float]]:
    """95 % intervals of every per-utterance accuracy, and of selectivity, by the two-level bootstrap."""
    names = list(per[0]["outcomes"])
    reps = replicate_means([np.stack([p["outcomes"][n] for n in names], axis=1) for p in per],
                           [p["groups"] for p in per], seed=seed)
    ci = {n: percentile_interval(reps[:, j]) for j, n in enumerate(names)}
    ci["selectivity"] = percentile_interval(reps[:, names.index("oracle")] - reps[:, names.index("control")])
    for key, a, b in (("top_minus_random", "masked:top", "masked:random"), ("check_minus_random", "check:top", "check:random")):
        ci[key] = percentile_interval(reps[:, names.index(a)] - reps[:, names.index(b)])
    return ci


def ranking_verdict(ci: tuple[float, float]) -> str:
    """What the interval of (masked top - masked random) accuracy supports."""
    if ci[0] > 0:
        return "better than random"
    return "worse than random" if ci[1] < 0 else "not better than random"


def _task_result(d: TaskData, task: str, seeds: Sequence[int], per: list[dict[str, Any]],
                 ci: dict[str, tuple[float, float]], informative: bool, layer_delta: float, ablation_percent: float,
                 prefix_k: np.ndarray) -> TaskResult:
    """Means, spreads and intervals over seeds of every measurement, as a TaskResult."""
    layer_acc = np.array([p["layers"] for p in per])  # seeds x layers
    layer_dev = np.array([p["layers_dev"] for p in per])
    mean_layer = layer_dev.mean(axis=0)  # the best layer is chosen on dev
    best = int(np.argmax(mean_layer))
    names = d.names
    result = TaskResult(
        task=task, classes=[str(c) for c in np.unique(d.y)], n_train=int(per[-1]["n_train"]),
        n_test=int(per[-1]["n_test"]), layers=names, layer_sizes=[int(s) for s in d.sizes], seeds=list(seeds),
        majority=Stat.of([p["majority"] for p in per], ci["majority"]),
        oracle=Stat.of([p["oracle"] for p in per], ci["oracle"]),
        control=Stat.of([p["control"] for p in per], ci["control"]),
        selectivity=Stat.of([p["selectivity"] for p in per], ci["selectivity"]),
        rinit=Stat.of([p["rinit"] for p in per], ci["rinit"]) if d.X_rinit is not None else None,
        layer_accuracy={n: Stat.of(layer_acc[:, i], ci[f"layer:{n}"]) for i, n in enumerate(names)},
        best_layer=names[best],
        redundant_layers=[n for i, n in enumerate(names) if mean_layer[i] >= mean_layer[best] - layer_delta],
        ablation_percent=float(ablation_percent),
        masked={k: Stat.of([p["masked"][k] for p in per], ci[f"masked:{k}"]) for k in ("top", "bottom", "random")},
        percentages=[], retrained_top={}, retrained_random={}, minimal_percent=None, minimal_accuracy=None,
        minimal_random_accuracy=None, minimal_reached=[], rest_redundant=[], information_redundant=[],
        distribution={}, prefix_steps=prefix_k.tolist(),
        constant_neurons={n: int(c.sum()) for n, c in zip(names, np.split(d.constant, np.cumsum(d.sizes)[:-1]))},
        prefix_accuracy=np.mean([p["prefix"] for p in per], axis=0).tolist(), informative=informative,
        layer_dev_accuracy={n: Stat.of(layer_dev[:, i]) for i, n in enumerate(names)},
        probe_l2=[float(p["probe_l2"]) for p in per], ranking_l2=[float(p["ranking_l2"]) for p in per],
        top_minus_random=Stat.of([p["masked"]["top"] - p["masked"]["random"] for p in per], ci["top_minus_random"]),
        ranking_verdict=ranking_verdict(ci["top_minus_random"]),
        retrained_check={k: Stat.of([p["check"][k] for p in per], ci[f"check:{k}"]) for k in ("top", "random")},
        check_minus_random=Stat.of([p["check"]["top"] - p["check"]["random"] for p in per], ci["check_minus_random"]),
        check_verdict=ranking_verdict(ci["check_minus_random"]),
        prefix_random=np.mean([p["prefix_random"] for p in per], axis=0).tolist(),
        prefix_random_std=np.mean([p["prefix_random_std"] for p in per], axis=0).tolist(),
        chosen_on={"l2": "dev", "ranking_l2": "dev", "best_layer": "dev", "redundant_layers": "dev",
                   "minimal_percent": "dev" if informative else "", "accuracies": "test"},
    )
    return _with_minimal_sets(result, d, per) if informative else result


def _minimal_intervals(per: list[dict[str, Any]], seed: int) -> dict[str, tuple[float, float]]:
    """95 % intervals (the two-level bootstrap) of the retrained curves, the minimal set's accuracy, its
    random counterpart's, and of their difference (information redundancy)."""
    mins = [p["minimal"] for p in per]
    P = len(mins[0].percentages)
    cols = [np.concatenate([m.top_right.T, m.random_right.T, m.top_right[[m.percentages.index(m.percent)]].T,
                            m.random_right[[m.percentages.index(m.percent)]].T], axis=1) for m in mins]
    reps = replicate_means(cols, [p["groups"] for p in per], seed=seed)
    ci = {f"top:{i}": percentile_interval(reps[:, i]) for i in range(P)}
    ci.update({f"random:{i}": percentile_interval(reps[:, P + i]) for i in range(P)})
    ci["minimal"], ci["minimal_random"] = percentile_interval(reps[:, 2 * P]), percentile_interval(reps[:, 2 * P + 1])
    ci["minimal_minus_random"] = percentile_interval(reps[:, 2 * P] - reps[:, 2 * P + 1])
    return ci


def _with_minimal_sets(r: TaskResult, d: TaskData, per: list[dict[str, Any]]) -> TaskResult:
    """The TaskResult with the seeds' minimal neuron sets summarised (test accuracies with intervals)."""
    mins = [p["minimal"] for p in per]
    ci = _minimal_intervals(per, seed_streams(r.seeds[0]).intervals)
    pcts = [str(p) for p in mins[0].percentages]
    r.percentages = mins[0].percentages
    r.retrained_top = {p: Stat.of([m.top[i] for m in mins], ci[f"top:{i}"]) for i, p in enumerate(pcts)}
    r.retrained_random = {p: Stat.of([m.random[i] for m in mins], ci[f"random:{i}"]) for i, p in enumerate(pcts)}
    r.minimal_percent = Stat.of([m.percent for m in mins])
    r.minimal_accuracy = Stat.of([m.accuracy for m in mins], ci["minimal"])
    r.minimal_random_accuracy = Stat.of([m.random_accuracy for m in mins], ci["minimal_random"])
    r.minimal_minus_random = Stat.of([m.accuracy - m.random_accuracy for m in mins], ci["minimal_minus_random"])
    r.minimal_reached = [m.reached for m in mins]
    r.rest_redundant = [m.rest_redundant for m in mins]
    r.information_redundant = [m.information_redundant for m in mins]
    r.distribution = {n: Stat.of([p["distribution"][i] for p in per]) for i, n in enumerate(d.names)}
    # the first seed's non-empty minimal set, as columns of the features
    r.minimal_neurons = next(([int(d.perm[n]) for n in m.neurons] for m in mins if len(m.neurons)), [])
    return r


def analyze_task(
    features: Features,
    labels: Any,
    *,
    task: str = "task",
    speakers: Any = None,
    rinit_features: Features | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    test_size: float = 0.4,
    ablation_percent: float = 20.0,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    delta: float = 0.01,
    layer_delta: float = 0.01,
    steps: Sequence[float] | None = None,
    prefix_points: int = 200,
    split: Any = None,
    paper: bool = False,
    **probe_params: Any,
) -> TaskResult:
    """The full study of one task on Features (values (N, D), ids, layers); labels (N,) or id -> label.

    Each seed draws its own split (stratified, speaker-disjoint with ``speakers``), unless ``split``
    fixes one: ``"train"`` / ``"test"`` per utterance, an array (N,) or a mapping id -> side (e.g. a
    manifest's split column); seeds then vary only the probes and the random draws. ``paper=True``
    trains every probe with :data:`neurohook.probe.PAPER_SETTINGS` (Adam, l1 = l2 = 1e-5, 20 epochs)
    instead of the tuned default (``probe_params`` given beside it override it); choices are still made on dev.
    """
    if paper:
        probe_params = {**PAPER_SETTINGS, **probe_params}
    d = task_data(features, labels, task, speakers, rinit_features, split)
    D = d.X.shape[1]
    prefix_k = np.unique(np.linspace(1, D, min(prefix_points, D)).round().astype(int))
    per = [_one_seed(d, seed, task, test_size, ablation_percent, steps, prefix_k, probe_params) for seed in seeds]
    ci = _intervals(per, seed_streams(seeds[0]).intervals)
    informative = ci["oracle"][0] > float(np.mean([p["majority"] for p in per]))
    if informative:
        for p, seed in zip(per, seeds):
            p.update(_minimal(d, p, seed, task, percentages, delta, probe_params))
    else:
        logger.warning("%s: Acc(ALL) %.3f [%.3f, %.3f] is not above the majority rate %.3f beyond its interval; "
                       "no minimal set or neuron distribution is computed", task, np.mean([p["oracle"] for p in per]),
                       *ci["oracle"], np.mean([p["majority"] for p in per]))
    return _task_result(d, task, seeds, per, ci, informative, layer_delta, ablation_percent, prefix_k)


def analyze(
    features: Features,
    labels: Any,
    *,
    speakers: Any = None,
    rinit_features: Features | None = None,
    trials: Any = None,
    n_jobs: int = 1,
    **options: Any,
) -> AnalysisResult:
    """Run :func:`analyze_task` for one task (labels (N,) or id -> label) or several ({task: labels}).

    Options are those of :func:`analyze_task` (seeds, test_size, ablation_percent, percentages,
    delta, layer_delta, steps) plus the probe's hyper-parameters (l1, l2, epochs, batch_size, lr,
    device, early_stopping, ...). ``trials`` (a :class:`neurohook.verification.Trials`) adds
    speaker verification: EER and minDCF per layer and for ALL. Returns an AnalysisResult with the
    overlaps of the minimal sets. Under ``torchrun`` each process analyses its share of the tasks
    (whole tasks: :func:`neurohook.distributed.share`) and every process returns the whole result.
    ``n_jobs`` > 1 analyses (this process's) tasks in that many worker processes of one thread each:
    the probes' L-BFGS on a few thousand rows gains nothing from a second thread (one task: 19.0 s
    with 2 threads, 19.4 s with 1, two at once 19.8 s each on the 2 cores here), so two tasks at
    once take about half the time. Results equal those of one process (same seeds).
    """
    tasks = dict(labels) if isinstance(labels, Mapping) and _is_task_map(labels, features) else {"task": labels}
    names = distributed.share(list(tasks))
    if n_jobs > 1 and len(names) > 1:
        from joblib import Parallel, delayed  # fresh worker processes (loky); large arrays memory-mapped

        jobs = (delayed(_task_in_worker)(features, tasks[n], n, speakers, rinit_features, options) for n in names)
        mine = dict(zip(names, Parallel(n_jobs=min(n_jobs, len(names)))(jobs)))
    else:
        mine = {n: analyze_task(features, tasks[n], task=n, speakers=speakers, rinit_features=rinit_features, **options)
                for n in names}
    done = {name: r for part in distributed.all_gather(mine) for name, r in part.items()}
    results = {name: done[name] for name in tasks}  # task order, whichever rank ran it
    names = list(results)
    names = [n for n in names if results[n].informative]  # no overlap claims from tasks at chance
    overlaps = [overlap(a, results[a].minimal_neurons, b, results[b].minimal_neurons)
                for i, a in enumerate(names) for b in names[i + 1 :]]
    settings = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in options.items()
                if isinstance(v, (int, float, str, bool, tuple, list, type(None)))}
    keys = set(LinearProbe().get_params())
    given = {**(PAPER_SETTINGS if options.get("paper") else {}), **{k: v for k, v in options.items() if k in keys}}
    settings["probe"] = {k: (list(v) if isinstance(v, tuple) else str(v) if k == "device" else v)
                         for k, v in LinearProbe(**given).get_params().items()}  # every setting, defaults too
    ver = None
    if trials is not None:
        from neurohook.verification import evaluate

        ver = evaluate(features, trials)
    return AnalysisResult(results, overlaps, settings, ver)


def _task_in_worker(features: Features, labels: Any, task: str, speakers: Any, rinit_features: Features | None,
                    options: dict[str, Any]) -> TaskResult:
    """:func:`analyze_task` in a worker process of :func:`analyze`'s ``n_jobs``: one thread each."""
    import torch

    torch.set_num_threads(1)
    ranking.set_num_threads(1)
    return analyze_task(features, labels, task=task, speakers=speakers, rinit_features=rinit_features, **options)


def _is_task_map(labels: Mapping[Any, Any], features: Features) -> bool:
    """A mapping of task name -> labels (rather than utterance id -> label); DataError when it is neither."""
    ids = set(features.ids)
    if any(k in ids for k in labels):
        return False
    scalar = [k for k, v in labels.items() if isinstance(v, (str, int, float, np.generic)) or v is None]
    if scalar:
        raise DataError(f"labels: none of the {len(labels)} keys is an utterance id of the features (keys like "
                        f"{list(labels)[:2]}, ids like {list(features.ids[:2])}), and a task map needs labels per task")
    return True
