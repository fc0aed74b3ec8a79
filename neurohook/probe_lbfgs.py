"""Full-batch L-BFGS for many elastic-net probes at once: the solver of the tuned default probe.

Each probe is a column block [start, end) of one feature matrix and its own penalties (l1, l2). The
probes over one block are one weight tensor (G, C, w), so a whole λ grid costs one matrix product per
block and pass. The summed objective separates over probes and is strictly convex for l2 > 0, so its
minimiser is every probe's own optimum: training a probe alone ends at the same weights, up to the
convergence tolerance (the tests check this against scikit-learn).

Objective of one probe, on z-normalised features (statistics of the training rows)::

    mean cross-entropy + l1 * sum(sqrt(W**2 + eps**2) - eps) + l2 * sum(W**2)      (weights only)

The l1 term is the smooth (pseudo-Huber, eps = 1e-4) form of ``l1 * sum|W|``, which L-BFGS needs.

Example::

    states = lbfgs_probes(X, y, [Block(0, 768, 0.0, 1e-3), Block(0, 768, 0.0, 1e-2)], rows=train_rows)
    states[1].coef                                       # (C, 768), the l2 = 1e-2 probe
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from neurohook.probe_batch import ProbeState, _is_row_source
from neurohook.zscore import CHUNK, column_stats, standardize

__all__ = ["Block", "lbfgs_probes"]

EPS = 1e-4  # smoothing of |w| in the l1 penalty


class Block(NamedTuple):
    """One probe of :func:`lbfgs_probes`: columns [start, end) and its penalties."""

    start: int
    end: int
    l1: float
    l2: float


class _Rows:
    """The z-normalised training rows, as one float32 tensor or, for features read on demand, in chunks."""

    def __init__(self, X: Any, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, dev: torch.device,
                 cols: np.ndarray | None = None) -> None:
        self.X, self.rows, self.dev, self.cols = X, rows, dev, cols
        self.Z = None
        self.mean, self.scale = mean, scale
        if not _is_row_source(X):  # the only copy of the training rows (and columns)
            self.Z = torch.from_numpy(standardize(X, mean, scale, rows=rows, cols=cols)).to(dev)

    def chunks(self, y: torch.Tensor):
        """(Z, y) blocks covering the rows once."""
        if self.Z is not None:
            yield self.Z, y
            return
        for a in range(0, len(self.rows), CHUNK):
            block = standardize(self.X, self.mean, self.scale, rows=self.rows[a : a + CHUNK], cols=self.cols)  # as in memory
            yield torch.from_numpy(block).to(self.dev), y[a : a + CHUNK]


class _Problem:
    """The probes' objective, evaluated for all of them in one pass: f (P,) and its gradient per probe."""

    def __init__(self, data: _Rows, Y: torch.Tensor, C: int, spans: list[tuple[int, int]], pen: dict) -> None:
        self.data, self.Y, self.C, self.spans, self.pen = data, Y, C, spans, pen
        self.n_rows = len(data.rows)

    def __call__(self, x: dict[tuple[int, int], torch.Tensor], sel: dict[tuple[int, int], torch.Tensor]) -> tuple[dict, dict]:
        """x: per span (k, C*w + C) flat parameters of its probes ``sel`` (k,) -> per span f (k,) and
        gradients (k, C*w + C).

        The gradient is the closed form of softmax cross-entropy, (softmax - onehot) / N against the
        rows, plus the penalty's 2 * l2 * W + l1 * W / sqrt(W**2 + eps**2).
        """
        C = self.C
        f = {s: torch.zeros(v.shape[0], device=v.device) for s, v in x.items()}
        g = {s: torch.zeros_like(v) for s, v in x.items()}
        for Z, yb in self.data.chunks(self.Y):
            rows = torch.arange(len(Z), device=Z.device)
            for (a, b), v in x.items():
                G, w = v.shape[0], b - a
                W, bias = v[:, : C * w].reshape(G * C, w), v[:, C * w :]
                Zs = Z[:, a:b]
                logp = torch.log_softmax((Zs @ W.T).view(len(Z), G, C) + bias, dim=2)  # (n, G, C)
                f[(a, b)] -= logp[rows, :, yb].sum(dim=0) / self.n_rows
                dz = logp.exp_()
                dz[rows, :, yb] -= 1.0
                dz /= self.n_rows
                g[(a, b)][:, : C * w] += (dz.view(len(Z), G * C).T @ Zs).view(G, C * w)
                g[(a, b)][:, C * w :] += dz.sum(dim=0)
        for (a, b), v in x.items():
            w = b - a
            l1, l2 = (p[sel[(a, b)]] for p in self.pen[(a, b)])
            W = v[:, : C * w]
            f[(a, b)] += (l2 * W.square()).sum(dim=1)
            g[(a, b)][:, : C * w] += 2 * l2 * W
            if bool((l1 > 0).any()):
                root = (W.square() + EPS**2).sqrt()
                f[(a, b)] += (l1 * (root - EPS)).sum(dim=1)
                g[(a, b)][:, : C * w] += l1 * W / root
        return f, g


def _evaluate(problem: _Problem, points: dict, sel: dict, f: dict, g: dict) -> None:
    """Objective and gradient at ``points`` (per span (G, P)) for the probes ``sel`` only, into f and g."""
    fs, gs = problem({s: points[s][i] for s, i in sel.items()}, sel)
    for s, i in sel.items():
        f[s][i], g[s][i] = fs[s], gs[s]


def _direction(g: torch.Tensor, hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], gamma: torch.Tensor) -> torch.Tensor:
    """-H g per probe (rows of g (G, P)) by the L-BFGS two-loop recursion over (s, y, rho) pairs."""
    q, alphas = g.clone(), []
    for s, y, rho in reversed(hist):
        alpha = rho * (s * q).sum(dim=1)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    r = gamma[:, None] * q
    for (s, y, rho), alpha in zip(hist, reversed(alphas)):
        beta = rho * (y * r).sum(dim=1)
        r += (alpha - beta)[:, None] * s
    return -r


def _restart(state: ProbeState, classes: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Flat parameters (C*w + C,) for normalisation (mean, scale) giving the logits ``state`` gives.

    (x - m0) / s0 = (x - m) / s * (s / s0) + (m - m0) / s0, so W = W0 * s / s0 and b = b0 + W0 (m - m0) / s0.
    """
    if not np.array_equal(state.classes, classes):
        raise ValueError("init: the state was trained on other classes than these rows have")
    W0 = state.coef.astype(np.float64)
    W = W0 * (scale / state.scale)
    b = state.intercept + W0 @ ((mean - state.mean) / state.scale)
    return np.concatenate([W.ravel(), b]).astype(np.float32)


def lbfgs_probes(X: Any, y: np.ndarray, blocks: Sequence[Block], rows: np.ndarray | None = None, *,
                 max_iter: int = 200, tol: float = 1e-5, device: str | torch.device = "cpu",
                 history: int = 10, init: Sequence[ProbeState | None] | None = None,
                 columns: np.ndarray | None = None) -> list[ProbeState]:
    """Train one probe per block on rows ``rows`` of X (N, D) (default all) with labels y (N,), together.

    Every probe runs its own L-BFGS (own history, own backtracking line search): one pass over the
    rows evaluates all of them, and each takes the steps it would take alone. A probe stops when its
    largest gradient entry is below ``tol``, or after ``max_iter`` iterations; its state's ``epochs``
    is the iterations it ran. Statistics of the normalisation come from the training rows.
    ``init`` (one state or None per block) starts a probe from trained weights, e.g. a refit from the
    dev phase: the weights are re-expressed for this normalisation, so the start predicts as ``init`` did.
    ``columns`` (D',) are the columns of X the blocks index, in that order (default all): the probes see
    ``X[:, columns]`` without a copy of it being made.
    """
    rows = np.arange(len(X)) if rows is None else np.asarray(rows)
    classes, y_idx = np.unique(np.asarray(y)[rows], return_inverse=True)
    C, dev = len(classes), torch.device(device)
    every = len(rows) == len(X) and bool((rows == np.arange(len(X))).all())
    mean, scale = column_stats(X, None if every else rows)  # streamed over shards (with their checks) when read on demand
    if columns is not None:
        columns = np.asarray(columns)
        mean, scale = mean[columns], scale[columns]
    Y = torch.from_numpy(y_idx.astype(np.int64)).to(dev)
    spans = sorted({(b.start, b.end) for b in blocks})
    members = {s: [i for i, b in enumerate(blocks) if (b.start, b.end) == s] for s in spans}
    pen = {s: tuple(torch.tensor([blocks[i][j] for i in m], dtype=torch.float32, device=dev)[:, None]
                    for j in (2, 3)) for s, m in members.items()}
    problem = _Problem(_Rows(X, rows, mean, scale, dev, columns), Y, C, spans, pen)
    x = {s: torch.zeros(len(m), C * (s[1] - s[0]) + C, device=dev) for s, m in members.items()}
    for s, m in members.items():
        for j, i in enumerate(m):
            if init is not None and init[i] is not None:
                x[s][j] = torch.from_numpy(_restart(init[i], classes, mean[s[0] : s[1]], scale[s[0] : s[1]])).to(dev)
    f = {s: torch.zeros(len(m), device=dev) for s, m in members.items()}
    g = {s: torch.zeros_like(v) for s, v in x.items()}
    _evaluate(problem, x, {s: torch.arange(len(m), device=dev) for s, m in members.items()}, f, g)
    hist: dict = {s: [] for s in spans}
    gamma = {s: torch.ones(len(m), device=dev) for s, m in members.items()}
    iters = {s: torch.zeros(len(m), dtype=torch.long, device=dev) for s, m in members.items()}
    active = {s: g[s].abs().amax(dim=1) > tol for s in spans}
    # A bound on the objective's curvature: unit-variance columns give trace(Z'Z / N) = w, softmax's
    # Hessian factor is at most 1/2. The first step, -g / L, needs no backtracking; L-BFGS then scales.
    lipschitz = {s: 0.5 * (s[1] - s[0] + 1) + 2 * pen[s][1][:, 0] + pen[s][0][:, 0] / EPS for s in spans}
    for _ in range(max_iter):
        if not any(a.any() for a in active.values()):
            break
        moving = [s for s in spans if active[s].any()]  # spans whose probes all converged are left alone
        d, t, gtd = {}, {}, {}
        for s in moving:
            d[s] = _direction(g[s], hist[s], gamma[s]) if hist[s] else -g[s] / lipschitz[s][:, None]
            gtd[s] = (g[s] * d[s]).sum(dim=1)
            t[s] = active[s].float()  # converged probes of a moving span stay where they are
        trial = {s: x[s] + t[s][:, None] * d[s] for s in moving}
        f_new, g_new = {s: f[s].clone() for s in moving}, {s: g[s].clone() for s in moving}
        _evaluate(problem, trial, {s: active[s].nonzero()[:, 0] for s in moving}, f_new, g_new)  # only probes still moving
        for _ in range(30):  # backtracking (Armijo) per probe; only the probes whose step was rejected are evaluated again
            bad = {s: active[s] & (f_new[s] > f[s] + 1e-4 * t[s] * gtd[s]) for s in moving}
            redo = {s: bad[s].nonzero()[:, 0] for s in moving if bad[s].any()}
            if not redo:
                break
            for s in redo:
                t[s] = torch.where(bad[s], t[s] * 0.5, t[s])  # accepted probes keep their step
                trial[s] = x[s] + t[s][:, None] * d[s]
            _evaluate(problem, trial, redo, f_new, g_new)
        for s in moving:
            step, dy = trial[s] - x[s], g_new[s] - g[s]
            ys = (step * dy).sum(dim=1)
            norms = ((step * step).sum(dim=1) * (dy * dy).sum(dim=1)).sqrt()
            ok = active[s] & (ys > 1e-8 * norms) & (ys > 0)  # curvature relative to the step: small steps count
            rho = torch.where(ok, 1.0 / ys.clamp(min=1e-30), torch.zeros_like(ys))  # rho 0: no update
            hist[s] = (hist[s] + [(step, dy, rho)])[-history:]
            gamma[s] = torch.where(ok, ys / (dy * dy).sum(dim=1).clamp(min=1e-20), gamma[s])
            stalled = active[s] & ((f[s] - f_new[s]).abs() <= 1e-9 * f[s].abs().clamp(min=1))
            x[s], f[s], g[s] = trial[s], f_new[s], g_new[s]
            iters[s] += active[s].long()
            active[s] = active[s] & ~stalled & (g[s].abs().amax(dim=1) > tol)
    states: list[ProbeState | None] = [None] * len(blocks)
    for s, m in members.items():
        w = s[1] - s[0]
        for j, i in enumerate(m):
            v = x[s][j].cpu().numpy().astype(np.float32)
            states[i] = ProbeState(classes, np.ascontiguousarray(v[: C * w].reshape(C, w)), v[C * w :].copy(),
                                   mean[s[0] : s[1]], scale[s[0] : s[1]], int(iters[s][j]))
    return states  # type: ignore[return-value]
