"""Efficacy of a neuron ranking (paper sections 3.3.1-3.3.2, 3.5 and 6.1-6.2; Tables 2-3).

* :func:`ablation_accuracy` — keep the top / bottom / random p% of the ranked neurons, zero the rest
  (in the probe's normalised space, i.e. at the training mean) and re-score the trained probe,
  without retraining (Table 2);
* :func:`minimal_neuron_set` — retrain on the top N% (and a random N%) for growing N until the
  accuracy is within delta of the oracle (Table 3), with the paper's two redundancy tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from neurohook import ranking
from neurohook.probe import KernelInputs, ProbeSpec, fit_probes

__all__ = ["ABLATIONS", "DEFAULT_PERCENTAGES", "MinimalSet", "ablation_accuracy", "ablation_masks", "ablation_outcomes",
           "minimal_neuron_set"]

DEFAULT_PERCENTAGES: tuple[float, ...] = (1, 5, 10, 15, 20, 25, 50, 75)


def _count(percent: float, D: int) -> int:
    if not 0 < percent <= 100:
        raise ValueError(f"percentages must lie in (0, 100], got {percent}")
    return max(1, int(round(D * percent / 100)))


ABLATIONS = ("top", "bottom", "random")


def ablation_masks(order: np.ndarray, percent: float = 20.0, seed: int = 0, width: int | None = None) -> np.ndarray:
    """Masks (3, D) bool keeping the top / bottom / random ``percent`` of ``order``; random from ``seed``.

    ``order`` ranks the neurons that may be drawn (all D of them, or fewer: the analysis leaves out
    constant neurons); ``percent`` is of ``len(order)``; D is ``width`` (default ``len(order)``).
    """
    D = len(order) if width is None else width
    k = _count(percent, len(order))
    masks = np.zeros((len(ABLATIONS), D), dtype=bool)
    for row, how in enumerate(ABLATIONS):
        masks[row, ranking.select(order, k, how, seed=seed)] = True
    return masks


def ablation_accuracy(inputs: KernelInputs, order: np.ndarray, percent: float = 20.0, seed: int = 0) -> dict[str, float]:
    """Accuracy of a trained probe keeping only the top / bottom / random ``percent`` of ``order``.

    ``inputs``: ``probe.kernel_inputs(X_test, y_test)``; order: (D,) ranking of the probe's neurons.
    The random set is drawn with ``seed``. Computed by the compiled kernel.
    """
    acc = ranking.masked_accuracy(*inputs, ablation_masks(order, percent, seed, inputs.Z.shape[1]))
    return {how: float(a) for how, a in zip(ABLATIONS, acc)}


def ablation_outcomes(inputs: KernelInputs, order: np.ndarray, percent: float = 20.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Per test utterance (N,) bool, whether the probe is right under each of :func:`ablation_accuracy`'s masks.

    Their means are the accuracies; the intervals of :mod:`neurohook.intervals` resample them.
    """
    Z, W, b, y = inputs
    return {how: (Z[:, m] @ W[:, m].T + b).argmax(axis=1) == y
            for how, m in zip(ABLATIONS, ablation_masks(order, percent, seed, Z.shape[1]))}


@dataclass
class MinimalSet:
    """Result of the minimal-neuron-set search for one seed (accuracies as fractions)."""

    oracle: float  # Acc(ALL)
    delta: float  # tolerance, as a fraction (0.01 = one accuracy point)
    percentages: list[float]
    top: list[float]  # retrained accuracy on the top N%, per percentage
    random: list[float]  # retrained accuracy on a random N%, per percentage
    percent: float  # the minimal N% (the largest tried when none reached the oracle)
    reached: bool  # the minimal set is within delta of the oracle
    neurons: list[int] = field(default_factory=list)  # the minimal set, in ranking order

    @property
    def accuracy(self) -> float:
        """Retrained accuracy of the minimal set."""
        return self.top[self.percentages.index(self.percent)]

    @property
    def random_accuracy(self) -> float:
        """Retrained accuracy of a random set of the same size."""
        return self.random[self.percentages.index(self.percent)]

    @property
    def rest_redundant(self) -> bool:
        """Section 6.2 (i): the minimal set keeps at least 97% of the oracle's accuracy."""
        return self.accuracy >= 0.97 * self.oracle

    @property
    def information_redundant(self) -> bool:
        """Section 6.2 (ii): a random set of the same size does as well as the top set (within delta)."""
        return self.random_accuracy >= self.accuracy - self.delta


def minimal_neuron_set(
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    order: np.ndarray,
    oracle: float,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    delta: float = 0.01,
    seed: int = 0,
    draw_seed: int | None = None,
    **probe_params: Any,
) -> MinimalSet:
    """Retrain probes on the top and a random N% of ``order`` for each N; the smallest within delta of oracle.

    X_train: (N, D), X_test: (M, D) raw features; order: (D,) ranking. All probes train in one
    batched pass: the columns are permuted so every top N% (and every random N%) is a prefix.
    """
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    D = X_train.shape[1]
    percentages = sorted(float(p) for p in percentages)
    ks = [_count(p, D) for p in percentages]
    # nested random sets: prefixes of one shuffle (from draw_seed, else seed; probes train with seed)
    shuffled = np.random.default_rng(seed if draw_seed is None else draw_seed).permutation(D)
    cols = np.concatenate([order, shuffled])
    specs = [ProbeSpec(0, k, seed) for k in ks] + [ProbeSpec(D, D + k, seed) for k in ks]
    probes = fit_probes(X_train[:, cols], y_train, specs, **probe_params)
    Xt = X_test[:, cols]
    acc = [p.score(Xt[:, s.start : s.end], y_test) for p, s in zip(probes, specs)]
    top, rnd = acc[: len(ks)], acc[len(ks) :]
    reached = [i for i, a in enumerate(top) if a >= oracle - delta]
    i = reached[0] if reached else len(ks) - 1
    return MinimalSet(oracle, delta, percentages, top, rnd, percentages[i], bool(reached), order[: ks[i]].tolist())
