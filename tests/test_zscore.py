"""Normalisation and gathers (neurohook.zscore, the compiled kernels behind them) against float64
numpy; the L-BFGS line search on kept logits against the one that evaluates every halving."""

from __future__ import annotations

import numpy as np
import pytest

from neurohook import _core
from neurohook.zscore import CHUNK, column_stats, mean_std, standardize, take, take_rows


def offset_matrix(n=CHUNK + 77, d=23, seed=0):
    """float32 columns whose means dwarf their spreads (1e4 vs 0.01 to 10): float32 arithmetic alone
    would lose the values; a constant column too."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * np.logspace(-2, 1, d) + 1e4).astype(np.float32)
    X[:, 5] = 3.0
    return X


def test_standardize_equals_float64_on_every_path():
    X = offset_matrix()
    rng = np.random.default_rng(1)
    rows, cols = rng.permutation(len(X))[: CHUNK + 9], np.array([22, 0, 5, 7])
    wide = np.zeros((len(X), 40), np.float32)
    wide[:, 3:26] = X
    inputs = {"C order": X, "column slice": wide[:, 3:26], "Fortran order": np.asfortranarray(X),
              "float16": X.astype(np.float16)}
    for name, A in inputs.items():
        ref = A.astype(np.float64)
        for r in (None, rows):
            for c in (None, cols):
                sub = ref if r is None else ref[r]
                sub = sub if c is None else sub[:, c]
                mean, scale = column_stats(A, r)
                mean, scale = (mean, scale) if c is None else (mean[c], scale[c])
                Z = standardize(A, mean, scale, rows=r, cols=c)
                assert Z.dtype == np.float32 and Z.flags.c_contiguous, name
                want = (sub - sub.mean(0)) / np.where(sub.std(0) == 0, 1, sub.std(0))
                np.testing.assert_allclose(Z, want, atol=2e-6, err_msg=f"{name}, rows {r is not None}, cols {c is not None}")


def test_standardize_writes_into_a_given_buffer_and_checks_it():
    X = offset_matrix()
    mean, scale = column_stats(X)
    buffer = np.empty((10, X.shape[1]), np.float32)
    out = standardize(X, mean, scale, rows=np.arange(10, 20), out=buffer)
    assert out is buffer
    np.testing.assert_array_equal(out, standardize(X, mean, scale)[10:20])
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape \(9, 23\)"):
        standardize(X, mean, scale, rows=np.arange(9), out=buffer)


def test_take_copies_bit_for_bit():
    X = np.random.default_rng(2).standard_normal((300, 50)).astype(np.float32)
    X[3, 4], X[5, 6], X[7, 8] = -0.0, np.nan, np.inf
    rows, cols = np.array([7, 3, 299, 0, 5]), np.array([8, 4, 0, 49, 6])
    for A in (X, X[:, 2:45], np.asfortranarray(X), X.astype(np.float64)):
        for r in (None, rows):
            for c in (None, cols[cols < A.shape[1]]):
                want = (A if r is None else A[r])
                want = want if c is None else want[:, c]
                got = take(A, r, c)
                assert got.flags.c_contiguous and got.dtype == A.dtype
                assert got.tobytes() == np.ascontiguousarray(want).tobytes()  # -0.0, NaN, Inf as they were
    assert take_rows(X, rows).tobytes() == X[rows].tobytes()
    for A in (X, X.astype(np.float64)):  # into a given buffer, which is checked
        buffer = np.empty((len(rows), 50), A.dtype)
        assert take(A, rows, out=buffer) is buffer and buffer.tobytes() == A[rows].tobytes()
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape \(5, 50\)"):
        take(X, rows, out=np.empty((5, 50), np.float64))


def test_column_moments_equal_float64_and_name_the_row_of_a_nan():
    X = offset_matrix(n=3 * CHUNK + 1)
    rows = np.random.default_rng(3).permutation(len(X))[:1000]
    for A, r in ((X, None), (X, rows), (X[:, 4:20], rows)):
        ref = A.astype(np.float64) if r is None else A.astype(np.float64)[r]
        mean, std = mean_std(A, r)
        np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-12)
        np.testing.assert_allclose(std, ref.std(0), rtol=1e-9, atol=1e-12)
    bad = X.copy()
    bad[rows[17], 9] = np.nan
    with pytest.raises(ValueError, match=rf"NaN or Inf at row {rows[17]} .*column 9"):
        column_stats(bad, rows)


def test_the_kernels_name_a_bad_argument():
    X = offset_matrix()
    z = np.zeros(X.shape[1], np.float32)
    with pytest.raises(ValueError, match=r"rows\[1\] = 5000 is out of range"):
        _core.standardize_rows(X, np.array([0, 5000]), None, z, z, z, np.empty((2, X.shape[1]), np.float32))
    with pytest.raises(ValueError, match=r"cols\[0\] = -1 is out of range"):
        _core.standardize_rows(X, np.array([0]), np.array([-1]), z[:1], z[:1], z[:1], np.empty((1, 1), np.float32))
    with pytest.raises(TypeError, match="X must be a float32"):
        _core.column_moments(X.astype(np.float64), np.arange(3))


def test_line_search_on_kept_logits_ends_where_evaluating_every_halving_does(monkeypatch):
    import neurohook.probe_lbfgs as lbfgs

    rng = np.random.default_rng(4)
    X = (rng.standard_normal((500, 30)) * 3).astype(np.float32)
    y = (X[:, :3] @ rng.standard_normal((3, 4))).argmax(1)  # separable: a weak penalty needs backtracking
    blocks = [lbfgs.Block(0, 30, 0.0, 1e-6), lbfgs.Block(0, 30, 1e-3, 1e-4), lbfgs.Block(10, 30, 0.0, 1e-2)]
    halved = []
    original = lbfgs._backtrack
    monkeypatch.setattr(lbfgs, "_backtrack", lambda *a: halved.append(1) or original(*a))
    kept = lbfgs.lbfgs_probes(X, y, blocks, max_iter=60)
    assert halved, "no step was rejected: the test does not exercise the line search"
    monkeypatch.setattr(lbfgs, "LOGITS_ELEMENTS", 0)  # every halving evaluated by a pass over the rows
    passes = lbfgs.lbfgs_probes(X, y, blocks, max_iter=60)
    for a, b in zip(kept, passes):
        assert a.epochs == b.epochs
        np.testing.assert_allclose(a.coef, b.coef, rtol=1e-3, atol=1e-3 * np.abs(b.coef).max())
