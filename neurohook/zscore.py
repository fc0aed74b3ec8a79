"""Z-normalisation of feature columns, in one place: the statistics and the map.

Probes rank neurons by ``|coef_|``, so every column is put on one scale first: mean 0 and (population)
standard deviation 1 over the training rows. A constant column keeps scale 1 (it stays constant, 0).

Example::

    mean, scale = column_stats(X_train)            # (D,), (D,) float64
    Z = standardize(X_test, mean, scale)           # (N, D) float32, C-contiguous
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["column_stats", "standardize"]


def column_stats(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and scale (D,) float64 of the columns of X (N, D); scale is the std, 1 where it is 0.

    X is an array or features read on demand (``X.column_stats()``, e.g. ShardedFeatures, streamed).
    """
    if hasattr(X, "column_stats"):  # a FeatureSource: in memory, or streamed over shards
        mean, scale = (np.array(v, dtype=np.float64) for v in X.column_stats())
    else:
        X = np.asarray(X)
        mean, scale = X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    return mean, scale


def standardize(X: Any, mean: np.ndarray, scale: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """``(X - mean) / scale`` for X (N, D) as a C-contiguous array of ``dtype``."""
    return np.ascontiguousarray((np.asarray(X) - mean) / scale, dtype=dtype)
