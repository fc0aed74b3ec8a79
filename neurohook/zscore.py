"""Z-normalisation of feature columns, in one place: the statistics and the map.

Probes rank neurons by ``|coef_|``, so every column is put on one scale first: mean 0 and (population)
standard deviation 1 over the training rows. A constant column keeps scale 1 (it stays constant, 0).

Example::

    mean, scale = column_stats(X_train)            # (D,), (D,) float64
    Z = standardize(X_test, mean, scale)           # (N, D) float32, C-contiguous
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["column_stats", "row_blocks", "standardize", "streamed_stats", "take_rows"]

CHUNK = 512  # rows per block when statistics are streamed


def column_stats(X: Any, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and scale (D,) float64 of the columns of X (N, D) (of its rows ``rows``, default all);
    scale is the std, 1 where it is 0.

    X is an array or features read on demand (``X.column_stats()``, e.g. ShardedFeatures, streamed).
    Arrays and row subsets are streamed in blocks of :data:`CHUNK` rows (:func:`streamed_stats`): one
    float64 block in memory, never a float64 copy of X.
    """
    if rows is None and hasattr(X, "column_stats"):  # a FeatureSource: in memory, or streamed over shards
        mean, scale = (np.array(v, dtype=np.float64) for v in X.column_stats())
    else:
        mean, scale = streamed_stats(row_blocks(X, rows), _ids(X), X.shape[1])
    scale[scale == 0] = 1.0
    return mean, scale


def row_blocks(X: Any, rows: np.ndarray | None = None):
    """(row indices (n,), values (n, D)) of X's rows ``rows`` (default all) in blocks of :data:`CHUNK` rows."""
    rows = np.arange(len(X)) if rows is None else np.asarray(rows)
    for a in range(0, len(rows), CHUNK):
        yield rows[a : a + CHUNK], take_rows(X, rows[a : a + CHUNK])


def take_rows(X: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of X (N, D): an array, Features (``.values``) or features read on demand (``.rows``)."""
    if hasattr(X, "values") and not isinstance(X, np.ndarray):
        return X.values[rows]
    return X.rows(rows) if hasattr(X, "rows") else np.asarray(X)[rows]


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
        block = np.array(values, dtype=np.float64)
        if not np.isfinite(block).all():
            r, col = np.argwhere(~np.isfinite(block))[0]
            row = int(index[r])
            raise ValueError(f"features hold NaN or Inf at row {row} ({ids[row]!r}), column {col}")
        n, block_mean = len(block), block.mean(axis=0)
        delta = block_mean - mean
        mean = mean + delta * n / (count + n)
        block -= block_mean  # in place
        m2 = m2 + np.square(block, out=block).sum(axis=0) + np.square(delta) * count * n / (count + n)
        count += n
    return mean, np.sqrt(m2 / max(count, 1))


def standardize(X: Any, mean: np.ndarray, scale: np.ndarray, dtype: Any = np.float32,
                rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """``(X[rows][:, cols] - mean) / scale`` for X (N, D) (rows and cols default all; mean and scale are
    those of the selected columns) as a C-contiguous (n, d) array of ``dtype``.

    Computed in float64 blocks of :data:`CHUNK` rows written into the output: the output is the only
    full-size array (no float64 copy, no copy of the selected rows or columns).
    """
    if not hasattr(X, "rows") and not hasattr(X, "values"):
        X = np.asarray(X)
    n = len(X) if rows is None else len(rows)
    out = np.empty((n, X.shape[1] if cols is None else len(cols)), dtype=dtype)
    for a in range(0, n, CHUNK):
        if rows is None:
            block = X[a : a + CHUNK] if isinstance(X, np.ndarray) else take_rows(X, np.arange(a, min(a + CHUNK, n)))
        else:
            block = take_rows(X, rows[a : a + CHUNK])
        z = np.subtract(block if cols is None else block[:, cols], mean, dtype=np.float64)
        z /= scale
        out[a : a + CHUNK] = z
    return out
