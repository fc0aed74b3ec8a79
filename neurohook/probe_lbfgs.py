"""Full-batch L-BFGS for many elastic-net probes at once: the solver of the tuned default probe.

Each probe is a column block [start, end) of one feature matrix and its own penalties (l1, l2). The
probes over one block are one weight tensor (G, C, w), so a whole λ grid costs one matrix product per
block and pass. The summed objective separates over probes and is strictly convex for l2 > 0, so its
minimiser is every probe's own optimum: training a probe alone ends at the same weights, up to the
convergence tolerance (the tests check this against scikit-learn).

Objective of one probe, on z-normalised features (statistics of the training rows)::

    mean cross-entropy + l1 * sum(sqrt(W**2 + eps**2) - eps) + l2 * sum(W**2)      (weights only)

The l1 term is the smooth (pseudo-Huber, eps = 1e-4) form of ``l1 * sum|W|``, which L-BFGS needs.

Memory: the training rows are never copied. Each pass gathers and z-normalises them block by block
into one reused buffer (:func:`neurohook.zscore.standardize`, a compiled one-pass kernel), so a study
holds its feature matrix and little else. A rejected step is halved without further passes: logits
are affine along the search line, so the objective at any step follows from the logits kept at the
current point and at the trial; one pass then evaluates where the step stops.

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
LOGITS_ELEMENTS = 1 << 25  # most logits (rows x probes x classes) kept for the line search (128 MB a copy)
BLOCK_ELEMENTS = 1 << 23  # values per block of training rows on the CPU (32 MB float32: cache-sized)


class Block(NamedTuple):
    """One probe of :func:`lbfgs_probes`: columns [start, end) and its penalties."""

    start: int
    end: int
    l1: float
    l2: float


class _Rows:
    """The z-normalised training rows, block by block: on the CPU each block is gathered and normalised
    into one reused buffer per pass (no copy of the rows: the matrix products, not the gather, bound the
    time); on a GPU the rows are normalised once and kept there."""

    def __init__(self, X: Any, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, dev: torch.device,
                 cols: np.ndarray | None = None) -> None:
        self.X, self.rows, self.dev, self.cols = X, rows, dev, cols
        self.mean, self.scale = mean, scale
        width = X.shape[1] if cols is None else len(cols)
        self.Z = None
        if dev.type != "cpu":  # one transfer, not one per pass
            self.Z = torch.from_numpy(standardize(X, mean, scale, rows=rows, cols=cols)).to(dev)
        # features read on demand: CHUNK rows a read, as everywhere else
        self.block = CHUNK if _is_row_source(X) else max(CHUNK, BLOCK_ELEMENTS // max(width, 1))
        self.buffer = np.empty((min(self.block, len(rows)), width), dtype=np.float32)

    def chunks(self, y: torch.Tensor):
        """(Z, y) blocks covering the rows once (a block is overwritten by the next)."""
        if self.Z is not None:
            yield self.Z, y
            return
        for a in range(0, len(self.rows), self.block):
            r = self.rows[a : a + self.block]
            block = standardize(self.X, self.mean, self.scale, rows=r, cols=self.cols, out=self.buffer[: len(r)])
            yield torch.from_numpy(block), y[a : a + self.block]


class _Problem:
    """The probes' objective, evaluated for all of them in one pass: f (P,) and its gradient per probe."""

    def __init__(self, data: _Rows, Y: torch.Tensor, C: int, spans: list[tuple[int, int]], pen: dict) -> None:
        self.data, self.Y, self.C, self.spans, self.pen = data, Y, C, spans, pen
        self.n_rows = len(data.rows)

    def __call__(self, x: dict[tuple[int, int], torch.Tensor], sel: dict[tuple[int, int], torch.Tensor],
                 logits: dict | None = None) -> tuple[dict, dict]:
        """x: per span (k, C*w + C) flat parameters of its probes ``sel`` (k,) -> per span f (k,) and
        gradients (k, C*w + C); with ``logits`` (per span (n, G, C)), the probes' logits per row are
        written into its columns ``sel``.

        The gradient is the closed form of softmax cross-entropy, (softmax - onehot) / N against the
        rows, plus the penalty's 2 * l2 * W + l1 * W / sqrt(W**2 + eps**2).
        """
        C = self.C
        f = {s: torch.zeros(v.shape[0], device=v.device) for s, v in x.items()}
        g = {s: torch.zeros_like(v) for s, v in x.items()}
        start = 0
        for Z, yb in self.data.chunks(self.Y):
            rows = torch.arange(len(Z), device=Z.device)
            for (a, b), v in x.items():
                G, w = v.shape[0], b - a
                W, bias = v[:, : C * w].reshape(G * C, w), v[:, C * w :]
                Zs = Z[:, a:b]
                z = (Zs @ W.T).view(len(Z), G, C) + bias
                if logits is not None:
                    logits[(a, b)][start : start + len(Z), sel[(a, b)]] = z
                logp = torch.log_softmax(z, dim=2)  # (n, G, C)
                f[(a, b)] -= logp[rows, :, yb].sum(dim=0) / self.n_rows
                dz = logp.exp_()
                dz[rows, :, yb] -= 1.0
                dz /= self.n_rows
                g[(a, b)][:, : C * w] += (dz.view(len(Z), G * C).T @ Zs).view(G, C * w)
                g[(a, b)][:, C * w :] += dz.sum(dim=0)
            start += len(Z)
        for s, v in x.items():
            fp, gp = self.penalty(s, sel[s], v)
            f[s] += fp
            g[s][:, : gp.shape[1]] += gp
        return f, g

    def penalty(self, span: tuple[int, int], sel: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penalty (k,) of the probes ``sel`` of ``span`` at parameters v (k, C*w + C), and its
        gradient (k, C*w) in the weights."""
        W = v[:, : self.C * (span[1] - span[0])]
        l1, l2 = (p[sel] for p in self.pen[span])
        f, g = (l2 * W.square()).sum(dim=1), 2 * l2 * W
        if bool((l1 > 0).any()):
            root = (W.square() + EPS**2).sqrt()
            f, g = f + (l1 * (root - EPS)).sum(dim=1), g + l1 * W / root
        return f, g

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (k,) of logits z (n, k, C) of every row."""
        logp = torch.log_softmax(z, dim=2)
        return -logp[torch.arange(len(z), device=z.device), :, self.Y].sum(dim=0) / self.n_rows


def _evaluate(problem: _Problem, points: dict, sel: dict, f: dict, g: dict, logits: dict | None = None) -> None:
    """Objective and gradient at ``points`` (per span (G, P)) for the probes ``sel`` only, into f and g
    (and their logits per row into ``logits``)."""
    fs, gs = problem({s: points[s][i] for s, i in sel.items()}, sel, logits)
    for s, i in sel.items():
        f[s][i], g[s][i] = fs[s], gs[s]


def _backtrack(problem: _Problem, span: tuple[int, int], sel: torch.Tensor, at_x: torch.Tensor, at_trial: torch.Tensor,
               x: torch.Tensor, d: torch.Tensor, t: torch.Tensor, f0: torch.Tensor, gtd: torch.Tensor) -> torch.Tensor:
    """Armijo backtracking (halving) without passes over the rows: steps (k,) for the probes ``sel``
    whose step t (k,) was rejected. Logits are affine along a line, so those at step t' are
    ``at_x + (t'/t) (at_trial - at_x)`` from the logits (n, k, C) at x and at the trial."""
    step, pending = t.clone(), torch.ones_like(t, dtype=torch.bool)
    for _ in range(30):
        step = torch.where(pending, step * 0.5, step)
        z = at_x + (step / t)[None, :, None] * (at_trial - at_x)
        f = problem.loss(z) + problem.penalty(span, sel, x + step[:, None] * d)[0]
        pending &= f > f0 + 1e-4 * step * gtd
        if not pending.any():
            break
    return step


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


def _line_search(problem: _Problem, moving: list, x: dict, d: dict, t: dict, gtd: dict, f: dict, g: dict,
                 active: dict, at_x: dict | None) -> tuple[dict, dict, dict, dict | None]:
    """Armijo steps from x along d for the spans ``moving``: (trial points, their objectives, gradients,
    kept logits or None). Each active probe starts at step t (per probe, updated in place) and halves
    it until its objective falls enough; only the probes whose step was rejected are evaluated again.
    With the logits at x kept (``at_x``), rejected steps are first halved on those logits, no pass."""
    trial = {s: x[s] + t[s][:, None] * d[s] for s in moving}
    f_new, g_new = {s: f[s].clone() for s in moving}, {s: g[s].clone() for s in moving}
    at_trial = None if at_x is None else {s: at_x[s].clone() for s in moving}
    _evaluate(problem, trial, {s: active[s].nonzero()[:, 0] for s in moving}, f_new, g_new, at_trial)  # probes still moving

    def rejected() -> tuple[dict, dict]:
        bad = {s: active[s] & (f_new[s] > f[s] + 1e-4 * t[s] * gtd[s]) for s in moving}
        return bad, {s: bad[s].nonzero()[:, 0] for s in moving if bad[s].any()}

    if at_x is not None and at_trial is not None:  # halved on the kept logits, then one pass evaluates where they stop
        _, redo = rejected()
        for s, i in redo.items():
            t[s][i] = _backtrack(problem, s, i, at_x[s][:, i], at_trial[s][:, i], x[s][i], d[s][i], t[s][i], f[s][i],
                                 gtd[s][i])
            trial[s] = x[s] + t[s][:, None] * d[s]
        if redo:
            _evaluate(problem, trial, redo, f_new, g_new, at_trial)
    for _ in range(30):
        bad, redo = rejected()
        if not redo:
            break
        for s in redo:
            t[s] = torch.where(bad[s], t[s] * 0.5, t[s])  # accepted probes keep their step
            trial[s] = x[s] + t[s][:, None] * d[s]
        _evaluate(problem, trial, redo, f_new, g_new, at_trial)
    return trial, f_new, g_new, at_trial


def _curvature_pair(step: torch.Tensor, dy: torch.Tensor, active: torch.Tensor
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """L-BFGS's update from steps and gradient changes (P, n) of P probes: (which probes take it (P,),
    the history pair (step, dy, rho) with rho 0 where they do not, the initial Hessian scale (P,))."""
    ys = (step * dy).sum(dim=1)
    norms = ((step * step).sum(dim=1) * (dy * dy).sum(dim=1)).sqrt()
    ok = active & (ys > 1e-8 * norms) & (ys > 0)  # curvature relative to the step: small steps count
    rho = torch.where(ok, 1.0 / ys.clamp(min=1e-30), torch.zeros_like(ys))  # rho 0: no update
    return ok, (step, dy, rho), ys / (dy * dy).sum(dim=1).clamp(min=1e-20)


def _start(members: dict, classes: np.ndarray, mean: np.ndarray, scale: np.ndarray,
           init: Sequence[ProbeState | None] | None, dev: torch.device) -> dict:
    """Starting points (probes, C * w + C) per span: zeros, or a block's ``init`` state re-expressed."""
    C = len(classes)
    x = {s: torch.zeros(len(m), C * (s[1] - s[0]) + C, device=dev) for s, m in members.items()}
    for s, m in members.items():
        for j, i in enumerate(m):
            if init is not None and init[i] is not None:
                x[s][j] = torch.from_numpy(_restart(init[i], classes, mean[s[0] : s[1]], scale[s[0] : s[1]])).to(dev)
    return x


def _state(v: torch.Tensor, classes: np.ndarray, mean: np.ndarray, scale: np.ndarray, iters: int) -> ProbeState:
    """A probe's state from its point v (C * w + C,): weights (C, w) then intercepts (C,)."""
    C, w = len(classes), len(mean)
    a = v.cpu().numpy().astype(np.float32)
    return ProbeState(classes, np.ascontiguousarray(a[: C * w].reshape(C, w)), a[C * w :].copy(), mean, scale, iters)


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
    x = _start(members, classes, mean, scale, init, dev)
    f = {s: torch.zeros(len(m), device=dev) for s, m in members.items()}
    g = {s: torch.zeros_like(v) for s, v in x.items()}
    # the probes' logits per row at x, kept when small: a rejected step is then halved without passes
    at_x = ({s: torch.zeros(len(rows), len(m), C, device=dev) for s, m in members.items()}
            if len(rows) * len(blocks) * C <= LOGITS_ELEMENTS else None)
    _evaluate(problem, x, {s: torch.arange(len(m), device=dev) for s, m in members.items()}, f, g, at_x)
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
        trial, f_new, g_new, at_trial = _line_search(problem, moving, x, d, t, gtd, f, g, active, at_x)
        for s in moving:
            ok, pair, scale_s = _curvature_pair(trial[s] - x[s], g_new[s] - g[s], active[s])
            hist[s] = (hist[s] + [pair])[-history:]
            gamma[s] = torch.where(ok, scale_s, gamma[s])
            stalled = active[s] & ((f[s] - f_new[s]).abs() <= 1e-9 * f[s].abs().clamp(min=1))
            x[s], f[s], g[s] = trial[s], f_new[s], g_new[s]
            if at_x is not None:
                at_x[s] = at_trial[s]
            iters[s] += active[s].long()
            active[s] = active[s] & ~stalled & (g[s].abs().amax(dim=1) > tol)
    states: list[ProbeState | None] = [None] * len(blocks)
    for s, m in members.items():
        for j, i in enumerate(m):
            states[i] = _state(x[s][j], classes, mean[s[0] : s[1]], scale[s[0] : s[1]], int(iters[s][j]))
    return states  # type: ignore[return-value]
