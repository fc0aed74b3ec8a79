"""The batched probe trainer: many elastic-net probes over column blocks of one feature matrix at once.

:func:`train_probes` is the engine behind :func:`neurohook.probe.fit_probes` and
:meth:`neurohook.LinearProbe.fit`. It works in three steps:

1. **plan** (:func:`plan_units`): probes of one width at the same column starts form a *unit*, for
   all their seeds; an ALL probe over exactly the columns its layers tile is *fused* with them;
2. **data** (:class:`_Data`): the z-normalised features of each unit in a (k, N, w) layout, so that
   one ``index_select`` of a minibatch's rows is already the batch of one ``torch.bmm``;
3. **training** (:class:`_Training`): Adam on the summed cross-entropy of every probe plus the
   elastic-net penalty (its gradient added in place), with optional early stopping per probe.

As the summed loss separates and Adam is elementwise, each probe ends where training it alone would
(up to float32 summation order). The hyper-parameters are a :class:`neurohook.LinearProbe`'s.

Example::

    states = train_probes(X, y, [ProbeSpec(0, 768, seed=0), ProbeSpec(0, X.shape[1], seed=0)], LinearProbe())
    states[0].coef                                     # (C, 768) on normalised features
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from neurohook.features import Features, FeatureSource
from neurohook.zscore import column_stats

__all__ = ["ProbeSpec", "ProbeState", "plan_units", "train_probes"]

logger = logging.getLogger(__name__)

Unit = tuple[int, tuple[int, ...]]  # probes trained in one bmm: (width, column starts)


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a batched fit: columns [start, end) of the feature matrix and a seed."""

    start: int
    end: int
    seed: int = 0


class ProbeState(NamedTuple):
    """What training learned for one probe (weights on z-normalised features)."""

    classes: np.ndarray  # (C,) sorted labels
    coef: np.ndarray  # (C, w) float32
    intercept: np.ndarray  # (C,) float32
    mean: np.ndarray  # (w,) float64 training means
    scale: np.ndarray  # (w,) float64 training standard deviations (1 where 0)
    epochs: int  # epochs run


def plan_units(specs: Sequence[ProbeSpec]) -> tuple[dict[Unit, list[int]], dict[tuple[int, int], list[int]], dict[Unit, Unit]]:
    """(units -> seeds, (seed, width) -> column starts, fused ALL unit -> its layer unit).

    A unit is k probes of one width w at the same column starts, for each of S seeds: their weights
    are one (k, S, C, w) tensor. A single probe over exactly the columns a unit's probes tile, for the
    same seeds (ALL beside its layers), is fused with that unit: one bmm gives both.
    """
    starts_of: dict[tuple[int, int], list[int]] = {}
    for s in specs:
        starts = starts_of.setdefault((s.seed, s.end - s.start), [])
        if s.start not in starts:
            starts.append(s.start)
    units: dict[Unit, list[int]] = {}
    for (seed, w), starts in sorted(starts_of.items()):
        units.setdefault((w, tuple(starts)), []).append(seed)  # seeds in increasing order
    fused: dict[Unit, Unit] = {}
    for (w, starts), ss in units.items():
        if len(starts) > 1 and list(starts) == list(range(starts[0], starts[0] + w * len(starts), w)):
            whole = (w * len(starts), (starts[0],))
            if units.get(whole) == ss:
                fused[whole] = (w, starts)
    return units, starts_of, fused


def _is_row_source(X: Any) -> bool:
    """Features read on demand (a :class:`~neurohook.features.FeatureSource` without values in memory,
    e.g. :class:`neurohook.shards.ShardedFeatures`)."""
    return isinstance(X, FeatureSource) and not isinstance(X, Features)


class _Data:
    """Normalised rows of each unit's columns, gathered as (k, B, w) into reused buffers."""

    def __init__(self, X: Any, mean: np.ndarray, scale: np.ndarray, units: Sequence[Unit], dev: torch.device) -> None:
        self.X, self.mean, self.scale, self.dev = X, mean, scale, dev
        self.buffers: dict[tuple[Unit, int], torch.Tensor] = {}  # (unit, rows) -> output: no fresh pages per step
        self.on_demand = _is_row_source(X)  # read per minibatch
        if self.on_demand:
            return
        Z = torch.from_numpy(((X - mean) / scale).astype(np.float32)).to(dev)
        self.data = {u: (Z[:, u[1][0] : u[1][0] + u[0]] if len(u[1]) == 1 else  # (N, w) view, or (k * N, w)
                         torch.stack([Z[:, a : a + u[0]] for a in u[1]]).flatten(0, 1)) for u in units}
        self.offsets = {u: torch.arange(len(u[1]), device=dev)[:, None] * len(X) for u in units}  # (k, 1)

    def gather(self, unit: Unit, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (B,) of the unit's k column blocks, normalised: (k, B, w) float32."""
        w, starts = unit
        if self.on_demand:
            cols = np.concatenate([np.arange(a, a + w) for a in starts])
            block = (self.X.rows(idx.cpu().numpy())[:, cols] - self.mean[cols]) / self.scale[cols]
            return torch.from_numpy(block.astype(np.float32)).view(len(idx), len(starts), w).transpose(0, 1).contiguous().to(self.dev)
        flat = (idx[None] + self.offsets[unit]).view(-1)  # one index_select: rows of all k blocks
        if (unit, len(flat)) not in self.buffers:
            self.buffers[(unit, len(flat))] = torch.empty(len(flat), w, device=self.dev)
        out = torch.index_select(self.data[unit], 0, flat, out=self.buffers[(unit, len(flat))])
        return out.view(len(starts), len(idx), w)


class _Training:
    """Weights, optimiser and logits of every unit; one call of :meth:`epoch` is one pass over the data."""

    def __init__(self, units: dict[Unit, list[int]], fused: dict[Unit, Unit], C: int, lr: float, dev: torch.device) -> None:
        self.units, self.fused, self.C = units, fused, C
        self.whole_of = {layer: whole for whole, layer in fused.items()}
        # A fused layer unit holds (k, S, 2C, w): each layer's weights, then ALL's slice of that layer.
        self.weight = {u: torch.zeros(len(u[1]), len(ss), 2 * C if u in self.whole_of else C, u[0], device=dev,
                                      requires_grad=True) for u, ss in units.items() if u not in fused}
        self.bias = {u: torch.zeros(len(u[1]), len(ss), C, device=dev, requires_grad=True) for u, ss in units.items()}
        self.opt = torch.optim.Adam([*self.weight.values(), *self.bias.values()], lr=lr, fused=True)

    def weights_of(self, unit: Unit) -> torch.Tensor:
        """Weights (k, S, C, w) of a unit's probes (a copy for an ALL unit trained with its layers)."""
        C = self.C
        if unit in self.fused:
            Wcat = self.weight[self.fused[unit]]
            return Wcat[:, :, C:].permute(1, 2, 0, 3).reshape(1, Wcat.shape[1], C, unit[0])
        return self.weight[unit][:, :, :C]

    def logits_of(self, unit: Unit, xs: torch.Tensor) -> torch.Tensor:
        """Logits (k, S, C, B) of a unit's probes for its gathered rows xs (k, S * B, w)."""
        W, b, C = self.weights_of(unit), self.bias[unit], self.C
        k, S, w = W.shape[0], W.shape[1], unit[0]
        out = torch.baddbmm(b.reshape(k * S, C, 1), W.reshape(k * S, C, w), xs.view(k * S, -1, w).transpose(1, 2))
        return out.view(k, S, C, -1)

    def step_logits(self, unit: Unit, xs: torch.Tensor) -> list[torch.Tensor]:
        """Training logits (k, S, C, B) of a unit's probes, then (1, S, C, B) of its ALL probe if fused.

        Classes come before rows so that autograd's weight gradient reads xs in its own layout.
        """
        W, C = self.weight[unit], self.C
        if W.shape[2] == C:
            return [self.logits_of(unit, xs)]
        k, S, w = W.shape[0], W.shape[1], unit[0]
        out = torch.bmm(W.view(k * S, 2 * C, w), xs.view(k * S, -1, w).transpose(1, 2)).view(k, S, 2 * C, -1)
        whole_bias = self.bias[self.whole_of[unit]][0][..., None]
        return [out[:, :, :C] + self.bias[unit][..., None], (out[:, :, C:].sum(dim=0) + whole_bias)[None]]

    def epoch(self, data: _Data, Y: torch.Tensor, perms: dict[int, torch.Tensor], batch_size: int, l1: float,
              l2: float) -> None:
        """One pass over the training rows ``perms[seed]`` in minibatches of ``batch_size``."""
        n_train = len(next(iter(perms.values())))
        for start in range(0, n_train, batch_size):
            loss = torch.zeros((), device=Y.device)
            for unit in self.weight:
                ss = self.units[unit]
                idx = torch.cat([perms[s][start : start + batch_size] for s in ss])
                xs, yrow = data.gather(unit, idx), Y[idx].view(len(ss), -1)
                for logits in self.step_logits(unit, xs):  # (k, S, C, B)
                    k = logits.shape[0]
                    ce = torch.nn.functional.cross_entropy(logits.reshape(k * len(ss), self.C, -1), yrow.repeat(k, 1),
                                                           reduction="sum")
                    loss = loss + ce / yrow.shape[1]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # the penalty's gradient, l1 * sign(W) + 2 * l2 * W, added in place
                for W in self.weight.values():
                    if l1:
                        W.grad.add_(torch.sign(W), alpha=l1)
                    if l2:
                        W.grad.add_(W, alpha=2 * l2)
            self.opt.step()

    def accuracy(self, unit: Unit, data: _Data, Y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Accuracy (k, S) of a unit's probes on rows ``idx`` (S * B,), seed-major."""
        with torch.no_grad():
            S = len(self.units[unit])
            return (self.logits_of(unit, data.gather(unit, idx)).argmax(2) == Y[idx].view(S, -1)).float().mean(dim=2)

    def snapshot(self) -> dict[Unit, tuple[torch.Tensor, torch.Tensor]]:
        """Detached (weights, bias) of every unit."""
        return {u: (self.weights_of(u).detach().clone(), self.bias[u].detach().clone()) for u in self.units}


def _stratified_holdout(y_idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (N,) of a validation part holding `fraction` of each class (at least one of each)."""
    val = np.zeros(len(y_idx), dtype=bool)
    for c in np.unique(y_idx):
        rows = np.flatnonzero(y_idx == c)
        k = int(round(fraction * len(rows)))
        if len(rows) > 1:
            val[rng.choice(rows, size=min(max(k, 1), len(rows) - 1), replace=False)] = True
    return val


def train_probes(X: Any, y: np.ndarray, specs: Sequence[ProbeSpec], params: Any) -> list[ProbeState]:
    """Train one probe per spec (columns of X (N, D) and a seed) together; ``params`` is a LinearProbe.

    X and y are already checked (X an array or features read on demand, y (N,) with >= 2 classes).
    With early stopping each probe keeps its own best epoch on its held-out rows, but training stops
    only when no probe improved for ``patience`` epochs. Memory: up to one normalised float32 copy of X.
    """
    if params.epochs < 1 or params.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {params.epochs} and {params.batch_size}")
    classes, y_idx = np.unique(y, return_inverse=True)
    dev = torch.device(params.device)
    mean, scale = column_stats(X)
    Y = torch.from_numpy(y_idx.astype(np.int64)).to(dev)
    units, starts_of, fused = plan_units(specs)
    seeds = sorted({s.seed for s in specs})
    rows: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}  # per seed: training rows, validation rows
    for seed in seeds:
        if params.early_stopping:
            val = _stratified_holdout(y_idx, params.validation_fraction, np.random.default_rng(seed))
            rows[seed] = (torch.from_numpy(np.flatnonzero(~val)).to(dev), torch.from_numpy(np.flatnonzero(val)).to(dev))
        else:
            rows[seed] = (torch.arange(len(X), device=dev), None)
    n_train = len(rows[seeds[0]][0])
    data = _Data(X, mean, scale, list(units), dev)
    run = _Training(units, fused, len(classes), params.lr, dev)
    gens = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    best = run.snapshot() if params.early_stopping else {}
    best_acc = {u: torch.full(run.bias[u].shape[:2], -1.0, device=dev) for u in units}
    stale = epochs_run = 0
    for epoch in range(params.epochs):
        epochs_run = epoch + 1
        perms = {s: rows[s][0][torch.randperm(n_train, generator=gens[s]).to(dev)] for s in seeds}
        run.epoch(data, Y, perms, params.batch_size, params.l1, params.l2)
        if not params.early_stopping:
            continue
        improved = False
        for unit, ss in units.items():
            acc = run.accuracy(unit, data, Y, torch.cat([rows[s][1] for s in ss]))
            better = acc > best_acc[unit]  # (k, S)
            if better.any():
                improved = True
                best_acc[unit] = torch.where(better, acc, best_acc[unit])
                best[unit][0][better] = run.weights_of(unit).detach()[better]
                best[unit][1][better] = run.bias[unit].detach()[better]
        stale = 0 if improved else stale + 1
        if stale >= params.patience:
            logger.info("early stopping after epoch %d: no probe improved for %d epochs", epoch + 1, params.patience)
            break
    final = best if params.early_stopping else run.snapshot()
    states = []
    for s in specs:
        unit = (s.end - s.start, tuple(starts_of[(s.seed, s.end - s.start)]))
        j, si = unit[1].index(s.start), units[unit].index(s.seed)
        W, b = (t[j, si].cpu().numpy() for t in final[unit])
        states.append(ProbeState(classes, np.ascontiguousarray(W, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32),
                                 mean[s.start : s.end], scale[s.start : s.end], epochs_run))
    return states
