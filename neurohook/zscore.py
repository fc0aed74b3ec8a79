"""Z-normalisation of feature columns, in one place: the statistics and the map.

Probes rank neurons by ``|coef_|``, so every column is put on one scale first: mean 0 and (population)
standard deviation 1 over the training rows. A constant column keeps scale 1 (it stays constant, 0).

Example::

    mean, scale = column_stats(X_train)            # (D,), (D,) float64
    Z = standardize(X_test, mean, scale)           # (N, D) float32, C-contiguous
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from neurohook import _core

__all__ = ["column_stats", "mean_std", "row_blocks", "standardize", "streamed_stats", "take", "take_rows"]

CHUNK = 512  # rows per block when statistics are streamed


def column_stats(X: Any, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and scale (D,) float64 of the columns of X (N, D) (of its rows ``rows``, default all);
    scale is the std, 1 where it is 0.

    X is an array or features read on demand (``X.column_stats()``, e.g. ShardedFeatures, streamed).
    Arrays and row subsets: :func:`mean_std`, never a float64 copy of X.
    """
    if rows is None and hasattr(X, "column_stats"):  # a FeatureSource: in memory, or streamed over shards
        mean, scale = (np.array(v, dtype=np.float64) for v in X.column_stats())
    else:
        mean, scale = mean_std(X, rows)
    scale[scale == 0] = 1.0
    return mean, scale


def mean_std(X: Any, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and population std (D,) float64 of the rows ``rows`` (default all) of X (N, D).

    A float32 array (or Features) with contiguous rows: one pass of the compiled kernel (float64 sums of
    the values shifted by one row); anything else, or values holding NaN or Inf (the error names the
    row): :func:`streamed_stats` over blocks of :data:`CHUNK` rows.
    """
    values = X.values if hasattr(X, "values") and not isinstance(X, np.ndarray) else X
    index = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(index) and _rows_contiguous(values) and values.dtype == np.float32:
        mean, m2 = _core.column_moments(values, index)
        if np.isfinite(mean).all() and np.isfinite(m2).all():
            return mean, np.sqrt(m2 / len(index))
    return streamed_stats(row_blocks(X, rows), _ids(X), X.shape[1])


def row_blocks(X: Any, rows: np.ndarray | None = None):
    """(row indices (n,), values (n, D)) of X's rows ``rows`` (default all) in blocks of :data:`CHUNK` rows."""
    rows = np.arange(len(X)) if rows is None else np.asarray(rows)
    for a in range(0, len(rows), CHUNK):
        yield rows[a : a + CHUNK], take_rows(X, rows[a : a + CHUNK])


def take_rows(X: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of X (N, D): an array, Features (``.values``) or features read on demand (``.rows``)."""
    if hasattr(X, "values") and not isinstance(X, np.ndarray):
        X = X.values
    if hasattr(X, "rows"):
        return X.rows(rows)
    return take(np.asarray(X), rows)


def take(X: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None,
         out: np.ndarray | None = None) -> np.ndarray:
    """``X[rows][:, cols]`` (rows and cols default all) as a C-ordered array (``out`` when given, of its
    shape and X's dtype); float32 arrays are copied by the compiled kernel (every core, no intermediate
    copy), bit for bit."""
    shape = (len(X) if rows is None else len(rows), X.shape[1] if cols is None else len(cols))
    if out is not None and (out.shape != shape or out.dtype != X.dtype or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous {X.dtype} array of shape {shape}, got {out.dtype} {out.shape}")
    if not (_rows_contiguous(X) and X.dtype == np.float32):
        block = X if rows is None else X[rows]
        block = block if cols is None else block[:, cols]
        if out is None:
            return np.ascontiguousarray(block)
        out[...] = block
        return out
    none, one = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)  # ((x - 0) - 0) * 1 == x exactly
    out = np.empty(shape, dtype=np.float32) if out is None else out
    index = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    _core.standardize_rows(X, index, None if cols is None else np.asarray(cols, dtype=np.int64), none, none, one, out)
    return out


def _ids(X: Any) -> Sequence[Any]:
    """What names a row in errors: the features' ids, else the row numbers."""
    return X.ids if hasattr(X, "ids") else range(len(X))


def streamed_stats(blocks: Iterable[tuple[np.ndarray, Any]], ids: Sequence[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and population std (D,) float64 over blocks of (row indices (n,), values (n, D)), D = width.

    Blocks' means and squared deviations are merged (Chan et al.), one float64 block in memory at a
    time; a NaN or Inf raises ValueError naming its row, its id (``ids[row]``) and column. No rows: zeros.
    """
    count, mean, m2 = 0, np.zeros(width), np.zeros(width)
    for index, values in blocks:
        n, block_mean, block_m2 = _block_moments(index, values, ids)
        delta = block_mean - mean
        mean = mean + delta * n / (count + n)
        m2 = m2 + block_m2 + np.square(delta) * count * n / (count + n)
        count += n
    return mean, np.sqrt(m2 / max(count, 1))


def _block_moments(index: np.ndarray, values: Any, ids: Sequence[Any]) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows, mean (D,), sum of squared deviations (D,)) float64 of one block; NaN or Inf: ValueError."""
    if len(index) and _rows_contiguous(values) and values.dtype == np.float32:  # the compiled kernel
        block_mean, m2 = _core.column_moments(values, np.arange(len(values)))
        if np.isfinite(block_mean).all() and np.isfinite(m2).all():
            return len(values), block_mean, m2
    block = np.array(values, dtype=np.float64)
    if not np.isfinite(block).all():
        r, col = np.argwhere(~np.isfinite(block))[0]
        row = int(index[r])
        raise ValueError(f"features hold NaN or Inf at row {row} ({ids[row]!r}), column {col}")
    block_mean = block.mean(axis=0)
    block -= block_mean  # in place
    return len(block), block_mean, np.square(block, out=block).sum(axis=0)


def standardize(X: Any, mean: np.ndarray, scale: np.ndarray, dtype: Any = np.float32,
                rows: np.ndarray | None = None, cols: np.ndarray | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """``(X[rows][:, cols] - mean) / scale`` for X (N, D) (rows and cols default all; mean and scale are
    those of the selected columns) as a C-contiguous (n, d) array of ``dtype`` (into ``out`` when given,
    e.g. a reused buffer).

    Computed in ``dtype`` in blocks of :data:`CHUNK` rows written into the output, the only full-size
    array. The float64 mean is subtracted as two ``dtype`` parts (its rounding, then the rest), so a
    column whose mean is large beside its spread loses no more than float64 arithmetic rounded to
    ``dtype`` would: ``x - hi`` is exact for x near the mean (Sterbenz), ``lo`` restores the remainder.
    """
    if hasattr(X, "values") and not isinstance(X, np.ndarray):
        X = X.values  # Features: its array
    elif not hasattr(X, "rows"):
        X = np.asarray(X)
    n = len(X) if rows is None else len(rows)
    shape = (n, X.shape[1] if cols is None else len(cols))
    dt = np.dtype(dtype)
    if out is None:
        out = np.empty(shape, dtype=dt)
    elif out.shape != shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dt} array of shape {shape}, got {out.dtype} {out.shape}")
    hi = np.asarray(mean).astype(dt)
    parts = [hi, (np.asarray(mean, np.float64) - hi).astype(dt), (1.0 / np.asarray(scale, np.float64)).astype(dt)]
    if dt == np.float32 and (hasattr(X, "rows") or (_rows_contiguous(X) and X.dtype == dt)):
        index = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        cols = None if cols is None else np.asarray(cols, dtype=np.int64)
        if not hasattr(X, "rows"):  # the compiled one-pass kernel
            _core.standardize_rows(X, index, cols, *parts, out)
            return out
        for a in range(0, n, CHUNK):  # features read on demand: raw rows, then the kernel on them
            raw = np.ascontiguousarray(X.rows(index[a : a + CHUNK]), dtype=np.float32)
            _core.standardize_rows(raw, np.arange(len(raw)), cols, *parts, out[a : a + CHUNK])
        return out
    parts = [torch.from_numpy(v) for v in parts]
    Xt, Ot = _tensor(X), torch.from_numpy(out)
    index = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
    for a in range(0, n, CHUNK):  # torch: the gather and arithmetic use every core
        o = Ot[a : a + CHUNK]
        torch.sub(_raw_rows(X, Xt, a, len(o), index, cols, o), parts[0], out=o)
        o.sub_(parts[1]).mul_(parts[2])
    return out


def _rows_contiguous(X: Any) -> bool:
    """X is a 2-D array whose rows are contiguous: C order, or a column slice of a C-order matrix."""
    return (isinstance(X, np.ndarray) and X.ndim == 2 and (X.shape[1] <= 1 or X.strides[1] == X.itemsize)
            and X.strides[0] >= X.itemsize * X.shape[1] and X.strides[0] % X.itemsize == 0)


def _tensor(X: Any) -> torch.Tensor | None:
    """X as a tensor sharing its memory (an array of floats), else None (features read on demand)."""
    if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or any(st < 0 for st in X.strides):
        return None
    with warnings.catch_warnings():  # read-only arrays (memory-mapped features) are only read here
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(X)


def _raw_rows(X: Any, Xt: torch.Tensor | None, a: int, n: int, index: torch.Tensor | None, cols: np.ndarray | None,
              buffer: torch.Tensor) -> torch.Tensor:
    """The raw values of output rows [a, a + n) of :func:`standardize`: a view of X, or its rows gathered
    (into ``buffer`` where X is a tensor of its dtype: no temporary)."""
    if Xt is not None:
        if index is None:
            block = Xt[a : a + n]
        elif cols is None and Xt.dtype == buffer.dtype:
            return torch.index_select(Xt, 0, index[a : a + n], out=buffer)
        else:
            block = Xt[index[a : a + n]]
        return block if cols is None else block[:, torch.from_numpy(np.asarray(cols, dtype=np.int64))]
    block = take_rows(X, np.arange(a, a + n) if index is None else index[a : a + n].numpy())
    block = np.asarray(block) if cols is None else np.asarray(block)[:, cols]
    return torch.from_numpy(np.ascontiguousarray(block))
