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
(polysemous neurons). Results are dataclasses that serialise to JSON and back. One seed's work lives in
:mod:`neurohook.analysis_seed`; :func:`run_tasks` runs the (task, seed) units, here or in worker processes.

Accuracies are fractions in [0, 1]; ``delta`` tolerances are fractions too (0.01 = one point). Every
accuracy measured on the test utterances (majority, ALL, control, R.INIT, each layer, the masked
probes, the cross-fitted check, the retrained curves and the minimal set) and the differences the
verdicts read carry a 95 % interval (``Stat.ci``): a two-level bootstrap over the
seeds and, within each, the test speakers (utterances without speakers; :mod:`neurohook.intervals`).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook import distributed, ranking
from neurohook.features import Features
from neurohook.errors import DataError
from neurohook.ablation import DEFAULT_PERCENTAGES
from neurohook.analysis_seed import minimal_set, one_seed
from neurohook.data.splits import seed_streams, train_test_split
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.probe import PAPER_SETTINGS, LinearProbe
from neurohook.task_data import TaskData, task_data
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
    options = dict(seeds=seeds, test_size=test_size, ablation_percent=ablation_percent, percentages=percentages,
                   delta=delta, layer_delta=layer_delta, steps=steps, prefix_points=prefix_points, split=split,
                   paper=paper, **probe_params)
    return run_tasks(features, {task: labels}, speakers, rinit_features, options)[task]


def _settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """analyze_task's options with its defaults filled in; ``probe``: the probe's parameters (paper's applied)."""
    bound = inspect.signature(analyze_task).bind(None, None, **options)
    bound.apply_defaults()
    out = {k: v for k, v in bound.arguments.items() if k not in ("features", "labels", "task", "speakers",
                                                                  "rinit_features", "probe_params")}
    probe = dict(bound.arguments["probe_params"])
    out["probe"] = {**PAPER_SETTINGS, **probe} if out["paper"] else probe
    return out


class _Inputs:
    """What every (task, seed) unit of one study reads; each process prepares a task's rows once (cached)."""

    _prepared: dict[tuple[str, str], tuple[TaskData, np.ndarray]] = {}  # per process: (token, task) -> rows, prefix k

    def __init__(self, features: Features, tasks: Mapping[str, Any], speakers: Any, rinit: Features | None,
                 options: Mapping[str, Any]) -> None:
        self.features, self.tasks, self.speakers, self.rinit = features, dict(tasks), speakers, rinit
        self.settings = _settings(options)
        self.token = uuid.uuid4().hex

    def prepared(self, task: str) -> tuple[TaskData, np.ndarray]:
        """The task's rows (:func:`neurohook.task_data.task_data`) and the prefix curve's k values."""
        key = (self.token, task)
        if key not in self._prepared:
            for old in [k for k in self._prepared if k[0] != self.token]:  # another study's: dropped
                del self._prepared[old]
            d = task_data(self.features, self.tasks[task], task, self.speakers, self.rinit, self.settings["split"])
            D = d.X.shape[1]
            self._prepared[key] = d, np.unique(np.linspace(1, D, min(self.settings["prefix_points"], D)).round().astype(int))
        return self._prepared[key]

    def release(self) -> None:
        """Drop this study's prepared rows (in this process)."""
        for key in [k for k in self._prepared if k[0] == self.token]:
            del self._prepared[key]


def _unit(inputs: _Inputs, task: str, seed: int, seed_part: dict[str, Any] | None = None,
          threads: int | None = None) -> dict[str, Any]:
    """One seed of one task: its probes and measurements (:func:`neurohook.analysis_seed.one_seed`) or, given them, its
    minimal neuron set (:func:`neurohook.analysis_seed.minimal_set`). ``threads``: set torch's and the core's (worker processes)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        ranking.set_num_threads(threads)
    d, prefix_k = inputs.prepared(task)
    s = inputs.settings
    if seed_part is None:
        return one_seed(d, seed, task, s["test_size"], s["ablation_percent"], s["steps"], prefix_k, s["probe"])
    return minimal_set(d, seed_part, seed, task, s["percentages"], s["delta"], s["probe"])


def _map(inputs: _Inputs, units: list[tuple[Any, ...]], n_jobs: int) -> list[dict[str, Any]]:
    """``_unit(inputs, *u)`` for every unit, in order: here, or in ``n_jobs`` worker processes of one thread."""
    if n_jobs <= 1 or len(units) <= 1:
        return [_unit(inputs, *u) for u in units]
    from joblib import Parallel, delayed  # fresh worker processes (loky); large arrays memory-mapped

    return Parallel(n_jobs=min(n_jobs, len(units)))(delayed(_unit)(inputs, *u, threads=1) for u in units)


def run_tasks(features: Features, tasks: Mapping[str, Any], speakers: Any, rinit_features: Features | None,
              options: Mapping[str, Any], n_jobs: int = 1) -> dict[str, TaskResult]:
    """:func:`analyze_task` for every task {name: labels}, its (task, seed) units spread over ``n_jobs``
    worker processes: first every seed's probes and measurements, then, for the tasks whose Acc(ALL)
    lies above the majority rate, every seed's minimal neuron set. Equal to one process (same seeds)."""
    inputs = _Inputs(features, tasks, speakers, rinit_features, options)
    seeds = list(inputs.settings["seeds"])
    try:
        parts = iter(_map(inputs, [(t, s) for t in tasks for s in seeds], n_jobs))
        per = {t: [next(parts) for _ in seeds] for t in tasks}
        ci, informative = {}, {}
        for t, ps in per.items():
            ci[t] = _intervals(ps, seed_streams(seeds[0]).intervals)
            informative[t] = ci[t]["oracle"][0] > float(np.mean([p["majority"] for p in ps]))
            if not informative[t]:
                logger.warning("%s: Acc(ALL) %.3f [%.3f, %.3f] is not above the majority rate %.3f beyond its "
                               "interval; no minimal set or neuron distribution is computed", t,
                               np.mean([p["oracle"] for p in ps]), *ci[t]["oracle"], np.mean([p["majority"] for p in ps]))
        units = [(t, s, p) for t in tasks if informative[t] for s, p in zip(seeds, per[t])]
        for (t, s, p), extra in zip(units, _map(inputs, units, n_jobs)):
            p.update(extra)
        st, results = inputs.settings, {}
        for t in tasks:
            d, prefix_k = inputs.prepared(t)
            results[t] = _task_result(d, t, seeds, per[t], ci[t], informative[t], st["layer_delta"],
                                      st["ablation_percent"], prefix_k)
        return results
    finally:
        inputs.release()


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
    ``n_jobs`` > 1 runs the (task, seed) units in that many worker processes of one thread each
    (:func:`run_tasks`): the probes' L-BFGS on a few thousand rows gains nothing from a second thread,
    so two units at once take about half the time. Results equal those of one process (same seeds).
    """
    tasks = dict(labels) if isinstance(labels, Mapping) and _is_task_map(labels, features) else {"task": labels}
    names = distributed.share(list(tasks))
    mine = run_tasks(features, {n: tasks[n] for n in names}, speakers, rinit_features, options, n_jobs) if names else {}
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
