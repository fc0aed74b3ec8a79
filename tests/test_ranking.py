"""The compiled ranking core against plain-numpy references written here, on hand-worked and random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from neurohook import ranking

# ---------------------------------------------------------------------------------------------
# Independent references (plain numpy, float64, loops where that is clearest)
# ---------------------------------------------------------------------------------------------


def ref_rank(W: np.ndarray, descending: bool = True) -> np.ndarray:
    mag = np.abs(W.astype(np.float64))
    return np.stack([np.argsort(-m if descending else m, kind="stable") for m in mag])


def ref_mass(W: np.ndarray, p: float, descending: bool = True) -> list[np.ndarray]:
    out = []
    for c, order in enumerate(ref_rank(W, descending)):
        cum = np.cumsum(np.abs(W[c].astype(np.float64))[order])
        k = int(np.argmax(cum >= p * cum[-1])) + 1
        out.append(order[:k])
    return out


def ref_ordering(W: np.ndarray, steps) -> tuple[np.ndarray, np.ndarray]:
    mag = np.abs(W.astype(np.float64))
    totals = mag.sum(axis=1, keepdims=True)
    score = np.where(totals > 0, mag / np.where(totals > 0, totals, 1), 0).max(axis=0)
    order: list[int] = []
    cutoffs = []
    for p in steps:
        chosen = set(np.concatenate(ref_mass(W, p)).tolist()) - set(order)
        order += sorted(chosen, key=lambda d: (-score[d], d))
        cutoffs.append(len(order))
    rest = sorted(set(range(W.shape[1])) - set(order), key=lambda d: (-score[d], d))
    return np.array(order + rest), np.array(cutoffs)


def ref_predict(logits: np.ndarray) -> np.ndarray:
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.int64)
    return logits.argmax(-1)


def ref_masked(X, W, b, y, masks) -> np.ndarray:
    X, W, b = (a.astype(np.float64) for a in (X, W, b))
    return np.array([(ref_predict((X * m) @ W.T + b) == y).mean() for m in masks])


def ref_prefix(X, W, b, y, order) -> np.ndarray:
    X, W, b = (a.astype(np.float64) for a in (X, W, b))
    contrib = X[:, order, None] * W.T[order][None, :, :]  # N x K x C
    logits = np.cumsum(contrib, axis=1) + b
    return (ref_predict(logits) == y[:, None]).mean(axis=0)


def random_problem(rng, N, D, C, dtype=np.float32):
    X = rng.standard_normal((N, D)).astype(dtype)
    W = rng.standard_normal((C, D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    logits = X.astype(np.float64) @ W.T.astype(np.float64) + b
    y = ref_predict(logits + rng.standard_normal(logits.shape) * 2.0)
    return X, W, b, y


# ---------------------------------------------------------------------------------------------
# Ranking and cumulative-mass selection
# ---------------------------------------------------------------------------------------------

HAND_W = np.array([[0.1, -0.5, 0.3, 0.0], [0.2, 0.2, -0.9, 0.1]], dtype=np.float32)


def test_hand_worked_ranking_and_mass():
    assert ranking.rank_per_class(HAND_W).tolist() == [[1, 2, 0, 3], [2, 0, 1, 3]]  # tie 0/1 by index
    top0 = ranking.top_neurons(HAND_W, 0.0)
    assert [c.tolist() for c in top0.per_class] == [[1], [2]]  # p = 0 still gives each top neuron
    assert top0.neurons.tolist() == [1, 2]
    assert [c.tolist() for c in ranking.top_neurons(HAND_W, 0.6).per_class] == [[1, 2], [2]]
    full = ranking.top_neurons(HAND_W, 1.0)
    assert [c.tolist() for c in full.per_class] == [[1, 2, 0], [2, 0, 1, 3]]  # zero weight never needed
    assert full.neurons.tolist() == [0, 1, 2, 3]
    assert [c.tolist() for c in ranking.bottom_neurons(HAND_W, 0.0).per_class] == [[3], [3]]
    assert [c.tolist() for c in ranking.bottom_neurons(HAND_W, 0.2).per_class] == [[3, 0, 2], [3, 0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,D", [(1, 1), (1, 40), (2, 300), (7, 257)])
def test_rank_and_mass_match_reference(dtype, C, D):
    rng = np.random.default_rng(C * 1000 + D)
    W = (rng.standard_normal((C, D)) * rng.exponential(1.0, D)).astype(dtype)
    np.testing.assert_array_equal(ranking.rank_per_class(W), ref_rank(W))
    for p in (0.0, 0.001, 0.5, 0.9, 1.0):
        for descending, fn in ((True, ranking.top_neurons), (False, ranking.bottom_neurons)):
            got = fn(W, p)
            want = ref_mass(W, p, descending)
            for g, w in zip(got.per_class, want):
                np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(got.neurons, np.unique(np.concatenate(want)))


def test_ties_and_zero_rows_follow_index_order():
    W = np.array([[2, 1, 2, 0, 1, 2], [0, 0, 0, 0, 0, 0], [-1, 1, -1, 1, -1, 1]], dtype=np.float64)
    np.testing.assert_array_equal(ranking.rank_per_class(W), ref_rank(W))
    assert ranking.rank_per_class(W)[0].tolist() == [0, 2, 5, 1, 4, 3]
    assert ranking.rank_per_class(W)[1].tolist() == list(range(6))
    top = ranking.top_neurons(W, 0.5)
    assert top.per_class[1].tolist() == [0]  # an all-zero class contributes its first neuron
    assert top.per_class[2].tolist() == [0, 1, 2]


@pytest.mark.parametrize("steps", [None, [0.001, 0.01, 0.05, 0.2, 0.21, 0.7, 1.0], [0.5]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_neuron_ordering_matches_reference(steps, dtype):
    rng = np.random.default_rng(7)
    W = (rng.standard_normal((5, 400)) * rng.exponential(1.0, 400)).astype(dtype)
    W[:, 17] = 0.0  # a neuron no step selects
    got = ranking.neuron_ordering(W, steps)
    want_order, want_cut = ref_ordering(W, np.linspace(0, 1, 101) if steps is None else steps)
    np.testing.assert_array_equal(got.order, want_order)
    np.testing.assert_array_equal(got.cutoffs, want_cut)
    assert sorted(got.order.tolist()) == list(range(400))
    assert got.order[-1] == 17


def test_ordering_is_a_permutation_when_cumulative_mass_saturates():
    # 1e-9 vanishes next to 1e8 in a float64 running sum, so no mass threshold ever reaches it.
    W = np.array([[1e8, 1e-9, 3e7, 1e-9, 0.0]], dtype=np.float64)
    got = ranking.neuron_ordering(W)
    assert sorted(got.order.tolist()) == [0, 1, 2, 3, 4]
    assert got.order.tolist()[:2] == [0, 2]
    assert got.cutoffs[-1] == 2


def test_select_exact_counts_and_reproducible_random():
    order = np.random.default_rng(0).permutation(1000)
    for k in (0, 1, 200, 1000):
        assert ranking.select(order, k, "top").tolist() == order[:k].tolist()
        assert ranking.select(order, k, "bottom").tolist() == order[1000 - k :].tolist()
        r = ranking.select(order, k, "random", seed=3)
        assert len(r) == k == len(set(r.tolist()))
        pos = np.argsort(order)[r]
        assert np.all(np.diff(pos) > 0)  # a subsequence of the ranking
    a, b, c = (ranking.select(order, 200, "random", seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="k must be"):
        ranking.select(order, 1001)
    with pytest.raises(ValueError, match="how must be"):
        ranking.select(order, 3, "middle")


# ---------------------------------------------------------------------------------------------
# Masked re-scoring and the prefix curve
# ---------------------------------------------------------------------------------------------


def paper_masks(order: np.ndarray, D: int) -> np.ndarray:
    masks = [np.zeros(D, bool), np.ones(D, bool)]
    for how in ("top", "bottom", "random"):
        for pct in (1, 5, 10, 20, 50, 75):
            m = np.zeros(D, bool)
            m[ranking.select(order, round(D * pct / 100), how, seed=pct)] = True
            masks.append(m)
    return np.stack(masks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,D,C", [(1, 1, 2), (37, 50, 1), (203, 120, 2), (500, 300, 7)])
def test_masked_accuracy_matches_copy_and_multiply(dtype, N, D, C):
    rng = np.random.default_rng(N + D + C)
    X, W, b, y = random_problem(rng, N, D, C, dtype)
    order = ranking.neuron_ordering(W).order
    masks = np.concatenate([paper_masks(order, D), rng.random((5, D)) < 0.3])
    np.testing.assert_array_equal(ranking.masked_accuracy(X, W, b, y, masks), ref_masked(X, W, b, y, masks))


def test_masked_accuracy_hand_worked():
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]])
    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([0.0, 0.5])
    y = np.array([1, 0, 1])
    masks = np.array([[True, True], [True, False], [False, True], [False, False]])
    # all: logits (1, 2.5), (3, -0.5), (0, 0.5) -> 1, 0, 1; only neuron 0: (1, .5) (3, .5) (0, .5) -> 0, 0, 1
    # only neuron 1: (0, 2.5) (0, -.5) (0, .5) -> 1, 0, 1; none: b -> 1, 1, 1
    np.testing.assert_allclose(ranking.masked_accuracy(X, W, b, y, masks), [1.0, 2 / 3, 1.0, 2 / 3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,D,C", [(1, 1, 2), (45, 60, 1), (130, 90, 3), (301, 200, 7)])
def test_prefix_accuracy_matches_incremental_reference(dtype, N, D, C):
    rng = np.random.default_rng(N * D)
    X, W, b, y = random_problem(rng, N, D, C, dtype)
    order = ranking.neuron_ordering(W).order
    got = ranking.prefix_accuracy(X, W, b, y, order)
    np.testing.assert_array_equal(got, ref_prefix(X, W, b, y, order))
    full = ref_masked(X, W, b, y, np.ones((1, D), bool))[0]
    assert got[-1] == full
    subset = order[: max(1, D // 3)][::-1].copy()  # any list of distinct neurons, K < D
    np.testing.assert_array_equal(ranking.prefix_accuracy(X, W, b, y, subset), ref_prefix(X, W, b, y, subset))


def test_results_identical_across_runs_and_thread_counts():
    rng = np.random.default_rng(11)
    X, W, b, y = random_problem(rng, 3001, 700, 7)
    order = ranking.neuron_ordering(W).order
    masks = paper_masks(order, 700)
    before = ranking.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 1):
            ranking.set_num_threads(threads)
            results.append((ranking.neuron_ordering(W).order, ranking.masked_accuracy(X, W, b, y, masks),
                            ranking.prefix_accuracy(X, W, b, y, order)))
    finally:
        ranking.set_num_threads(0)
    assert ranking.get_num_threads() == before
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


# ---------------------------------------------------------------------------------------------
# Distribution over layers
# ---------------------------------------------------------------------------------------------


def test_layer_distribution_matches_searchsorted():
    sizes = [2000, 2000, 2000, 3000, 1500, 600]
    rng = np.random.default_rng(1)
    neurons = rng.choice(11100, size=777, replace=False)
    got = ranking.layer_distribution(neurons, sizes)
    starts = np.cumsum([0] + sizes)
    want = np.bincount(np.searchsorted(starts, neurons, side="right") - 1, minlength=len(sizes))
    np.testing.assert_array_equal(got.counts, want)
    np.testing.assert_allclose(got.share_of_network, want / 11100)
    np.testing.assert_allclose(got.share_of_layer, want / np.array(sizes))
    edge = ranking.layer_distribution(np.array([0, 1999, 2000, 11099]), sizes)
    assert edge.counts.tolist() == [2, 1, 0, 0, 0, 1]


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument and its shape
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    X, W, b, y = random_problem(rng, 20, 10, 3)
    masks = np.ones((2, 10), bool)
    with pytest.raises(TypeError, match=r"W must be float32 or float64, got int64 with shape \(3, 10\)"):
        ranking.rank_per_class(W.astype(np.int64))
    with pytest.raises(ValueError, match=r"W with shape \(3, 5\) must be C-contiguous"):
        ranking.top_neurons(W[:, ::2], 0.5)
    with pytest.raises(ValueError, match=r"W must have shape \(C, D\), got \(10,\)"):
        ranking.rank_per_class(W[0])
    with pytest.raises(ValueError, match=r"W \(3, 9\) does not match X \(20, 10\)"):
        ranking.masked_accuracy(X, np.ascontiguousarray(W[:, :9]), b, y, masks)
    with pytest.raises(ValueError, match=r"b \(2,\) does not match W \(3, 10\)"):
        ranking.masked_accuracy(X, W, b[:2].copy(), y, masks)
    with pytest.raises(ValueError, match=r"y \(19,\) does not match X \(20, 10\)"):
        ranking.prefix_accuracy(X, W, b, y[:19].copy(), np.arange(10))
    with pytest.raises(TypeError, match="X, W and b must share one dtype"):
        ranking.masked_accuracy(X.astype(np.float64), W, b, y, masks)
    with pytest.raises(TypeError, match="masks must be a boolean array"):
        ranking.masked_accuracy(X, W, b, y, masks.astype(np.uint8))
    with pytest.raises(ValueError, match=r"masks must have shape \(M, D\) with D = 10, got \(2, 9\)"):
        ranking.masked_accuracy(X, W, b, y, np.ones((2, 9), bool))
    with pytest.raises(ValueError, match=r"y\[0\] = 3 is out of range"):
        ranking.masked_accuracy(X, W, b, np.full(20, 3), masks)
    with pytest.raises(TypeError, match="y must be an integer array"):
        ranking.masked_accuracy(X, W, b, y.astype(np.float32), masks)
    with pytest.raises(ValueError, match="order repeats neuron 4"):
        ranking.prefix_accuracy(X, W, b, y, np.array([4, 1, 4]))
    with pytest.raises(ValueError, match=r"order\[1\] = 10 is out of range"):
        ranking.prefix_accuracy(X, W, b, y, np.array([0, 10]))
    with pytest.raises(ValueError, match="p must be a fraction"):
        ranking.top_neurons(W, 1.5)
    with pytest.raises(ValueError, match="steps must increase strictly"):
        ranking.neuron_ordering(W, [0.1, 0.1, 0.5])
    with pytest.raises(ValueError, match=r"X must have shape \(N, D\) with no empty axis, got \(0, 10\)"):
        ranking.masked_accuracy(X[:0].copy(), W, b, y[:0].copy(), masks)
    with pytest.raises(ValueError, match="neurons repeats neuron 3"):
        ranking.layer_distribution(np.array([3, 3]), [5, 5])
    with pytest.raises(ValueError, match=r"neurons\[0\] = 10 is out of range"):
        ranking.layer_distribution(np.array([10]), [5, 5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_with_their_position(bad):
    rng = np.random.default_rng(0)
    X, W, b, y = random_problem(rng, 50, 10, 3)
    masks = np.ones((1, 10), bool)
    W2 = W.copy()
    W2[1, 4] = bad
    with pytest.raises(ValueError, match="W with shape .* holds NaN or Inf"):
        ranking.neuron_ordering(W2)
    b2 = b.copy()
    b2[2] = bad
    with pytest.raises(ValueError, match="b with shape .* holds NaN or Inf"):
        ranking.masked_accuracy(X, W, b2, y, masks)
    X2 = X.copy()
    X2[33, 7] = bad
    with pytest.raises(ValueError, match=r"X with shape \(50, 10\) holds NaN or Inf at row 33, column 7"):
        ranking.masked_accuracy(X2, W, b, y, masks)
    with pytest.raises(ValueError, match="row 33, column 7"):
        ranking.prefix_accuracy(X2, W, b, y, np.arange(10))
