"""Speaker verification probing (the reference paper's task T2:SV, section 4.2, Figure 5, Table 4).

Pieces, each usable alone:

* **Trials** — pairs (enrolment id, test id, target?) read from a file (:func:`read_trials`: VoxCeleb's
  ``1 id10270/x.wav id10270/y.wav`` lines or a CSV with header ``enrol,test,target``) or drawn from a
  labelled set (:func:`make_trials`: no self-pairs; same-gender non-targets, per-language trials,
  balanced counts; seeded and reproducible).
* **Scoring** — cosine similarity of length-normalised embeddings, vectorised over all trials, for
  every layer and for ALL (all layers concatenated, normalised as one vector):
  :func:`cosine_scores`, :func:`layer_scores`.
* **Metrics** — :func:`eer` (exact, O(n log n)), :func:`min_dcf` (normalised), :func:`bootstrap_ci`.
* **Analyses** — :func:`layerwise_eer` (Figure 5) and :func:`neuron_eer` (Table 4: a proxy
  speaker-identification probe trained on other speakers ranks the neurons of the best layer Lb with
  :func:`neurohook.ranking.neuron_ordering`; EER with its top / random / bottom N% neurons), and
  :func:`evaluate` doing both on any ``Features``-like object (``.values``, ``.ids``, ``.layers``).

Everything takes plain arrays: ``values`` (N, D) with one row per utterance, ``ids`` (N,) utterance
ids, and ``layers`` mapping each layer name to its column range ``(start, end)``. Results are
dataclasses with ``to_dict`` / ``from_dict`` (JSON-ready).

Detection conventions (used by every function here): a trial is *accepted* when its score is
``>= threshold``. For a threshold t, FRR(t) (miss rate) is the fraction of target trials with score
< t and FAR(t) (false-alarm rate) the fraction of non-target trials with score >= t. The distinct
operating points are t = every distinct score, plus "reject everything".
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from neurohook.errors import DataError
from neurohook import ranking

__all__ = [
    "Trials",
    "read_trials",
    "write_trials",
    "make_trials",
    "cosine_scores",
    "layer_scores",
    "eer",
    "min_dcf",
    "bootstrap_ci",
    "LayerEER",
    "LayerwiseVerification",
    "NeuronSubsetEER",
    "NeuronVerification",
    "VerificationResult",
    "layerwise_eer",
    "neuron_eer",
    "features_layerwise_eer",
    "features_neuron_eer",
    "evaluate",
    "ALL",
    "DEFAULT_PERCENTAGES",
]

logger = logging.getLogger(__name__)

ALL = "ALL"
"""Name of the concatenation of all layers in every result."""

DEFAULT_PERCENTAGES: tuple[float, ...] = (1, 5, 10, 15, 20, 25, 50, 75)
"""Neuron percentages tried for the minimal set (the paper's section 3.3.2)."""

_CHUNK_BYTES = 32 * 2**20  # working memory of one scoring chunk


# --------------------------------------------------------------------------------------------------
# Trials


@dataclass
class Trials:
    """A trial list: enrolment ids (T,), test ids (T,), target flags (T,) bool, optional language (T,)."""

    enrol: list[str]
    test: list[str]
    target: np.ndarray
    language: list[str] | None = None

    def __post_init__(self) -> None:
        self.enrol = [str(x) for x in self.enrol]
        self.test = [str(x) for x in self.test]
        self.target = _as_labels(self.target, "target")
        if self.language is not None:
            self.language = [str(x) for x in self.language]
        lengths = {"enrol": len(self.enrol), "test": len(self.test), "target": len(self.target)}
        if self.language is not None:
            lengths["language"] = len(self.language)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"trial fields have different lengths: {lengths}")

    def __len__(self) -> int:
        return len(self.enrol)

    @property
    def n_target(self) -> int:
        """Number of target (same-speaker) trials."""
        return int(self.target.sum())

    @property
    def n_nontarget(self) -> int:
        """Number of non-target (different-speaker) trials."""
        return len(self) - self.n_target

    def subset(self, which: np.ndarray | Sequence[int]) -> "Trials":
        """The trials selected by a (T,) bool mask or an index array, in that order."""
        idx = np.asarray(which)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        return Trials(
            [self.enrol[i] for i in idx],
            [self.test[i] for i in idx],
            self.target[idx],
            None if self.language is None else [self.language[i] for i in idx],
        )

    def by_language(self) -> dict[str, "Trials"]:
        """The trials of each language (sorted by language name); needs the language column."""
        if self.language is None:
            raise ValueError("these trials have no language column")
        lang = np.asarray(self.language)
        return {str(g): self.subset(lang == g) for g in np.unique(lang)}


_TRUE = {"1", "true", "target", "tgt", "yes", "y", "same"}
_FALSE = {"0", "false", "nontarget", "non-target", "non", "imp", "impostor", "no", "n", "different"}


def _parse_target(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{where}: cannot read {value!r} as target/non-target (use 1/0, true/false or target/nontarget)")


def read_trials(path: str | os.PathLike[str], format: Literal["auto", "voxceleb", "csv"] = "auto") -> Trials:
    """Read a trial list: VoxCeleb lines ``1 enrol test`` (1 = target) or a CSV with header enrol,test,target.

    ``format="auto"`` picks CSV when the first non-empty line is a header naming ``enrol``, ``test`` and
    ``target`` (an optional ``language`` column is kept); otherwise each line must be three
    whitespace-separated fields, label first.
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise ValueError(f"{path}: the trial file is empty")
    if format == "auto":
        header = [h.strip().lower() for h in first.split(",")]
        format = "csv" if {"enrol", "test", "target"} <= set(header) else "voxceleb"
    enrol: list[str] = []
    test: list[str] = []
    target: list[bool] = []
    if format == "csv":
        reader = csv.DictReader(lines)
        names = {(n or "").strip().lower(): n for n in (reader.fieldnames or [])}
        missing = [c for c in ("enrol", "test", "target") if c not in names]
        if missing:
            raise ValueError(f"{path}: CSV header must name enrol, test and target; missing {missing}")
        has_lang = "language" in names
        language: list[str] | None = [] if has_lang else None
        for lineno, row in enumerate(reader, start=2):
            if not any((v or "").strip() for v in row.values()):
                continue
            e, t, y = row.get(names["enrol"]), row.get(names["test"]), row.get(names["target"])
            if e is None or t is None or y is None:
                raise ValueError(f"{path}:{lineno}: expected enrol,test,target, got {row}")
            enrol.append(e.strip())
            test.append(t.strip())
            target.append(_parse_target(y, f"{path}:{lineno}"))
            if language is not None:
                language.append((row.get(names["language"]) or "").strip())
        trials = Trials(enrol, test, np.array(target, dtype=bool), language)
    elif format == "voxceleb":
        for lineno, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: expected 'label enrol test' (3 fields), got {line!r}")
            target.append(_parse_target(parts[0], f"{path}:{lineno}"))
            enrol.append(parts[1])
            test.append(parts[2])
        trials = Trials(enrol, test, np.array(target, dtype=bool))
    else:
        raise ValueError(f"format must be 'auto', 'voxceleb' or 'csv', got {format!r}")
    logger.info("read %d trials (%d target) from %s", len(trials), trials.n_target, path)
    return trials


def write_trials(trials: Trials, path: str | os.PathLike[str]) -> None:
    """Write trials as CSV with header enrol,test,target[,language] (target as 1/0)."""
    with open(os.fspath(path), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["enrol", "test", "target"] + (["language"] if trials.language is not None else []))
        for i in range(len(trials)):
            row = [trials.enrol[i], trials.test[i], int(trials.target[i])]
            if trials.language is not None:
                row.append(trials.language[i])
            w.writerow(row)


def _codes(values: Sequence[Any], what: str) -> np.ndarray:
    """Integer codes (N,) of arbitrary hashable labels; None is refused."""
    table: dict[Any, int] = {}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError(f"{what}[{i}] is missing")
        out[i] = table.setdefault(v, len(table))
    return out


def _sample_pairs(lo: np.ndarray, hi: np.ndarray, k: int | None, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray]:
    """k pairs (i, j) drawn uniformly without replacement from {(i, j): lo[i] <= j < hi[i]} (all if k is None)."""
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if k is None:
        k = total
    if k > total:
        raise DataError(f"asked for {k} {what} trials but only {total} eligible pairs exist")
    flat = np.arange(total, dtype=np.int64) if k == total else np.sort(rng.choice(total, size=k, replace=False))
    cum = np.cumsum(counts)
    i = np.searchsorted(cum, flat, side="right")
    j = lo[i] + (flat - (cum[i] - counts[i]))
    return i.astype(np.int64), j.astype(np.int64)


def make_trials(
    ids: Sequence[str],
    speakers: Sequence[Any],
    *,
    genders: Sequence[Any] | None = None,
    languages: Sequence[Any] | None = None,
    same_gender: bool = False,
    per_language: bool = False,
    n_target: int | None = None,
    n_nontarget: int | None = None,
    balanced: bool = True,
    seed: int = 0,
) -> Trials:
    """Draw trials from a labelled set: ids, speakers (N,) and optional genders, languages (N,).

    Target trials pair two different utterances of one speaker, non-targets two speakers (of the same
    gender when ``same_gender``, as the paper does); with ``per_language`` both utterances of every
    trial share a language, counts apply to each language separately and the trials carry it. Pairs
    are unordered and drawn uniformly without replacement: ``n_target=None`` takes every target pair;
    ``balanced`` draws as many non-targets as targets, else ``n_nontarget`` (None: every eligible pair).
    The same inputs and seed give the same trials.
    """
    n = len(ids)
    if len(speakers) != n:
        raise ValueError(f"ids and speakers have different lengths: {n} and {len(speakers)}")
    ids = [str(x) for x in ids]
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = [x for x in ids if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
        raise ValueError(f"utterance ids must be unique; repeated: {dup[:5]}")
    if balanced and n_nontarget is not None:
        raise ValueError("n_nontarget is set by balanced=True (as many non-targets as targets); pass balanced=False")
    for name, k in (("n_target", n_target), ("n_nontarget", n_nontarget)):
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {k!r}")
    spk = _codes(speakers, "speakers")
    gen = np.zeros(n, dtype=np.int64)
    if same_gender:
        if genders is None:
            raise ValueError("same_gender=True needs genders")
    if genders is not None:
        if len(genders) != n:
            raise ValueError(f"ids and genders have different lengths: {n} and {len(genders)}")
        g = _codes(genders, "genders")
        per_spk = {}
        for s, gg in zip(spk.tolist(), g.tolist()):
            if per_spk.setdefault(s, gg) != gg:
                bad = speakers[int(np.flatnonzero(spk == s)[0])]
                raise ValueError(f"speaker {bad!r} has utterances of more than one gender")
        if same_gender:
            gen = g
    if per_language:
        if languages is None:
            raise ValueError("per_language=True needs languages")
        if len(languages) != n:
            raise ValueError(f"ids and languages have different lengths: {n} and {len(languages)}")
        _codes(languages, "languages")  # refuses missing values
        lang = np.asarray([str(x) for x in languages])
        parts = [(str(name), np.flatnonzero(lang == name)) for name in np.unique(lang)]
    else:
        parts = [(None, np.arange(n, dtype=np.int64))]

    rng = np.random.default_rng(seed)
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    y_all: list[np.ndarray] = []
    lang_all: list[str] = []
    for name, members in parts:
        # Sort by (gender group, speaker, position): a speaker's utterances and a group's speakers
        # become contiguous runs, so the eligible partners of each utterance form one index range.
        order = members[np.lexsort((members, spk[members], gen[members]))]
        s, g = spk[order], gen[order]
        m = len(order)
        pos = np.arange(m, dtype=np.int64)
        spk_change = np.r_[True, (s[1:] != s[:-1]) | (g[1:] != g[:-1]), True]
        grp_change = np.r_[True, g[1:] != g[:-1], True]
        spk_end = np.flatnonzero(spk_change)[1:][np.cumsum(spk_change[:-1]) - 1]
        grp_end = np.flatnonzero(grp_change)[1:][np.cumsum(grp_change[:-1]) - 1]
        where = "" if name is None else f" (language {name!r})"
        ti, tj = _sample_pairs(pos + 1, spk_end, n_target, rng, "target" + where)
        k_non = len(ti) if balanced else n_nontarget
        ni, nj = _sample_pairs(spk_end, grp_end, k_non, rng, "non-target" + where)
        a = order[np.r_[ti, ni]]
        b = order[np.r_[tj, nj]]
        swap = rng.random(len(a)) < 0.5  # random enrol/test orientation
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        a_all.append(a)
        b_all.append(b)
        y_all.append(np.r_[np.ones(len(ti), bool), np.zeros(len(ni), bool)])
        if name is not None:
            lang_all.extend([name] * len(a))
    a = np.concatenate(a_all)
    b = np.concatenate(b_all)
    y = np.concatenate(y_all)
    perm = rng.permutation(len(a))
    trials = Trials(
        [ids[i] for i in a[perm]],
        [ids[i] for i in b[perm]],
        y[perm],
        [lang_all[i] for i in perm] if per_language else None,
    )
    logger.info("made %d trials (%d target, %d non-target)", len(trials), trials.n_target, trials.n_nontarget)
    return trials


# --------------------------------------------------------------------------------------------------
# Scoring


def _layer_slices(layers: Any, n_columns: int | None = None) -> dict[str, tuple[int, int]]:
    """Normalise a layer map to {name: (start, end)}; adjacent spans of one name merge.

    Accepts a mapping name -> (start, end) / slice / object with ``.start``/``.end``; an iterable of
    such objects with ``.name`` (or of (name, start, end) tuples, or dicts); or an object holding one
    of these as ``.layers``.
    """

    def bounds(v: Any, name: str) -> tuple[int, int]:
        if isinstance(v, slice):
            if v.step not in (None, 1):
                raise ValueError(f"layer {name!r}: slices must have step 1")
            return int(v.start or 0), int(v.stop)
        if isinstance(v, Mapping):
            return int(v["start"]), int(v["end"])
        if hasattr(v, "start") and hasattr(v, "end"):
            return int(v.start), int(v.end)
        if hasattr(v, "start") and hasattr(v, "stop"):
            return int(v.start), int(v.stop)
        start, end = v
        return int(start), int(end)

    out: dict[str, tuple[int, int]] = {}
    if isinstance(layers, Mapping):
        items = [(str(k), bounds(v, str(k))) for k, v in layers.items()]
    elif hasattr(layers, "layers") and not isinstance(layers, (str, bytes)):
        return _layer_slices(layers.layers, n_columns)
    elif hasattr(layers, "items") and callable(layers.items):
        items = [(str(k), bounds(v, str(k))) for k, v in layers.items()]
    elif isinstance(layers, Iterable) and not isinstance(layers, (str, bytes)):
        items = []
        for entry in layers:
            if isinstance(entry, Mapping):
                items.append((str(entry["name"]), bounds(entry, str(entry["name"]))))
            elif hasattr(entry, "name"):
                items.append((str(entry.name), bounds(entry, str(entry.name))))
            elif isinstance(entry, (tuple, list)) and len(entry) == 3:
                items.append((str(entry[0]), (int(entry[1]), int(entry[2]))))
            else:
                raise TypeError(f"cannot read a layer from {entry!r}: expected name/start/end")
    else:
        raise TypeError(f"cannot read a layer map from {type(layers).__name__}: expected name -> (start, end)")
    for name, (start, end) in items:
        if name in out:
            if out[name][1] != start:
                raise ValueError(f"layer {name!r} spans non-adjacent column ranges {out[name]} and {(start, end)}; make its columns contiguous")
            out[name] = (out[name][0], end)  # adjacent spans of one layer (e.g. mean then std) merge
            continue
        if name == ALL:
            raise ValueError(f"a layer may not be named {ALL!r}: the name is reserved for all layers together")
        if not (0 <= start < end) or (n_columns is not None and end > n_columns):
            raise ValueError(f"layer {name!r} has columns [{start}, {end}) outside [0, {n_columns}) or empty")
        out[name] = (start, end)
    if not out:
        raise ValueError("the layer map is empty")
    return out


def _check_values(values: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (utterances x neurons), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if len(ids) != values.shape[0]:
        raise ValueError(f"values has {values.shape[0]} rows but there are {len(ids)} ids")
    return values


def _trial_rows(ids: Sequence[str], trials: Trials) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (T,), (T,) of each trial's enrolment and test utterance; missing ids are an error."""
    index: dict[str, int] = {}
    for i, x in enumerate(ids):
        key = str(x)
        if key in index:
            raise ValueError(f"utterance id {key!r} appears more than once in the features")
        index[key] = i
    missing: list[str] = []
    seen: set[str] = set()
    for x in (*trials.enrol, *trials.test):
        if x not in index and x not in seen:
            seen.add(x)
            missing.append(x)
    if missing:
        raise ValueError(
            f"{len(missing)} trial utterance id(s) are not in the features, e.g. {missing[:5]}"
            f" (features ids look like {[str(x) for x in list(ids)[:3]]})"
        )
    a = np.fromiter((index[x] for x in trials.enrol), dtype=np.int64, count=len(trials))
    b = np.fromiter((index[x] for x in trials.test), dtype=np.int64, count=len(trials))
    return a, b


def _dots_and_norms(values: np.ndarray, a: np.ndarray, b: np.ndarray, groups: list[np.ndarray | slice]) -> tuple[np.ndarray, np.ndarray]:
    """Per column group g: trial dot products (T, G) and squared row norms (N, G), in float64."""
    T, G = len(a), len(groups)
    dots = np.empty((T, G), dtype=np.float64)
    nsq = np.empty((values.shape[0], G), dtype=np.float64)
    for gi, cols in enumerate(groups):
        x = values[:, cols].astype(np.float64, copy=False)
        nsq[:, gi] = np.einsum("ij,ij->i", x, x)
    width = max(1, values.shape[1])
    chunk = max(1, _CHUNK_BYTES // (3 * 8 * width))
    for s in range(0, T, chunk):
        xa = values[a[s : s + chunk]].astype(np.float64, copy=False)
        xb = values[b[s : s + chunk]].astype(np.float64, copy=False)
        for gi, cols in enumerate(groups):
            dots[s : s + chunk, gi] = np.einsum("ij,ij->i", xa[:, cols], xb[:, cols])
    return dots, nsq


def _cosine(dot: np.ndarray, nsq_a: np.ndarray, nsq_b: np.ndarray, what: str) -> np.ndarray:
    denom = np.sqrt(nsq_a * nsq_b)
    zero = denom == 0
    if zero.any():
        logger.warning("%s: %d trial(s) involve an all-zero embedding; their cosine score is set to 0", what, int(zero.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(zero, 0.0, dot / np.where(zero, 1.0, denom))
    if np.isnan(out).any():
        raise ValueError(f"{what}: NaN scores for {int(np.isnan(out).sum())} trial(s); the features contain NaN or inf")
    return out


def cosine_scores(values: np.ndarray, ids: Sequence[str], trials: Trials, columns: slice | np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """Cosine similarity (T,) float64 of each trial's two rows of values (N, D), on the given columns only.

    Rows are length-normalised on the selected columns; an all-zero embedding scores 0.
    """
    values = _check_values(values, ids)
    cols: slice | np.ndarray = slice(None) if columns is None else (columns if isinstance(columns, slice) else np.asarray(columns, dtype=np.int64))
    a, b = _trial_rows(ids, trials)
    dots, nsq = _dots_and_norms(values, a, b, [cols])
    return _cosine(dots[:, 0], nsq[a, 0], nsq[b, 0], "cosine_scores")


def layer_scores(values: np.ndarray, ids: Sequence[str], layers: Any, trials: Trials, include_all: bool = True) -> dict[str, np.ndarray]:
    """Cosine scores (T,) for every layer of values (N, D), plus ALL (the concatenation of all layers).

    Each layer's embedding is length-normalised on its own columns; ALL normalises the concatenated
    vector as a whole (it is one embedding, as in the paper). One gather pass over the trials.
    """
    values = _check_values(values, ids)
    slices = _layer_slices(layers, values.shape[1])
    a, b = _trial_rows(ids, trials)
    names = list(slices)
    dots, nsq = _dots_and_norms(values, a, b, [slice(s, e) for s, e in slices.values()])
    out = {name: _cosine(dots[:, i], nsq[a, i], nsq[b, i], f"layer {name!r}") for i, name in enumerate(names)}
    if include_all:
        out[ALL] = _cosine(dots.sum(1), nsq[a].sum(1), nsq[b].sum(1), ALL)
    return out


# --------------------------------------------------------------------------------------------------
# Metrics


def _as_labels(labels: Any, what: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y
    if y.size and not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{what} must be bool or 0/1, got dtype {y.dtype}")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:5]
        raise ValueError(f"{what} must be bool or 0/1, found values {bad.tolist()}")
    return y.astype(bool)


def _split_sorted(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated target and non-target scores, each sorted ascending."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    y = _as_labels(labels)
    if len(y) != len(s):
        raise ValueError(f"scores and labels have different lengths: {len(s)} and {len(y)}")
    nan = np.isnan(s)
    if nan.any():
        raise ValueError(f"scores contain {int(nan.sum())} NaN value(s), first at index {int(np.flatnonzero(nan)[0])}")
    tar = np.sort(s[y])
    non = np.sort(s[~y])
    if len(tar) == 0:
        raise DataError(f"no target trials among {len(s)} (EER and minDCF need both kinds)")
    if len(non) == 0:
        raise DataError(f"no non-target trials among {len(s)} (EER and minDCF need both kinds)")
    return tar, non


def _errors_at(tar: np.ndarray, non: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of misses (targets < t) and false alarms (non-targets >= t) at sorted thresholds (K,)."""
    miss = np.searchsorted(tar, thresholds, side="left")
    fa = len(non) - np.searchsorted(non, thresholds, side="left")
    return miss, fa


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate, a fraction in [0, 1], of scores (T,) with labels (T,) (True/1 = target).

    Exact, in O(T log T): the distinct operating points (FAR, FRR) — one per distinct score, equal
    scores grouped, plus "reject all" — are joined by straight segments (equivalently, a tied group
    or the gap between two adjacent thresholds is decided at random), and the EER is where that
    curve crosses FAR = FRR. This is the linear interpolation of the ROC that s3prl solves with a root
    finder; it is invariant to the order of tied scores, 0 for separable scores and 0.5 for constant
    ones.
    """
    tar, non = _split_sorted(scores, labels)
    nt, nn = len(tar), len(non)
    # P: the last operating point with FRR < FAR; Q: the first with FRR >= FAR. The sign of
    # FRR - FAR is that of miss*nn - fa*nt (exact in integers) and rises with the threshold.
    p_thr, p_pt = -np.inf, (0, nn)  # below every score: accept all (never FRR >= FAR)
    q_thr, q_pt = np.inf, (nt, 0)  # reject all

    def point(t: float) -> tuple[int, int]:
        return int(np.searchsorted(tar, t, side="left")), nn - int(np.searchsorted(non, t, side="left"))

    for keys in (tar, non):
        # Bisection for the first key with FRR >= FAR: O(log^2 T) after the sorts, no T-sized temporaries.
        lo, hi = 0, len(keys)
        while lo < hi:
            mid = (lo + hi) // 2
            miss, fa = point(keys[mid])
            if miss * nn - fa * nt >= 0:
                hi = mid
            else:
                lo = mid + 1
        if lo > 0 and keys[lo - 1] >= p_thr:
            p_thr, p_pt = keys[lo - 1], point(keys[lo - 1])
        if lo < len(keys) and keys[lo] <= q_thr:
            q_thr, q_pt = keys[lo], point(keys[lo])
    # (FRR - FAR) * nt * nn at P (< 0) and Q (>= 0), exact integers; the crossing is a fraction alpha
    # of the way from P to Q.
    s_p = p_pt[0] * nn - p_pt[1] * nt
    s_q = q_pt[0] * nn - q_pt[1] * nt
    alpha = -s_p / (s_q - s_p)
    frr_p, frr_q = p_pt[0] / nt, q_pt[0] / nt
    return float(min(1.0, max(0.0, frr_p + alpha * (frr_q - frr_p))))


def min_dcf(scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost of scores (T,) with labels (T,), over every threshold.

    DCF(t) = c_miss * p_target * FRR(t) + c_fa * (1 - p_target) * FAR(t), minimised over all distinct
    operating points, divided by min(c_miss * p_target, c_fa * (1 - p_target)) — the cost of the best
    system that ignores the scores (NIST SRE and s3prl's normalisation; SpeechBrain's is unnormalised).
    In [0, 1]; O(T log T).
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    tar, non = _split_sorted(scores, labels)
    nt, nn = len(tar), len(non)
    w_miss, w_fa = c_miss * p_target / nt, c_fa * (1.0 - p_target) / nn
    best = min(c_miss * p_target, c_fa * (1.0 - p_target))  # reject all / accept all
    # The cost is minimal at an end of a run of constant misses (or false alarms), so the scores of
    # the smaller class are enough: thresholds at each target score, or just above each non-target.
    if nt <= nn:
        miss, fa = _errors_at(tar, non, tar)
    else:
        miss = np.searchsorted(tar, non, side="right")
        fa = nn - np.searchsorted(non, non, side="right")
    best = min(best, float((w_miss * miss + w_fa * fa).min()))
    return best / min(c_miss * p_target, c_fa * (1.0 - p_target))


def bootstrap_ci(
    scores: Any,
    labels: Any,
    metric: Literal["eer", "min_dcf"] | Callable[[np.ndarray, np.ndarray], float] = "eer",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **metric_kwargs: Any,
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of a metric over trials: scores (T,), labels (T,).

    Targets and non-targets are resampled separately with replacement (so every replicate has both
    and keeps the counts). Trials sharing utterances are not independent, so the interval is
    optimistic — a lower bound on the true uncertainty. Seeded.
    """
    fn: Callable[..., float]
    fn = {"eer": eer, "min_dcf": min_dcf}[metric] if isinstance(metric, str) else metric
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    tar, non = _split_sorted(scores, labels)
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(len(tar), bool), np.zeros(len(non), bool)]
    stats = np.empty(n_boot)
    for r in range(n_boot):
        s = np.r_[tar[rng.integers(0, len(tar), len(tar))], non[rng.integers(0, len(non), len(non))]]
        stats[r] = fn(s, y, **metric_kwargs)
    q = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [q, 1.0 - q])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------------
# Results


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts, tuples lists)."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))  # type: ignore[attr-defined]


def _pair(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


@dataclass
class LayerEER(_Serialisable):
    """EER and normalised minDCF of one layer (or ALL); eer_ci is the bootstrap interval if asked for."""

    name: str
    n_neurons: int
    eer: float
    min_dcf: float
    eer_ci: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerEER":
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["name"]), int(d["n_neurons"]), float(d["eer"]), float(d["min_dcf"]), _pair(d.get("eer_ci")))


@dataclass
class LayerwiseVerification(_Serialisable):
    """Layer-wise SV results (Figure 5): each recorded layer in map order, then ALL."""

    layers: list[LayerEER]
    best_layer: str  # the recorded layer (ALL excluded) of lowest EER, first on ties
    n_trials: int
    n_target: int
    n_nontarget: int
    p_target: float = 0.01
    c_miss: float = 1.0
    c_fa: float = 1.0

    def get(self, name: str) -> LayerEER:
        """The entry of one layer (or ALL) by name."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"no layer {name!r}; have {[e.name for e in self.layers]}")

    @property
    def eers(self) -> dict[str, float]:
        """EER per layer name, ALL included."""
        return {e.name: e.eer for e in self.layers}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerwiseVerification":
        """Inverse of :meth:`to_dict`."""
        return cls(
            [LayerEER.from_dict(e) for e in d["layers"]],
            str(d["best_layer"]),
            int(d["n_trials"]),
            int(d["n_target"]),
            int(d["n_nontarget"]),
            float(d.get("p_target", 0.01)),
            float(d.get("c_miss", 1.0)),
            float(d.get("c_fa", 1.0)),
        )


@dataclass
class NeuronSubsetEER(_Serialisable):
    """EER with the top / random / bottom N% neurons of a layer: means (and std) over runs."""

    percent: float
    n_neurons: int
    eer_top: float
    eer_random: float
    eer_bottom: float
    eer_top_std: float = 0.0
    eer_random_std: float = 0.0
    eer_bottom_std: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NeuronSubsetEER":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (int(v) if k == "n_neurons" else float(v)) for k, v in d.items()})


@dataclass
class NeuronVerification(_Serialisable):
    """Neuron-level SV (Table 4) on the best layer Lb; neuron indices are columns of the full values."""

    layer: str
    layer_start: int
    layer_end: int
    eer_layer: float  # EER(Lb) with all its neurons
    subsets: list[NeuronSubsetEER]
    tolerance: float
    minimal_percent: float | None  # smallest N% whose top-N% EER <= eer_layer + tolerance
    minimal_neurons: list[int]  # that set, in ranking order (first run), [] if none
    order: list[int]  # the first run's ranking of all Lb neurons, most important first
    n_probe_speakers: int
    n_probe_utterances: int
    probe_train_accuracy: float | None = None  # mean over runs, on the probe's own training set
    runs: int = 1
    seed: int = 0

    def subset(self, percent: float) -> NeuronSubsetEER:
        """The entry for one percentage."""
        for s in self.subsets:
            if s.percent == percent:
                return s
        raise KeyError(f"no subset for {percent}%; have {[s.percent for s in self.subsets]}")

    def table4_row(self) -> dict[str, Any]:
        """Table 4's columns: Lb, EER(Lb), Neu_t, EER_t, EER_r, EER_b (EERs in %; None if no minimal set)."""
        row: dict[str, Any] = {"Lb": self.layer, "EER(Lb)": 100 * self.eer_layer, "Neu_t": self.minimal_percent}
        if self.minimal_percent is None:
            row.update({"EER_t": None, "EER_r": None, "EER_b": None})
        else:
            s = self.subset(self.minimal_percent)
            row.update({"EER_t": 100 * s.eer_top, "EER_r": 100 * s.eer_random, "EER_b": 100 * s.eer_bottom})
        return row

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NeuronVerification":
        """Inverse of :meth:`to_dict`."""
        acc = d.get("probe_train_accuracy")
        mp = d.get("minimal_percent")
        return cls(
            str(d["layer"]),
            int(d["layer_start"]),
            int(d["layer_end"]),
            float(d["eer_layer"]),
            [NeuronSubsetEER.from_dict(s) for s in d["subsets"]],
            float(d["tolerance"]),
            None if mp is None else float(mp),
            [int(i) for i in d["minimal_neurons"]],
            [int(i) for i in d["order"]],
            int(d["n_probe_speakers"]),
            int(d["n_probe_utterances"]),
            None if acc is None else float(acc),
            int(d.get("runs", 1)),
            int(d.get("seed", 0)),
        )


@dataclass
class VerificationResult(_Serialisable):
    """Everything T2:SV reports for one trial list: layer-wise EERs and, if run, the neuron level."""

    layerwise: LayerwiseVerification
    neurons: NeuronVerification | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VerificationResult":
        """Inverse of :meth:`to_dict`."""
        n = d.get("neurons")
        return cls(LayerwiseVerification.from_dict(d["layerwise"]), None if n is None else NeuronVerification.from_dict(n))


# --------------------------------------------------------------------------------------------------
# Analyses


def layerwise_eer(
    values: np.ndarray,
    ids: Sequence[str],
    layers: Any,
    trials: Trials,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    n_boot: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> LayerwiseVerification:
    """EER and minDCF of cosine scoring for every layer of values (N, D) and for ALL (Figure 5).

    ``layers`` maps layer names to column ranges (start, end); ``n_boot > 0`` adds a bootstrap
    interval of each EER.
    """
    scores = layer_scores(values, ids, layers, trials)
    slices = _layer_slices(layers)
    sizes = {name: e - s for name, (s, e) in slices.items()}
    sizes[ALL] = sum(sizes.values())
    entries = []
    for name, sc in scores.items():
        ci = bootstrap_ci(sc, trials.target, "eer", n_boot, confidence, seed) if n_boot > 0 else None
        entries.append(LayerEER(name, sizes[name], eer(sc, trials.target), min_dcf(sc, trials.target, p_target, c_miss, c_fa), ci))
        logger.debug("layer %s: EER %.4f", name, entries[-1].eer)
    recorded = [e for e in entries if e.name != ALL]
    best = min(recorded, key=lambda e: e.eer).name  # min() keeps the first of equal EERs
    return LayerwiseVerification(entries, best, len(trials), trials.n_target, trials.n_nontarget, p_target, c_miss, c_fa)


def _default_probe_factory(seed: int) -> Any:
    """neurohook.LinearProbe seeded with ``seed``, when the package provides it."""
    import neurohook

    cls = getattr(neurohook, "LinearProbe", None)
    if cls is None:
        try:
            from neurohook.probe import LinearProbe as cls  # type: ignore[no-redef]
        except ImportError:
            cls = None
    if cls is None:
        raise ValueError(
            "no probe_factory given and neurohook.LinearProbe is not available; pass one, e.g. "
            "probe_factory=lambda seed: sklearn.linear_model.LogisticRegression(max_iter=500, random_state=seed)"
        )
    params = inspect.signature(cls).parameters
    for name in ("seed", "random_state"):
        if name in params:
            return cls(**{name: seed})
    return cls()


def _zscore(x: np.ndarray) -> np.ndarray:
    mu = x.mean(0)
    sd = x.std(0)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def neuron_eer(
    values: np.ndarray,
    ids: Sequence[str],
    layers: Any,
    trials: Trials,
    probe_values: np.ndarray,
    probe_speakers: Sequence[Any],
    *,
    probe_factory: Callable[[int], Any] | None = None,
    probe_ids: Sequence[str] | None = None,
    speakers: Mapping[str, Any] | None = None,
    layer: str | None = None,
    layerwise: LayerwiseVerification | None = None,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    tolerance: float = 0.01,
    runs: int = 1,
    seed: int = 0,
    standardize: bool = True,
    steps: Sequence[float] | None = None,
) -> NeuronVerification:
    """Table 4: EER on trials with the top / random / bottom N% neurons of the best layer Lb.

    values (N, D) / ids score the trials; probe_values (M, D) with probe_speakers (M,) — other
    speakers than the trials' — train the proxy speaker-identification probe on Lb's columns
    (z-normalised with their training statistics when ``standardize``, so |W| compares neurons on
    one scale). ``probe_factory(seed)`` returns an unfitted estimator with ``fit(X, y)`` and
    ``coef_`` (C, D_Lb), e.g. ``lambda seed: LogisticRegression(random_state=seed)``; the default is
    ``neurohook.LinearProbe``. Neurons are ranked by :func:`neurohook.ranking.neuron_ordering` of
    ``coef_`` and drawn with :func:`neurohook.ranking.select` (k = round(N% x D_Lb), at least 1).
    Lb is ``layer``, else the lowest-EER recorded layer of ``layerwise`` (computed if not given).
    The minimal set is the smallest N% whose top-N% EER is within ``tolerance`` (absolute, as a
    fraction: 0.01 = one EER point) of EER(Lb). ``runs`` repeats probe training and random draws
    with seeds seed, seed+1, ... and averages. ``probe_ids`` / ``speakers`` (trial id -> speaker)
    are optional: when given, utterances / speakers shared with the trials are an error.
    """
    values = _check_values(values, ids)
    probe_values = np.asarray(probe_values)
    if probe_values.ndim != 2 or probe_values.shape[1] != values.shape[1]:
        raise ValueError(f"probe_values must be (M, {values.shape[1]}) like values, got shape {probe_values.shape}")
    if len(probe_speakers) != probe_values.shape[0]:
        raise ValueError(f"probe_values has {probe_values.shape[0]} rows but there are {len(probe_speakers)} probe_speakers")
    if len(set(probe_speakers)) < 2:
        raise DataError("the proxy speaker-identification probe needs at least 2 speakers")
    if not np.isfinite(probe_values).all():
        raise ValueError("probe_values contain NaN or inf")
    if runs < 1:
        raise ValueError(f"runs must be positive, got {runs}")
    if not percentages or any(not 0 < p <= 100 for p in percentages):
        raise ValueError(f"percentages must be in (0, 100], got {list(percentages)}")
    used = set(trials.enrol) | set(trials.test)
    if probe_ids is not None:
        shared = sorted(used & {str(x) for x in probe_ids})
        if shared:
            raise ValueError(f"{len(shared)} utterance(s) both train the probe and appear in the trials, e.g. {shared[:5]}")
    if speakers is not None:
        trial_spk = {speakers[x] for x in used if x in speakers}
        shared_spk = sorted(map(str, trial_spk & set(probe_speakers)))
        if shared_spk:
            raise ValueError(f"the probe must be trained on other speakers than the trials'; shared: {shared_spk[:5]}")
    slices = _layer_slices(layers, values.shape[1])
    if layer is None:
        if layerwise is None:
            layerwise = layerwise_eer(values, ids, slices, trials)
        layer = layerwise.best_layer
    if layer not in slices:
        raise ValueError(f"unknown layer {layer!r}; layers are {list(slices)}")
    start, end = slices[layer]
    width = end - start
    a, b = _trial_rows(ids, trials)
    lb = np.ascontiguousarray(values[:, start:end])

    def eer_on(cols: np.ndarray | slice) -> float:
        dots, nsq = _dots_and_norms(lb, a, b, [cols])
        return eer(_cosine(dots[:, 0], nsq[a, 0], nsq[b, 0], f"layer {layer!r} subset"), trials.target)

    eer_layer = eer_on(slice(None))
    factory = probe_factory or _default_probe_factory
    x_train = probe_values[:, start:end].astype(np.float64)
    if standardize:
        x_train = _zscore(x_train)
    y_train = np.asarray([str(s) for s in probe_speakers])
    ks = [max(1, int(round(p * width / 100.0))) for p in percentages]
    top = np.empty((runs, len(ks)))
    rnd = np.empty((runs, len(ks)))
    bot = np.empty((runs, len(ks)))
    accs: list[float] = []
    orders: list[np.ndarray] = []
    for r in range(runs):
        probe = factory(seed + r)
        probe.fit(x_train, y_train)
        if hasattr(probe, "score"):
            accs.append(float(probe.score(x_train, y_train)))
        W = np.ascontiguousarray(np.asarray(probe.coef_, dtype=np.float64))
        if W.ndim != 2 or W.shape[1] != width:
            raise ValueError(f"the probe's coef_ must be (C, {width}), got shape {W.shape}")
        order = ranking.neuron_ordering(W, steps).order
        orders.append(order)
        for i, k in enumerate(ks):
            top[r, i] = eer_on(ranking.select(order, k, "top"))
            rnd[r, i] = eer_on(ranking.select(order, k, "random", seed=seed + r))
            bot[r, i] = eer_on(ranking.select(order, k, "bottom"))
    subsets = [
        NeuronSubsetEER(
            float(p), k,
            float(top[:, i].mean()), float(rnd[:, i].mean()), float(bot[:, i].mean()),
            float(top[:, i].std()), float(rnd[:, i].std()), float(bot[:, i].std()),
        )
        for i, (p, k) in enumerate(zip(percentages, ks))
    ]
    minimal = next((s for s in sorted(subsets, key=lambda s: s.percent) if s.eer_top <= eer_layer + tolerance), None)
    minimal_neurons = [] if minimal is None else (start + ranking.select(orders[0], minimal.n_neurons, "top")).tolist()
    logger.info(
        "layer %s: EER %.4f with all %d neurons; minimal set %s",
        layer, eer_layer, width, "none" if minimal is None else f"{minimal.percent}% (EER {minimal.eer_top:.4f})",
    )
    return NeuronVerification(
        layer, start, end, eer_layer, subsets, float(tolerance),
        None if minimal is None else minimal.percent, minimal_neurons, (start + orders[0]).tolist(),
        len(set(probe_speakers)), int(probe_values.shape[0]),
        float(np.mean(accs)) if accs else None, runs, seed,
    )


def _unpack(features: Any) -> tuple[np.ndarray, list[str], Any]:
    try:
        return np.asarray(features.values), [str(x) for x in features.ids], features.layers
    except AttributeError as exc:
        raise TypeError(f"expected a Features-like object with .values, .ids and .layers, got {type(features).__name__}") from exc


def features_layerwise_eer(features: Any, trials: Trials, **kwargs: Any) -> LayerwiseVerification:
    """:func:`layerwise_eer` on any object with ``.values`` (N, D), ``.ids`` and ``.layers``."""
    values, ids, layers = _unpack(features)
    return layerwise_eer(values, ids, layers, trials, **kwargs)


def features_neuron_eer(features: Any, trials: Trials, probe_features: Any, probe_speakers: Sequence[Any], **kwargs: Any) -> NeuronVerification:
    """:func:`neuron_eer` on Features-like objects: the trials' features and the probe's (same layers)."""
    values, ids, layers = _unpack(features)
    pvalues, pids, _ = _unpack(probe_features)
    kwargs.setdefault("probe_ids", pids)
    return neuron_eer(values, ids, layers, trials, pvalues, probe_speakers, **kwargs)


def evaluate(
    features: Any,
    trials: Trials,
    *,
    probe_features: Any | None = None,
    probe_speakers: Sequence[Any] | None = None,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    n_boot: int = 0,
    seed: int = 0,
    **neuron_kwargs: Any,
) -> VerificationResult:
    """Task T2:SV on a Features-like object: layer-wise EER, then Table 4 when probe features are given."""
    lw = features_layerwise_eer(features, trials, p_target=p_target, c_miss=c_miss, c_fa=c_fa, n_boot=n_boot, seed=seed)
    nv = None
    if probe_features is not None:
        if probe_speakers is None:
            raise ValueError("probe_features needs probe_speakers")
        nv = features_neuron_eer(features, trials, probe_features, probe_speakers, layerwise=lw, seed=seed, **neuron_kwargs)
    return VerificationResult(lw, nv)
