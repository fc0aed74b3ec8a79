"""Benchmark of the compiled ranking core against plain-numpy implementations of the same work.

Prints one JSON object. Sizes follow the paper's CNN (D = 11100 neurons, C = 7 classes, N = 5000
test utterances). Each compiled kernel is timed beside its numpy counterpart in the same run:
(a) neuron_ordering vs a NeuroX-style loop of 101 top-neuron calls,
(b) masked_accuracy of 24 masks (top/bottom/random x 8 percentages) vs copy-and-multiply,
(c) prefix_accuracy over every k = 1..D vs one full numpy evaluation (the ratio is the cost of the
    whole curve in full evaluations).
Usage: python benchmarks/bench_ranking.py [--quick]
"""

from __future__ import annotations

import numpy as np

from _harness import best_of, emit, parse_args
from neurohook import ranking

PERCENTAGES = (1, 5, 10, 15, 20, 25, 50, 75)


def neurox_ordering(W: np.ndarray) -> np.ndarray:
    """NeuroX get_neuron_ordering: 101 calls of a per-class cumulative-mass top-neuron search."""
    weights = np.abs(W.T)  # D x C, as NeuroX stores probe weights
    ordering: list[int] = []
    seen: set[int] = set()
    for p in np.arange(0, 1.01, 0.01):
        selected: set[int] = set()
        for c in range(weights.shape[1]):
            sort_idx = np.argsort(weights[:, c])[::-1]
            cum = np.cumsum(weights[sort_idx, c])
            k = int(np.argmax(cum >= cum[-1] * p)) + 1
            selected.update(sort_idx[:k].tolist())
        new = sorted(selected - seen)
        ordering.extend(new)
        seen.update(new)
    return np.array(ordering)


def numpy_masked(X, W, b, y, masks) -> np.ndarray:
    return np.array([(((X * m) @ W.T + b).argmax(1) == y).mean() for m in masks])


def numpy_full(X, W, b, y) -> float:
    return float(((X @ W.T + b).argmax(1) == y).mean())


def main() -> None:
    args = parse_args(__doc__)
    N, D, C = (1000, 11100, 7) if args.quick else (5000, 11100, 7)
    repeats = 2 if args.quick else 5

    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    W = (rng.standard_normal((C, D)) * rng.exponential(1.0, D)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    y = ((X @ W.T + b) + 20 * rng.standard_normal((N, C))).argmax(1)  # a classifier of ~50% accuracy

    t_order = best_of(lambda: ranking.neuron_ordering(W), repeats * 4)
    t_neurox = best_of(lambda: neurox_ordering(W), max(1, repeats // 2))
    order = ranking.neuron_ordering(W).order

    masks = np.zeros((3 * len(PERCENTAGES), D), dtype=bool)
    for i, (how, pct) in enumerate((h, p) for h in ("top", "bottom", "random") for p in PERCENTAGES):
        masks[i, ranking.select(order, round(D * pct / 100), how, seed=pct)] = True
    t_masked = best_of(lambda: ranking.masked_accuracy(X, W, b, y, masks), repeats)
    t_masked_np = best_of(lambda: numpy_masked(X, W, b, y, masks), max(1, repeats // 2))
    masked_max_diff = float(np.abs(ranking.masked_accuracy(X, W, b, y, masks) - numpy_masked(X, W, b, y, masks)).max())

    t_prefix = best_of(lambda: ranking.prefix_accuracy(X, W, b, y, order), repeats)
    t_full = best_of(lambda: numpy_full(X, W, b, y), repeats * 2)
    curve = ranking.prefix_accuracy(X, W, b, y, order)

    emit("ranking", {
        "sizes": {"N": N, "D": D, "C": C, "masks": int(masks.shape[0]), "dtype": "float32"},
        "neuron_ordering": {"core_s": t_order, "neurox_loop_s": t_neurox, "speedup": t_neurox / t_order,
                            "target_speedup": 100},
        "masked_accuracy": {"core_s": t_masked, "numpy_copy_multiply_s": t_masked_np,
                            "speedup": t_masked_np / t_masked, "target_speedup": 20,
                            "max_abs_diff_vs_numpy": masked_max_diff},
        "prefix_accuracy": {"core_s": t_prefix, "numpy_one_full_eval_s": t_full,
                            "curve_cost_in_full_evals": t_prefix / t_full, "target_at_most": 4,
                            "last_point_equals_full": bool(curve[-1] == numpy_full(X, W, b, y))},
    })


if __name__ == "__main__":
    main()
