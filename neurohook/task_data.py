"""One task's rows for :func:`neurohook.analysis.analyze`: labels aligned with the features' ids,
unlabelled utterances left out, each layer's columns made contiguous, checked features, constant neurons.

Example::

    d = task_data(features, labels, "GC", speakers, None, None)
    d.X.shape, d.names, d.sizes, int(d.constant.sum())     # (n, D), layer names, widths, dead neurons
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook.errors import DataError
from neurohook.features import FeatureSource, Features, LayerSpan
from neurohook.zscore import row_blocks, streamed_stats, take_rows

__all__ = ["TaskData", "task_data"]


class SelectedRows:
    """Rows ``rows`` and columns ``cols`` of features read on demand (e.g. ShardedFeatures), themselves
    read on demand: what :func:`task_data` gives the study in place of a copy when the values are not in
    memory. A :class:`~neurohook.features.FeatureSource`; ``layers`` are the spans in the new column order.
    """

    def __init__(self, source: FeatureSource, rows: np.ndarray, cols: np.ndarray, layers: Sequence[LayerSpan]) -> None:
        self.source, self.kept, self.cols = source, np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        self.ids = [source.ids[r] for r in self.kept]
        self.layers = tuple(layers)
        self._in_order = bool(np.array_equal(self.cols, np.arange(source.shape[1])))  # no column gather needed

    @property
    def shape(self) -> tuple[int, int]:
        """(rows kept, columns kept)."""
        return len(self.kept), len(self.cols)

    def __len__(self) -> int:
        return len(self.kept)

    @property
    def layer_names(self) -> list[str]:
        """Layer names in column order."""
        return [s.name for s in self.layers]

    def columns(self, layer: str) -> np.ndarray:
        """Column indices (k,) of one layer."""
        return np.concatenate([np.arange(s.start, s.end) for s in self.layers if s.name == layer])

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Values (len(index), D) float32 of the given rows, read from the source."""
        block = self.source.rows(self.kept[np.asarray(index, dtype=np.int64)])
        return block if self._in_order else block[:, self.cols]

    def column_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and population std (D,) float64 of every column, streamed in row blocks."""
        return streamed_stats(row_blocks(self), self.ids, self.shape[1])


def _layer_blocks(features: Features) -> tuple[np.ndarray, list[str], list[int]]:
    """Column permutation that makes each layer contiguous (in layer order), layer names and sizes."""
    names = list(features.layer_names)
    cols = [np.asarray(features.columns(n)) for n in names]
    return np.concatenate(cols), names, [len(c) for c in cols]


def _aligned_labels(features: Features, labels: Any, what: str) -> np.ndarray:
    """Labels (N,) aligned with features.ids from an array (N,) or a mapping id -> label (None: missing)."""
    if isinstance(labels, Mapping):
        return np.array([labels.get(u) for u in features.ids], dtype=object)
    arr = np.asarray(labels, dtype=object)
    if arr.shape != (len(features.ids),):
        raise DataError(f"{what} has shape {arr.shape} but the features hold {len(features.ids)} utterances")
    return arr


def _check_finite(X: Any, ids: Sequence[Any], what: str) -> None:
    """DataError naming the first utterances whose features hold NaN or Inf (checked in row blocks)."""
    bad = np.concatenate([~np.isfinite(block).all(axis=1) for _, block in row_blocks(X)])
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"{what} of {len(rows)} utterance(s) hold NaN or Inf, e.g. {[ids[r] for r in rows[:5]]}")


def _fixed_split(features: Features, split: Any, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices among the labelled rows from a per-utterance "train" / "test" side."""
    side = _aligned_labels(features, split, "split")[keep]
    bad = sorted({str(v) for v in side} - {"train", "test"})
    if bad:
        raise DataError(f"split: every labelled utterance needs 'train' or 'test', found {bad[:5]}")
    return np.flatnonzero(side == "train"), np.flatnonzero(side == "test")


def _clean(values: np.ndarray) -> np.ndarray:
    """Labels as strings when they are not all numbers, so mixed types sort and compare."""
    if all(isinstance(v, (int, np.integer)) for v in values):
        return values.astype(np.int64)
    return values.astype(str)


def _gather(features: Any, rows: np.ndarray, columns: np.ndarray) -> Any:
    """``values[rows][:, columns]`` in one copy (none when both select everything in order): at paper
    scale (40,000 x 11,100 float32, 1.8 GB) a second temporary copy would set the peak memory. Features
    read on demand stay on demand (:class:`SelectedRows`)."""
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows
    if not isinstance(features, (Features, np.ndarray)):
        spans, start = [], 0
        for name in features.layer_names:
            width = len(features.columns(name))
            first = next(s for s in features.layers if s.name == name)
            spans.append(LayerSpan(name, start, start + width, first.pooling, first.statistics))
            start += width
        return SelectedRows(features, rows, columns, spans)
    values = features if isinstance(features, np.ndarray) else np.asarray(features.values)
    every_row = len(rows) == len(values) and bool((rows == np.arange(len(values))).all())
    every_col = len(columns) == values.shape[1] and bool((columns == np.arange(values.shape[1])).all())
    if every_row and every_col:
        return values
    if every_row:
        return values[:, columns]
    if every_col:
        return values[rows]
    return values[np.ix_(rows, columns)]


@dataclass
class TaskData:
    """One task's labelled rows: features X (n, D) with each layer's columns contiguous, labels, groups."""

    X: Any  # an array, or SelectedRows of features read on demand
    y: np.ndarray
    speakers: np.ndarray | None
    X_rinit: Any
    perm: np.ndarray  # column of the features behind each column of X
    names: list[str]
    sizes: list[int]
    fixed: tuple[np.ndarray, np.ndarray] | None  # a given (train, test) split
    constant: np.ndarray  # (D,) bool: the neuron takes one value on every labelled utterance (dead)


def task_data(features: FeatureSource, labels: Any, task: str, speakers: Any, rinit_features: FeatureSource | None,
              split: Any) -> TaskData:
    """Labels aligned with features.ids (unlabelled utterances left out), finite features, R.INIT rows."""
    y_all = _aligned_labels(features, labels, "labels")
    keep = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in y_all])
    if keep.sum() == 0:
        raise DataError(f"task {task!r}: no utterance of the features has a label (features ids look like "
                        f"{list(features.ids[:2])}; are the labels keyed by other ids?)")
    kept_ids = [u for u, k in zip(features.ids, keep) if k]
    perm, names, sizes = _layer_blocks(features)
    X = _gather(features, keep, perm)
    _check_finite(X, kept_ids, "features")
    X_rinit = None
    if rinit_features is not None:
        pos = {u: i for i, u in enumerate(rinit_features.ids)}
        missing = [u for u in kept_ids if u not in pos]
        if missing:
            raise DataError(f"R.INIT features lack {len(missing)} utterance(s), e.g. {missing[:3]}")
        rows = [pos[u] for u in kept_ids]
        X_rinit = _gather(rinit_features, np.asarray(rows, dtype=np.int64), _layer_blocks(rinit_features)[0])
        _check_finite(X_rinit, [rinit_features.ids[r] for r in rows], "R.INIT features")
    spk = None if speakers is None else _aligned_labels(features, speakers, "speakers")[keep].astype(str)
    fixed = None if split is None else _fixed_split(features, split, keep)
    constant = np.ones(X.shape[1], dtype=bool)  # dead or constant neurons: no probe can use them
    first = take_rows(X, np.arange(1))
    for _, block in row_blocks(X):
        constant &= (block == first).all(axis=0)
    return TaskData(X, _clean(y_all[keep]), spk, X_rinit, perm, names, sizes, fixed, constant)
