"""Neuron ranking, cumulative-mass selection and masked re-scoring (the paper's sections 3.3-3.3.2).

Thin typed wrappers over the compiled kernels in ``neurohook._core``. Arrays are checked, not
converted: float inputs must be float32 or float64 and C-contiguous (``X``, ``W`` and ``b`` in one
dtype), index and label arrays any integer dtype. Errors name the argument and its shape.

Conventions
-----------
* ``W`` is a probe's weight matrix, shape ``(C, D)`` (a binary probe may have ``(1, D)``): one row
  per class, one column per neuron. Importance is ``|W[c, d]|``, so the features the probe was
  trained on should share one scale (``LinearProbe`` z-normalises them).
* Sorting is by ``|W[c]|`` with ties broken by neuron index, so every result is deterministic and
  identical across runs and thread counts.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple, Sequence

import numpy as np

from neurohook.errors import ConfigError

try:
    from neurohook import _core
except ImportError as error:  # the source tree is imported instead of the installed package
    import os as _os

    raise ImportError(
        f"neurohook's compiled core (neurohook._core) is missing from {_os.path.dirname(__file__)}: this is the "
        "source tree, not an installed build. Install with `pip install .` (or `pip install -e .` for development) "
        "and run from outside the source folder, e.g. `pytest` rather than `python -m pytest`."
    ) from error

__all__ = [
    "rank_per_class",
    "top_neurons",
    "bottom_neurons",
    "neuron_ordering",
    "select",
    "masked_accuracy",
    "prefix_accuracy",
    "layer_distribution",
    "set_num_threads",
    "get_num_threads",
    "MAX_THREADS",
    "TopNeurons",
    "Ordering",
    "LayerDistribution",
]


class TopNeurons(NamedTuple):
    """Neurons selected by cumulative weight mass: their union (ascending) and each class's list."""

    neurons: np.ndarray  # (K,) int64, sorted ascending
    per_class: list[np.ndarray]  # C arrays of int64, each in ranked order


class Ordering(NamedTuple):
    """A ranking of all D neurons and the ordering's length after each mass step."""

    order: np.ndarray  # (D,) int64 permutation, most important first
    cutoffs: np.ndarray  # (S,) int64, neurons selected once step s is reached


class LayerDistribution(NamedTuple):
    """How a neuron set spreads over layers (the paper's Tables 5-7)."""

    counts: np.ndarray  # (L,) int64 neurons of the set in each layer
    share_of_network: np.ndarray  # (L,) counts / total neurons of all layers (the tables' %)
    share_of_layer: np.ndarray  # (L,) counts / the layer's own size


def rank_per_class(W: np.ndarray) -> np.ndarray:
    """Per class, neuron indices by |W[c]| descending, ties by index. W: (C, D) -> (C, D) int64."""
    return _core.rank_per_class(W)


def top_neurons(W: np.ndarray, p: float) -> TopNeurons:
    """Per class, the shortest |w|-descending prefix holding p of the class's mass (Algorithm 1).

    The neuron whose weight crosses ``p * mass`` is included, so ``p = 0`` still yields each class's
    top neuron and ``p = 1`` stops at the last non-zero weight. W: (C, D); p in [0, 1].
    """
    neurons, per_class = _core.top_neurons(W, float(p))
    return TopNeurons(neurons, per_class)


def bottom_neurons(W: np.ndarray, p: float) -> TopNeurons:
    """As :func:`top_neurons` on the ascending order of |w|: the least important neurons. W: (C, D)."""
    neurons, per_class = _core.bottom_neurons(W, float(p))
    return TopNeurons(neurons, per_class)


def neuron_ordering(W: np.ndarray, steps: Sequence[float] | np.ndarray | None = None) -> Ordering:
    """Rank all D neurons by the mass threshold p at which :func:`top_neurons` first selects them.

    ``steps`` is any strictly increasing schedule of p in [0, 1] (default: 0, 0.01, ..., 1 as
    NeuroX; the paper starts at 0.001). Inside one step neurons are ordered by their largest
    class-normalised |w| (then index); neurons no step selects (zero weights, or below float
    resolution) come last, so the order is always a permutation of all D neurons. W: (C, D).
    """
    order, cutoffs = _core.neuron_ordering(W, None if steps is None else np.asarray(steps, dtype=np.float64))
    return Ordering(order, cutoffs)


def select(
    order: np.ndarray,
    k: int,
    how: Literal["top", "bottom", "random"] = "top",
    seed: int | None = None,
) -> np.ndarray:
    """Exactly k neurons of a ranking: its first k, its last k, or k drawn at random (seeded).

    Returns the chosen indices as a subsequence of ``order`` (ranking order preserved). order: (D,).
    """
    order = np.asarray(order)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(f"order must be a 1-D integer array, got {order.dtype} with shape {order.shape}")
    D = order.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= D:
        raise ValueError(f"k must be an integer in [0, {D}] for an order of {D} neurons, got {k!r}")
    if how == "top":
        return order[:k].copy()
    if how == "bottom":
        return order[D - k :].copy()
    if how == "random":
        positions = np.sort(np.random.default_rng(seed).choice(D, size=k, replace=False))
        return order[positions]
    raise ValueError(f"how must be 'top', 'bottom' or 'random', got {how!r}")


def masked_accuracy(X: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Accuracy of the unchanged classifier argmax(X W^T + b) for each keep-mask, masked neurons zeroed.

    X: (N, D) test features; W: (C, D); b: (C,); y: (N,) class indices; masks: (M, D) bool.
    Returns (M,) float64. All masks are scored in one pass over X without masked copies; with
    C = 1 the probe is binary (class 1 where the logit is positive).
    """
    return _core.masked_accuracy(X, W, b, y, masks)


def prefix_accuracy(X: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Accuracy keeping only the first k neurons of ``order``, for every k = 1..K, in one pass.

    X: (N, D); W: (C, D); b: (C,); y: (N,) class indices; order: (K,) distinct neuron indices.
    Returns (K,) float64 where entry k-1 is the accuracy with neurons order[:k].
    """
    return _core.prefix_accuracy(X, W, b, y, order)


def layer_distribution(neurons: np.ndarray, layer_sizes: Sequence[int] | np.ndarray) -> LayerDistribution:
    """Count of a neuron set in each layer of a concatenated representation, and its shares.

    neurons: (K,) distinct indices into the concatenation; layer_sizes: (L,) neurons per layer.
    """
    sizes = np.asarray(layer_sizes)
    counts = _core.layer_counts(np.asarray(neurons), sizes)
    total = int(sizes.sum())
    return LayerDistribution(counts, counts / total, counts / sizes.astype(np.float64))


#: Most threads a kernel may be given: four per core (more only adds scheduling overhead).
MAX_THREADS = 4 * (os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """Limit the compiled kernels to n threads, 1 to :data:`MAX_THREADS` (n <= 0 restores the default: all cores)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads takes an integer, got {type(n).__name__} {n!r}")
    if n > MAX_THREADS:
        raise ValueError(f"set_num_threads({n}): at most {MAX_THREADS} threads (4 per core of this machine)")
    _core.set_num_threads(int(n))


def _threads_from_env() -> None:
    """Apply NEUROHOOK_NUM_THREADS (an integer from 1 to MAX_THREADS); ConfigError naming it otherwise."""
    value = os.environ.get("NEUROHOOK_NUM_THREADS")
    if value is None or value.strip() == "":
        return
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise ConfigError(f"environment variable NEUROHOOK_NUM_THREADS={value!r}: expected an integer from 1 to "
                          f"{MAX_THREADS} (4 per core of this machine), or unset it for all cores")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Number of threads the compiled kernels may use."""
    return _core.get_num_threads()


_threads_from_env()
