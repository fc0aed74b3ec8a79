"""Cosine scoring of trials, vectorised over all trials, for every layer and for ALL (all layers as one vector)."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from neurohook.verification.constants import ALL, _CHUNK_BYTES
from neurohook.verification.trials import Trials

__all__ = ["cosine_scores", "layer_scores"]

logger = logging.getLogger(__name__)


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
