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

__all__ = ["column_stats", "standardize", "streamed_stats"]

CHUNK = 512  # rows per block when statistics are streamed


def column_stats(X: Any, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and scale (D,) float64 of the columns of X (N, D) (of its rows ``rows``, default all);
    scale is the std, 1 where it is 0.

    X is an array or features read on demand (``X.column_stats()``, e.g. ShardedFeatures, streamed;
    a subset of their rows is streamed with :func:`streamed_stats`).
    """
    if rows is not None and hasattr(X, "rows") and not hasattr(X, "values"):  # a subset, read on demand
        rows = np.asarray(rows)
        mean, scale = streamed_stats(((rows[a : a + CHUNK], X.rows(rows[a : a + CHUNK]))
                                      for a in range(0, len(rows), CHUNK)), X.ids, X.shape[1])
    elif rows is not None:
        return column_stats(np.asarray(X.values if hasattr(X, "values") else X)[rows])
    elif hasattr(X, "column_stats"):  # a FeatureSource: in memory, or streamed over shards
        mean, scale = (np.array(v, dtype=np.float64) for v in X.column_stats())
    else:
        X = np.asarray(X)
        mean, scale = X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    return mean, scale


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


def standardize(X: Any, mean: np.ndarray, scale: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """``(X - mean) / scale`` for X (N, D) as a C-contiguous array of ``dtype`` (one float64 temporary)."""
    out = np.subtract(np.asarray(X), mean, dtype=np.float64)
    out /= scale
    return np.ascontiguousarray(out, dtype=dtype)
