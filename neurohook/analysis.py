"""The paper's layer-wise and neuron-level study of one model, in one call: :func:`analyze`.

For each task (a label per utterance) and each seed: a stratified (or speaker-disjoint) train/test
split; one probe per layer and one on ALL layers concatenated, trained together; the majority,
control-task (selectivity) and optional R.INIT baselines; the ranking of ALL's neurons; masked
top / bottom / random accuracies; the prefix curve; the minimal neuron set with its random
counterpart; its distribution over layers. Then means and standard deviations over seeds, and the
overlap of the tasks' minimal sets (polysemous neurons). Results are dataclasses that serialise to
JSON and back.

Accuracies are fractions in [0, 1]; ``delta`` tolerances are fractions too (0.01 = one point).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook.errors import DataError
from neurohook.atomic import atomic_write_text
from neurohook import ranking
from neurohook.ablation import DEFAULT_PERCENTAGES, masked_accuracy, minimal_neuron_set
from neurohook.control import control_labels, majority_accuracy, selectivity
from neurohook.probe import ProbeSpec, fit_probes

__all__ = [
    "ALL",
    "Stat",
    "TaskResult",
    "Overlap",
    "AnalysisResult",
    "analyze",
    "analyze_task",
    "train_test_split",
    "overlap",
]

logger = logging.getLogger(__name__)

ALL = "ALL"


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class Stat:
    """A quantity measured once per seed: its values, mean and (population) standard deviation."""

    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": list(map(float, self.values))}


def _stat(values: Sequence[float]) -> Stat:
    return Stat([float(v) for v in values])


@dataclass
class TaskResult:
    """Everything measured for one task (accuracies as fractions, statistics over seeds)."""

    task: str
    classes: list[str]
    n_train: int
    n_test: int
    layers: list[str]
    layer_sizes: list[int]
    seeds: list[int]
    majority: Stat
    oracle: Stat  # Acc(ALL)
    control: Stat  # Acc_control(ALL)
    selectivity: Stat
    rinit: Stat | None  # Acc(ALL) on re-initialised features
    layer_accuracy: dict[str, Stat]
    best_layer: str
    redundant_layers: list[str]  # layers within layer_delta of the best layer (section 3.5)
    ablation_percent: float
    masked: dict[str, Stat]  # top / bottom / random
    percentages: list[float]
    retrained_top: dict[str, Stat]  # per percentage (as str)
    retrained_random: dict[str, Stat]
    minimal_percent: Stat
    minimal_accuracy: Stat
    minimal_random_accuracy: Stat
    minimal_reached: list[bool]
    rest_redundant: list[bool]  # section 6.2 (i), per seed
    information_redundant: list[bool]  # section 6.2 (ii), per seed
    distribution: dict[str, Stat]  # neurons of the minimal set in each layer
    prefix_steps: list[int]  # k (number of top neurons kept) at which the prefix curve is sampled
    prefix_accuracy: list[float]  # mean over seeds
    minimal_neurons: list[int] = field(default_factory=list)  # first seed's minimal set (feature columns)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Stat):
                v = v.to_dict()
            elif isinstance(v, dict):
                v = {k: (x.to_dict() if isinstance(x, Stat) else x) for k, x in v.items()}
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskResult":
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = d[f.name] if f.name in d else None
            if isinstance(v, dict) and "values" in v and "mean" in v:
                v = Stat(list(v["values"]))
            elif isinstance(v, dict):
                v = {k: (Stat(list(x["values"])) if isinstance(x, dict) and "values" in x else x) for k, x in v.items()}
            kw[f.name] = v
        return cls(**kw)


@dataclass
class Overlap:
    """Shared neurons of two tasks' minimal sets (section 7.1)."""

    a: str
    b: str
    shared: int
    share_of_a: float
    share_of_b: float
    jaccard: float


def overlap(name_a: str, neurons_a: Sequence[int], name_b: str, neurons_b: Sequence[int]) -> Overlap:
    """Shared count, share of each set, and Jaccard index of two neuron sets."""
    a, b = set(map(int, neurons_a)), set(map(int, neurons_b))
    shared = len(a & b)
    union = len(a | b)
    return Overlap(name_a, name_b, shared, shared / len(a) if a else 0.0, shared / len(b) if b else 0.0,
                   shared / union if union else 0.0)


@dataclass
class AnalysisResult:
    """Results of :func:`analyze`: one TaskResult per task, the pairwise overlaps of minimal sets and,
    when trials were given, speaker verification (a :class:`neurohook.verification.VerificationResult`)."""

    tasks: dict[str, TaskResult]
    overlaps: list[Overlap]
    settings: dict[str, Any] = field(default_factory=dict)
    verification: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": {k: v.to_dict() for k, v in self.tasks.items()},
                "overlaps": [asdict(o) for o in self.overlaps], "settings": self.settings,
                "verification": None if self.verification is None else self.verification.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AnalysisResult":
        from neurohook.verification import VerificationResult

        ver = d.get("verification")
        return cls({k: TaskResult.from_dict(v) for k, v in d["tasks"].items()},
                   [Overlap(**o) for o in d.get("overlaps", [])], dict(d.get("settings", {})),
                   None if ver is None else VerificationResult.from_dict(ver))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON, atomically (temporary file then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "AnalysisResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------------------------
# Splits


def train_test_split(
    labels: Any, test_size: float = 0.4, seed: int = 0, speakers: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of a stratified split of labels (N,); speaker-disjoint when speakers (N,) given.

    Stratified: each class contributes ``test_size`` of its rows to the test part. Speaker-disjoint:
    whole speakers go to one side, chosen per class of the speaker's most frequent label.
    """
    labels = np.asarray(labels)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    if speakers is None:
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            test[rows[: int(round(test_size * len(rows)))]] = True
    else:
        speakers = np.asarray(speakers)
        if len(speakers) != len(labels):
            raise ValueError(f"speakers has {len(speakers)} entries but labels has {len(labels)}")
        spk, spk_of_row = np.unique(speakers, return_inverse=True)
        main = np.array([_mode(labels[spk_of_row == s]) for s in range(len(spk))])
        for c in np.unique(main):
            group = rng.permutation(np.flatnonzero(main == c))
            test_spk = group[: int(round(test_size * len(group)))]
            test |= np.isin(spk_of_row, test_spk)
    _check_splittable(labels, speakers)
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"the split left an empty {'training' if len(train_idx) == 0 else 'test'} part "
                         f"({len(labels)} utterances, test_size={test_size}{', by speaker' if speakers is not None else ''})")
    for part, idx in (("training", train_idx), ("test", test_idx)):
        missing = sorted(set(np.unique(labels).tolist()) - set(np.unique(labels[idx]).tolist()))
        if missing:
            raise DataError(f"class(es) {missing[:5]} absent from the {part} split: give more utterances of them"
                             f"{' or more speakers' if speakers is not None else ''}")
    return train_idx, test_idx


def _check_splittable(labels: np.ndarray, speakers: np.ndarray | None) -> None:
    """DataError naming the classes with fewer than 2 utterances (or speakers): one is needed per part."""
    if speakers is None:
        classes, counts = np.unique(labels, return_counts=True)
        unit = "utterance"
    else:
        pairs = np.unique(np.stack([labels.astype(str), speakers.astype(str)]), axis=1)
        classes, counts = np.unique(pairs[0], return_counts=True)
        unit = "speaker"
    few = classes[counts < 2].tolist()
    if few:
        raise DataError(f"class(es) {few[:5]} have only one {unit} ({len(few)} of {len(classes)} classes): each "
                        f"class needs at least 2 {unit}s, one for training and one for testing; drop or merge them")


def _mode(values: np.ndarray) -> Any:
    u, c = np.unique(values, return_counts=True)
    return u[np.argmax(c)]


# ------------------------------------------------------------------------------------------------
# The analysis


def _layer_blocks(features: Any) -> tuple[np.ndarray, list[str], list[int]]:
    """Column permutation that makes each layer contiguous (in layer order), layer names and sizes."""
    names = list(features.layer_names)
    cols = [np.asarray(features.columns(n)) for n in names]
    return np.concatenate(cols), names, [len(c) for c in cols]


def _aligned_labels(features: Any, labels: Any, what: str) -> np.ndarray:
    """Labels (N,) aligned with features.ids from an array (N,) or a mapping id -> label (None: missing)."""
    if isinstance(labels, Mapping):
        return np.array([labels.get(u) for u in features.ids], dtype=object)
    arr = np.asarray(labels, dtype=object)
    if arr.shape != (len(features.ids),):
        raise DataError(f"{what} has shape {arr.shape} but the features hold {len(features.ids)} utterances")
    return arr


def _check_finite(X: np.ndarray, ids: Sequence[Any], what: str) -> None:
    """DataError naming the first utterances whose features hold NaN or Inf."""
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"{what} of {len(rows)} utterance(s) hold NaN or Inf, e.g. {[ids[r] for r in rows[:5]]}")


def _clean(values: np.ndarray) -> np.ndarray:
    """Labels as strings when they are not all numbers, so mixed types sort and compare."""
    if all(isinstance(v, (int, np.integer)) for v in values):
        return values.astype(np.int64)
    return values.astype(str)


def analyze_task(
    features: Any,
    labels: Any,
    *,
    task: str = "task",
    speakers: Any = None,
    rinit_features: Any = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    test_size: float = 0.4,
    ablation_percent: float = 20.0,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    delta: float = 0.01,
    layer_delta: float = 0.01,
    steps: Sequence[float] | None = None,
    prefix_points: int = 200,
    **probe_params: Any,
) -> TaskResult:
    """The full study of one task on Features (values (N, D), ids, layers); labels (N,) or id -> label."""
    y_all = _aligned_labels(features, labels, "labels")
    keep = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in y_all])
    if keep.sum() == 0:
        raise DataError(f"task {task!r}: no utterance of the features has a label (features ids look like "
                        f"{list(features.ids[:2])}; are the labels keyed by other ids?)")
    y = _clean(y_all[keep])
    spk = None if speakers is None else _aligned_labels(features, speakers, "speakers")[keep].astype(str)
    perm, names, sizes = _layer_blocks(features)
    X = np.asarray(features.values)[keep][:, perm]
    _check_finite(X, [u for u, k in zip(features.ids, keep) if k], "features")
    if rinit_features is not None:
        pos = {u: i for i, u in enumerate(rinit_features.ids)}
        missing = [u for u, k in zip(features.ids, keep) if k and u not in pos]
        if missing:
            raise ValueError(f"R.INIT features lack {len(missing)} utterance(s), e.g. {missing[:3]}")
        rperm, _, rsizes = _layer_blocks(rinit_features)
        rows = [pos[u] for u, k in zip(features.ids, keep) if k]
        X_rinit = np.asarray(rinit_features.values)[rows][:, rperm]
        _check_finite(X_rinit, [rinit_features.ids[r] for r in rows], "R.INIT features")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    D = X.shape[1]

    per: dict[str, list[Any]] = {k: [] for k in (
        "majority", "oracle", "control", "selectivity", "rinit", "layers", "masked", "minimal", "distribution", "prefix")}
    prefix_k = np.unique(np.linspace(1, D, min(prefix_points, D)).round().astype(int))
    first_minimal: list[int] = []
    for seed in seeds:
        tr, te = train_test_split(y, test_size, seed, spk)
        specs = [ProbeSpec(int(starts[i]), int(starts[i + 1]), seed) for i in range(len(names))] + [ProbeSpec(0, D, seed)]
        X_tr, X_te, y_tr, y_te = X[tr], X[te], y[tr], y[te]  # one copy each per seed
        probes = fit_probes(X_tr, y_tr, specs, **probe_params)
        layer_acc = [p.score(X_te[:, s.start : s.end], y_te) for p, s in zip(probes, specs)]
        probe_all, oracle = probes[-1], layer_acc[-1]
        per["layers"].append(layer_acc[:-1])
        per["oracle"].append(oracle)
        per["majority"].append(majority_accuracy(y_tr, y_te))
        ctrl_train, ctrl_test = control_labels(y_tr, len(te), seed)
        (ctrl_probe,) = fit_probes(X_tr, ctrl_train, [ProbeSpec(0, D, seed)], **probe_params)
        ctrl = ctrl_probe.score(X_te, ctrl_test)
        per["control"].append(ctrl)
        per["selectivity"].append(selectivity(oracle, ctrl))
        if rinit_features is not None:
            (rprobe,) = fit_probes(X_rinit[tr], y_tr, [ProbeSpec(0, X_rinit.shape[1], seed)], **probe_params)
            per["rinit"].append(rprobe.score(X_rinit[te], y_te))

        order = ranking.neuron_ordering(probe_all.coef_, steps).order
        per["masked"].append(masked_accuracy(probe_all, X_te, y_te, order, ablation_percent, seed))
        curve = ranking.prefix_accuracy(probe_all.transform(X_te), probe_all.coef_, probe_all.intercept_,
                                        probe_all.encode(y_te), order)
        per["prefix"].append(curve[prefix_k - 1])
        minimal = minimal_neuron_set(X_tr, y_tr, X_te, y_te, order, oracle, percentages, delta, seed, **probe_params)
        per["minimal"].append(minimal)
        per["distribution"].append(ranking.layer_distribution(np.asarray(minimal.neurons), sizes).counts)
        if not first_minimal:
            first_minimal = [int(perm[n]) for n in minimal.neurons]
        logger.info("%s seed %d: ALL %.3f, best layer %.3f, minimal %g%% -> %.3f",
                    task, seed, oracle, max(layer_acc[:-1]), minimal.percent, minimal.accuracy)

    layer_acc = np.array(per["layers"])  # seeds x layers
    mean_layer = layer_acc.mean(axis=0)
    best = int(np.argmax(mean_layer))
    mins = per["minimal"]
    pcts = [str(p) for p in mins[0].percentages]
    return TaskResult(
        task=task,
        classes=[str(c) for c in np.unique(y)],
        n_train=int(len(tr)),
        n_test=int(len(te)),
        layers=names,
        layer_sizes=[int(s) for s in sizes],
        seeds=list(seeds),
        majority=_stat(per["majority"]),
        oracle=_stat(per["oracle"]),
        control=_stat(per["control"]),
        selectivity=_stat(per["selectivity"]),
        rinit=_stat(per["rinit"]) if per["rinit"] else None,
        layer_accuracy={n: _stat(layer_acc[:, i]) for i, n in enumerate(names)},
        best_layer=names[best],
        redundant_layers=[n for i, n in enumerate(names) if mean_layer[i] >= mean_layer[best] - layer_delta],
        ablation_percent=float(ablation_percent),
        masked={k: _stat([m[k] for m in per["masked"]]) for k in ("top", "bottom", "random")},
        percentages=mins[0].percentages,
        retrained_top={p: _stat([m.top[i] for m in mins]) for i, p in enumerate(pcts)},
        retrained_random={p: _stat([m.random[i] for m in mins]) for i, p in enumerate(pcts)},
        minimal_percent=_stat([m.percent for m in mins]),
        minimal_accuracy=_stat([m.accuracy for m in mins]),
        minimal_random_accuracy=_stat([m.random_accuracy for m in mins]),
        minimal_reached=[m.reached for m in mins],
        rest_redundant=[m.rest_redundant for m in mins],
        information_redundant=[m.information_redundant for m in mins],
        distribution={n: _stat([d[i] for d in per["distribution"]]) for i, n in enumerate(names)},
        prefix_steps=prefix_k.tolist(),
        prefix_accuracy=np.mean(per["prefix"], axis=0).tolist(),
        minimal_neurons=first_minimal,
    )


def analyze(
    features: Any,
    labels: Any,
    *,
    speakers: Any = None,
    rinit_features: Any = None,
    trials: Any = None,
    **options: Any,
) -> AnalysisResult:
    """Run :func:`analyze_task` for one task (labels (N,) or id -> label) or several ({task: labels}).

    Options are those of :func:`analyze_task` (seeds, test_size, ablation_percent, percentages,
    delta, layer_delta, steps) plus the probe's hyper-parameters (l1, l2, epochs, batch_size, lr,
    device, early_stopping, ...). ``trials`` (a :class:`neurohook.verification.Trials`) adds
    speaker verification: EER and minDCF per layer and for ALL. Returns an AnalysisResult with the
    overlaps of the minimal sets.
    """
    tasks = dict(labels) if isinstance(labels, Mapping) and _is_task_map(labels, features) else {"task": labels}
    results = {name: analyze_task(features, lab, task=name, speakers=speakers, rinit_features=rinit_features, **options)
               for name, lab in tasks.items()}
    names = list(results)
    overlaps = [overlap(a, results[a].minimal_neurons, b, results[b].minimal_neurons)
                for i, a in enumerate(names) for b in names[i + 1 :]]
    settings = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in options.items()
                if isinstance(v, (int, float, str, bool, tuple, list, type(None)))}
    ver = None
    if trials is not None:
        from neurohook.verification import evaluate

        ver = evaluate(features, trials)
    return AnalysisResult(results, overlaps, settings, ver)


def _is_task_map(labels: Mapping[Any, Any], features: Any) -> bool:
    """A mapping of task name -> labels (rather than utterance id -> label); DataError when it is neither."""
    ids = set(features.ids)
    if any(k in ids for k in labels):
        return False
    scalar = [k for k, v in labels.items() if isinstance(v, (str, int, float, np.generic)) or v is None]
    if scalar:
        raise DataError(f"labels: none of the {len(labels)} keys is an utterance id of the features (keys like "
                        f"{list(labels)[:2]}, ids like {list(features.ids[:2])}), and a task map needs labels per task")
    return True
