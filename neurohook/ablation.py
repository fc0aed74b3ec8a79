"""Efficacy of a neuron ranking (paper sections 3.3.1-3.3.2, 3.5 and 6.1-6.2; Tables 2-3).

* :func:`ablation_accuracy` — keep the top / bottom / random p% of the ranked neurons, zero the rest
  (in the probe's normalised space, i.e. at the training mean) and re-score the trained probe,
  without retraining (Table 2);
* :func:`minimal_neuron_set` — retrain on the top N% (and a random N%) for growing N until the
  accuracy is within delta of the oracle (Table 3), with the paper's two redundancy tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from neurohook import ranking
from neurohook.probe import PREDICT_ROWS, KernelInputs, ProbeSpec, fit_probes
from neurohook.zscore import take, take_rows

__all__ = ["ABLATIONS", "DEFAULT_PERCENTAGES", "DevSearch", "MinimalSet", "ablation_accuracy", "ablation_masks",
           "ablation_outcomes", "minimal_neuron_set", "retrained_curve", "retrained_outcomes"]

DEFAULT_PERCENTAGES: tuple[float, ...] = (1, 5, 10, 15, 20, 25, 50, 75)


def _count(percent: float, D: int) -> int:
    if not 0 < percent <= 100:
        raise ValueError(f"percentages must lie in (0, 100], got {percent}")
    return max(1, int(round(D * percent / 100)))


ABLATIONS = ("top", "bottom", "random")


def ablation_masks(order: np.ndarray, percent: float = 20.0, seed: int = 0, width: int | None = None,
                   draws: int = 1) -> np.ndarray:
    """Masks (2 + draws, D) bool keeping the top / bottom / ``draws`` random sets of ``percent`` of ``order``.

    ``order`` ranks the neurons that may be drawn (all D of them, or fewer: the analysis leaves out
    constant neurons); ``percent`` is of ``len(order)``; D is ``width`` (default ``len(order)``). The
    first random set is drawn from ``seed``, the others from independent streams spawned from it.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    D = len(order) if width is None else width
    k = _count(percent, len(order))
    seeds = [seed] + [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(draws - 1)]
    masks = np.zeros((2 + draws, D), dtype=bool)
    masks[0, ranking.select(order, k, "top")] = True
    masks[1, ranking.select(order, k, "bottom")] = True
    for row, s in enumerate(seeds, start=2):
        masks[row, ranking.select(order, k, "random", seed=s)] = True
    return masks


def ablation_accuracy(inputs: KernelInputs, order: np.ndarray, percent: float = 20.0, seed: int = 0,
                      draws: int = 1) -> dict[str, float]:
    """Accuracy of a trained probe keeping only the top / bottom / random ``percent`` of ``order``.

    ``inputs``: ``probe.kernel_inputs(X_test, y_test)``; order: (D,) ranking of the probe's neurons.
    The random accuracy is the mean over ``draws`` random sets drawn from ``seed``; its spread over
    draws is ``"random_std"``. Computed by the compiled kernel.
    """
    return masked_summary(ranking.masked_accuracy(*inputs, ablation_masks(order, percent, seed, inputs.Z.shape[1], draws)))


def masked_summary(acc: np.ndarray) -> dict[str, float]:
    """{"top", "bottom", "random" (mean over the draws), "random_std"} of accuracies (2 + draws,) under
    :func:`ablation_masks`' masks, in their order."""
    return {"top": float(acc[0]), "bottom": float(acc[1]), "random": float(np.mean(acc[2:])),
            "random_std": float(np.std(acc[2:]))}


def ablation_outcomes(inputs: KernelInputs, order: np.ndarray, percent: float = 20.0, seed: int = 0,
                      draws: int = 1) -> dict[str, np.ndarray]:
    """Per test utterance (N,), whether the probe is right under each of :func:`ablation_accuracy`'s masks.

    Top and bottom are bool; random is the share of the ``draws`` random sets under which it is
    right. Their means are the accuracies; the intervals of :mod:`neurohook.intervals` resample them.
    """
    Z, W, b, y = inputs
    # a masked neuron's weight set to zero: as dropping its column, without gathering the kept ones
    right = [(Z @ (W * m).T + b).argmax(axis=1) == y for m in ablation_masks(order, percent, seed, Z.shape[1], draws)]
    return {"top": right[0], "bottom": right[1], "random": np.mean(right[2:], axis=0)}


@dataclass
class MinimalSet:
    """Result of the minimal-neuron-set search for one seed (accuracies as fractions)."""

    oracle: float  # Acc(ALL) on the split the size is chosen on
    delta: float  # tolerance, as a fraction (0.01 = one accuracy point)
    percentages: list[float]
    top: list[float]  # retrained accuracy on the top N%, per percentage (evaluation split)
    random: list[float]  # retrained accuracy on a random N%, per percentage (evaluation split)
    percent: float  # the minimal N% (the largest tried when none reached the oracle)
    reached: bool  # the minimal set is within delta of the oracle, on the split it was chosen on
    neurons: list[int] = field(default_factory=list)  # the minimal set, in ranking order
    chosen_on: str = "test"  # "dev": chosen on a dev curve, reported on test; "test": the paper's search
    dev_top: list[float] = field(default_factory=list)  # the dev curve the size was chosen on
    test_oracle: float | None = None  # Acc(ALL) on test, for the redundancy tests (default: oracle)
    top_right: np.ndarray | None = field(default=None, repr=False)  # (P, M) bool per evaluation utterance
    random_right: np.ndarray | None = field(default=None, repr=False)  # (P, M) bool

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
        return self.accuracy >= 0.97 * (self.oracle if self.test_oracle is None else self.test_oracle)

    @property
    def information_redundant(self) -> bool:
        """Section 6.2 (ii): a random set of the same size does as well as the top set (within delta)."""
        return self.random_accuracy >= self.accuracy - self.delta


class DevSearch(NamedTuple):
    """Where the minimal set's size is chosen: fit / dev rows of the training data, their ranking and oracle."""

    X_fit: Any
    y_fit: Any
    X_dev: Any
    y_dev: Any
    order: np.ndarray  # ranking from a probe trained on the fit rows
    oracle: float  # Acc(ALL) of that probe on the dev rows
    fit_rows: np.ndarray | None = None  # the fit rows are these rows of X_fit (y_fit per row of X_fit); None: all
    dev_rows: np.ndarray | None = None  # the dev rows are these rows of X_dev (y_dev per dev row); None: all


def retrained_outcomes(X_train: Any, y_train: Any, X_test: Any, y_test: Any, order: np.ndarray,
                       percentages: Sequence[float], seed: int = 0, draw_seed: int | None = None,
                       train_rows: np.ndarray | None = None, with_random: bool = True,
                       test_rows: np.ndarray | None = None, **probe_params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per test utterance, right (bool (P, M)) with probes retrained on the top N% and on a random N% of
    ``order``, for each of the P percentages. ``train_rows``: the training rows are these rows of
    X_train (y_train per row of X_train), none copied; default all; ``test_rows`` likewise for X_test
    (y_test per test row; read in row blocks). ``with_random=False`` trains the top sets only (the
    random part is then (0, M)).

    The top probes train in one batched pass, the random ones in another: each pass sees its columns
    in order (the top N% of ``order``, or the first N% of one shuffle from ``draw_seed``, else ``seed``:
    nested sets) through ``fit_probes(columns=)``: the training rows are read in blocks, never copied.
    """
    X_train = X_train if hasattr(X_train, "rows") else np.asarray(X_train)  # or features read on demand
    X_test, y_test = X_test if hasattr(X_test, "rows") else np.asarray(X_test), np.asarray(y_test)
    test_rows = np.arange(len(y_test)) if test_rows is None else np.asarray(test_rows, dtype=np.int64)
    D = X_train.shape[1]
    ks = [_count(p, D) for p in percentages]
    shuffled = np.random.default_rng(seed if draw_seed is None else draw_seed).permutation(D)
    right = []
    for cols in (np.asarray(order)[: max(ks)], shuffled[: max(ks)])[: 2 if with_random else 1]:
        probes = fit_probes(X_train, y_train, [ProbeSpec(0, k, seed) for k in ks], columns=cols, rows=train_rows,
                            **probe_params)
        right += [np.empty(len(y_test), dtype=bool) for _ in ks]
        for a in range(0, len(y_test), PREDICT_ROWS):  # row blocks, columns gathered once: each probe reads a prefix
            gathered = take(take_rows(X_test, test_rows[a : a + PREDICT_ROWS]), cols=cols)
            for r, p, k in zip(right[-len(ks):], probes, ks):
                r[a : a + PREDICT_ROWS] = p.predict(gathered[:, :k]) == y_test[a : a + PREDICT_ROWS]
            del gathered  # not held while the next probes train
    right = np.array(right).reshape(len(right), len(y_test))
    return right[: len(ks)], right[len(ks) :]


def retrained_curve(X_train: Any, y_train: Any, X_test: Any, y_test: Any, order: np.ndarray,
                    percentages: Sequence[float], seed: int = 0, draw_seed: int | None = None,
                    train_rows: np.ndarray | None = None, **probe_params: Any) -> tuple[list[float], list[float]]:
    """Test accuracies (top, random) of :func:`retrained_outcomes`' probes, per percentage."""
    top, rnd = retrained_outcomes(X_train, y_train, X_test, y_test, order, percentages, seed, draw_seed, train_rows,
                                  **probe_params)
    return top.mean(axis=1).tolist(), rnd.mean(axis=1).tolist()


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
    dev: DevSearch | None = None,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
    **probe_params: Any,
) -> MinimalSet:
    """The smallest top N% of ``order`` whose retrained probe is within delta of the oracle.

    X_train: (N, D), X_test: (M, D) raw features (``train_rows``: the training rows are these rows of
    X_train, y_train per row of X_train; ``test_rows``: the test rows are these rows of X_test, y_test
    per test row); order: (D,) ranking; oracle: Acc(ALL) on test.
    With ``dev`` the size is chosen on the dev curve (probes retrained on the fit rows with the top N%
    of ``dev.order``, scored on the dev rows, against ``dev.oracle``) and the test curve is only
    reported; without it, on the test curve (the paper's procedure, optimistic).
    """
    percentages = sorted(float(p) for p in percentages)
    top_right, rnd_right = retrained_outcomes(X_train, y_train, X_test, y_test, order, percentages, seed, draw_seed,
                                              train_rows, test_rows=test_rows, **probe_params)
    top, rnd = top_right.mean(axis=1).tolist(), rnd_right.mean(axis=1).tolist()
    curve, target, on = top, oracle, "test"
    dev_top: list[float] = []
    if dev is not None:
        dev_right, _ = retrained_outcomes(dev.X_fit, dev.y_fit, dev.X_dev, dev.y_dev, dev.order, percentages, seed,
                                          draw_seed, dev.fit_rows, with_random=False, test_rows=dev.dev_rows,
                                          **probe_params)
        dev_top = dev_right.mean(axis=1).tolist()
        curve, target, on = dev_top, dev.oracle, "dev"
    reached = [i for i, a in enumerate(curve) if a >= target - delta]
    i = reached[0] if reached else len(percentages) - 1
    k = _count(percentages[i], len(order))
    return MinimalSet(target, delta, percentages, top, rnd, percentages[i], bool(reached), order[:k].tolist(), on, dev_top,
                      oracle, top_right, rnd_right)
