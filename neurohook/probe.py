"""Linear probes: multinomial logistic regression with the elastic-net penalty of the paper's eq. 2.

``LinearProbe`` follows scikit-learn's conventions (hyper-parameters in ``__init__``, ``fit`` /
``predict`` / ``predict_proba`` / ``score``, learned state with a trailing underscore).
:func:`fit_probes` trains many probes over column blocks of one feature matrix (every layer and
ALL, for several seeds) in one batched loop; each probe ends exactly where training it alone would.

Normalisation: features are z-normalised with the training set's mean and standard deviation, kept
in the probe (``mean_``, ``scale_``), so that ``|coef_|`` compares neurons on one scale whatever
their raw ranges. ``coef_`` is therefore the weight on *normalised* features, which is what the
ranking uses; :meth:`LinearProbe.transform` gives the matching features. Zeroing a neuron in that
space (the ablation of :mod:`neurohook.ablation`) sets it to its training mean.

Loss: mean cross-entropy of a minibatch + l1 * sum|W| + l2 * sum W^2 (weights only, not biases),
minimised with Adam (lr 1e-3), 20 epochs, batch 128 by default (section 4.3). Weights start at
zero, the minibatch order comes from ``seed``: training is deterministic on a given device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from neurohook.errors import DataError

__all__ = ["LinearProbe", "ProbeSpec", "fit_probes"]

logger = logging.getLogger(__name__)

_Unit = tuple[int, tuple[int, ...]]  # probes trained in one bmm: (width, column starts)


def _is_row_source(X: Any) -> bool:
    """Features read on demand (e.g. :class:`neurohook.shards.ShardedFeatures`): ``rows``, ``column_stats``."""
    return hasattr(X, "rows") and hasattr(X, "column_stats") and hasattr(X, "shape")


def _check_features(X: Any, name: str = "X") -> Any:
    if _is_row_source(X):
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name} with shape {X.shape} holds NaN or Inf ({int(bad.sum())} values; first at row {row}, column {col})")
    return X


def _check_labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), got {y.shape}")
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels but X has {n} rows")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"a probe needs at least two classes in its training labels, got only {classes.tolist()}")
    return y


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a batched fit: columns [start, end) of the feature matrix and a seed."""

    start: int
    end: int
    seed: int = 0


class LinearProbe:
    """Elastic-net multinomial logistic regression probe on z-normalised features.

    Example::

        probe = LinearProbe(l1=1e-5, l2=1e-5).fit(X_train, y_train)   # X: (N, D), y: (N,)
        probe.score(X_test, y_test); probe.coef_                       # coef_: (C, D)
    """

    def __init__(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 3,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, as given to ``__init__``."""
        return {k: getattr(self, k) for k in (
            "l1", "l2", "epochs", "batch_size", "lr", "seed", "device", "early_stopping",
            "validation_fraction", "patience")}

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        """Train on features X (N, D) and labels y (N,) of any values; returns self.

        X may be an array or features read on demand (:class:`neurohook.shards.ShardedFeatures`),
        which are then read one minibatch at a time.
        """
        X = _check_features(X)
        (fitted,) = fit_probes(X, y, [ProbeSpec(0, X.shape[1], self.seed)], **{
            k: v for k, v in self.get_params().items() if k != "seed"})
        self.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LinearProbe is not fitted yet: call fit(X, y) first")

    def transform(self, X: Any) -> np.ndarray:
        """Features X (N, D) z-normalised with the training statistics, float32 C-contiguous (N, D)."""
        self._require_fitted()
        X = _check_features(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns but the probe was trained on {self.coef_.shape[1]}")
        return np.ascontiguousarray((X - self.mean_) / self.scale_, dtype=np.float32)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (N, C) for features X (N, D) (an array, or features read on demand, in blocks)."""
        if _is_row_source(X):
            return np.concatenate([self.decision_function(block) for _, block in X.chunks()])
        return self.transform(X) @ self.coef_.T + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        z = self.decision_function(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (N,), values from ``classes_``."""
        logits = self.decision_function(X)
        return self.classes_[logits.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on features X (N, D) and labels y (N,); labels unseen in training count as errors."""
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} labels but X has {len(X)} rows")
        return float(np.mean(self.predict(X) == y))

    def encode(self, y: Any) -> np.ndarray:
        """Class indices (N,) int64 of labels y (N,); a label unseen in training is an error."""
        self._require_fitted()
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"labels {np.unique(y[unknown])[:5].tolist()} were not seen in training")
        return idx.astype(np.int64)


def _stratified_holdout(y_idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (N,) of a validation part holding `fraction` of each class (at least one of each)."""
    val = np.zeros(len(y_idx), dtype=bool)
    for c in np.unique(y_idx):
        rows = np.flatnonzero(y_idx == c)
        k = int(round(fraction * len(rows)))
        if len(rows) > 1:
            val[rng.choice(rows, size=min(max(k, 1), len(rows) - 1), replace=False)] = True
    return val


def fit_probes(
    X: Any,
    y: Any,
    specs: Sequence[ProbeSpec],
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    early_stopping: bool = False,
    validation_fraction: float = 0.1,
    patience: int = 3,
) -> list[LinearProbe]:
    """Train one probe per spec (columns of X (N, D) and a seed) together; returns fitted LinearProbes.

    Probes of one width at the same column starts train together for all their seeds: each step is
    one gather of the seeds' minibatches and one ``torch.bmm``; an ALL probe beside its layers shares
    their bmm. As the summed loss separates and Adam is elementwise, each result equals fitting that
    probe alone (up to float32 summation order). With early stopping each probe keeps its own best
    epoch, but training stops only when no probe improved for ``patience`` epochs. Memory: up to one
    normalised float32 copy of X more.
    """
    X = _check_features(X)
    y = _check_labels(y, len(X))
    if not specs:
        raise ValueError("specs is empty: give at least one ProbeSpec")
    for s in specs:
        if not 0 <= s.start < s.end <= X.shape[1]:
            raise ValueError(f"probe columns [{s.start}, {s.end}) are outside X's {X.shape[1]} columns")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    classes, y_idx = np.unique(y, return_inverse=True)
    C = len(classes)
    dev = torch.device(device)

    if _is_row_source(X):
        mean, scale = X.column_stats()
    else:
        mean, scale = X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    Y = torch.from_numpy(y_idx.astype(np.int64)).to(dev)

    # A "unit" is k probes of one width w at the same column starts, for each of S seeds: their
    # weights are one (k, S, C, w) tensor and one step is one gather and one bmm for all of them.
    starts_of: dict[tuple[int, int], list[int]] = {}  # (seed, w) -> column starts, in spec order
    for s in specs:
        starts = starts_of.setdefault((s.seed, s.end - s.start), [])
        if s.start not in starts:
            starts.append(s.start)
    units: dict[_Unit, list[int]] = {}  # (w, starts) -> seeds
    for (seed, w), starts in sorted(starts_of.items()):
        units.setdefault((w, tuple(starts)), []).append(seed)  # seeds in increasing order
    seeds = sorted({s.seed for s in specs})

    # Per seed: training rows, validation rows and the minibatch generator.
    rows: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for seed in seeds:
        if early_stopping:
            val = _stratified_holdout(y_idx, validation_fraction, np.random.default_rng(seed))
            rows[seed] = (torch.from_numpy(np.flatnonzero(~val)).to(dev), torch.from_numpy(np.flatnonzero(val)).to(dev))
        else:
            rows[seed] = (torch.arange(len(X), device=dev), None)
    n_train = len(rows[seeds[0]][0])

    # Normalised features of each unit in a (k, N, w) layout, so that a gather of rows is already the
    # bmm's batch (a copy of the columns when k > 1; features read on demand are read per minibatch).
    if _is_row_source(X):
        def gather(unit: _Unit, idx: torch.Tensor) -> torch.Tensor:
            w, starts = unit
            cols = np.concatenate([np.arange(a, a + w) for a in starts])
            block = (X.rows(idx.cpu().numpy())[:, cols] - mean[cols]) / scale[cols]
            return torch.from_numpy(block.astype(np.float32)).view(len(idx), len(starts), w).transpose(0, 1).contiguous().to(dev)
    else:
        Z = torch.from_numpy(((X - mean) / scale).astype(np.float32)).to(dev)
        data = {u: (Z[:, u[1][0] : u[1][0] + u[0]] if len(u[1]) == 1 else  # (N, w) view, or (k * N, w)
                    torch.stack([Z[:, a : a + u[0]] for a in u[1]]).flatten(0, 1)) for u in units}
        offsets = {u: torch.arange(len(u[1]), device=dev)[:, None] * len(X) for u in units}  # (k, 1)
        buffers: dict[tuple[_Unit, int], torch.Tensor] = {}  # (unit, rows) -> reused output: no fresh pages per step

        def gather(unit: _Unit, idx: torch.Tensor) -> torch.Tensor:
            flat = (idx[None] + offsets[unit]).view(-1)  # one index_select: rows of all k blocks
            if (unit, len(flat)) not in buffers:
                buffers[(unit, len(flat))] = torch.empty(len(flat), unit[0], device=dev)
            out = torch.index_select(data[unit], 0, flat, out=buffers[(unit, len(flat))])
            return out.view(len(unit[1]), len(idx), unit[0])

    # A single probe over exactly the columns that a unit's layer probes tile, for the same seeds (ALL
    # beside its layers), trains with them: their weights are one (k, S, 2C, w) tensor holding each
    # layer's weights and ALL's slice of that layer, so one bmm gives the layer logits and ALL's
    # per-layer partial sums and every minibatch is read once.
    fused: dict[_Unit, _Unit] = {}  # ALL unit -> layer unit
    for (w, starts), ss in units.items():
        if len(starts) > 1 and list(starts) == list(range(starts[0], starts[0] + w * len(starts), w)):
            whole = (w * len(starts), (starts[0],))
            if units.get(whole) == ss:
                fused[whole] = (w, starts)
    whole_of = {layer: whole for whole, layer in fused.items()}
    weight = {(w, starts): torch.zeros(len(starts), len(ss), 2 * C if (w, starts) in whole_of else C, w,
                                       device=dev, requires_grad=True)
              for (w, starts), ss in units.items() if (w, starts) not in fused}
    bias = {(w, starts): torch.zeros(len(starts), len(ss), C, device=dev, requires_grad=True)
            for (w, starts), ss in units.items()}
    opt = torch.optim.Adam([*weight.values(), *bias.values()], lr=lr, fused=True)

    def weights_of(unit: _Unit) -> torch.Tensor:
        """Weights (k, S, C, w) of a unit's probes (a copy for an ALL unit trained with its layers)."""
        if unit in fused:
            Wcat = weight[fused[unit]]
            return Wcat[:, :, C:].permute(1, 2, 0, 3).reshape(1, Wcat.shape[1], C, unit[0])
        return weight[unit][:, :, :C]

    def logits_of(unit: _Unit, xs: torch.Tensor) -> torch.Tensor:
        """Logits (k, S, C, B) of a unit's probes for its gathered rows xs (k, S * B, w)."""
        W, b = weights_of(unit), bias[unit]
        k, S, w = W.shape[0], W.shape[1], unit[0]
        out = torch.baddbmm(b.reshape(k * S, C, 1), W.reshape(k * S, C, w), xs.view(k * S, -1, w).transpose(1, 2))
        return out.view(k, S, C, -1)

    def step_logits(unit: _Unit, xs: torch.Tensor) -> list[torch.Tensor]:
        """Training logits (k, S, C, B) of a unit's probes, then (1, S, C, B) of its ALL probe if fused.

        Classes come before rows so that autograd's weight gradient reads xs in its own layout.
        """
        W = weight[unit]
        if W.shape[2] == C:
            return [logits_of(unit, xs)]
        k, S, w = W.shape[0], W.shape[1], unit[0]
        out = torch.bmm(W.view(k * S, 2 * C, w), xs.view(k * S, -1, w).transpose(1, 2)).view(k, S, 2 * C, -1)
        return [out[:, :, :C] + bias[unit][..., None], (out[:, :, C:].sum(dim=0) + bias[whole_of[unit]][0][..., None])[None]]

    gens = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    best = {u: (weights_of(u).detach().clone(), bias[u].detach().clone()) for u in units} if early_stopping else {}
    best_acc = {u: torch.full(bias[u].shape[:2], -1.0, device=dev) for u in units}
    stale = 0
    epochs_run = 0
    for epoch in range(epochs):
        epochs_run = epoch + 1
        perms = {s: rows[s][0][torch.randperm(n_train, generator=gens[s]).to(dev)] for s in seeds}
        for start in range(0, n_train, batch_size):
            loss = torch.zeros((), device=dev)
            for unit, W in weight.items():
                ss = units[unit]
                idx = torch.cat([perms[s][start : start + batch_size] for s in ss])
                xs, yrow = gather(unit, idx), Y[idx].view(len(ss), -1)
                for logits in step_logits(unit, xs):  # (k, S, C, B)
                    k = logits.shape[0]
                    ce = torch.nn.functional.cross_entropy(logits.reshape(k * len(ss), C, -1), yrow.repeat(k, 1), reduction="sum")
                    loss = loss + ce / yrow.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # the penalty's gradient, l1 * sign(W) + 2 * l2 * W, added in place
                for W in weight.values():
                    if l1:
                        W.grad.add_(torch.sign(W), alpha=l1)
                    if l2:
                        W.grad.add_(W, alpha=2 * l2)
            opt.step()
        if early_stopping:
            improved = False
            with torch.no_grad():
                for unit, ss in units.items():
                    idx = torch.cat([rows[s][1] for s in ss])
                    acc = (logits_of(unit, gather(unit, idx)).argmax(2) == Y[idx].view(len(ss), -1)).float().mean(dim=2)
                    better = acc > best_acc[unit]  # (k, S)
                    if better.any():
                        improved = True
                        best_acc[unit] = torch.where(better, acc, best_acc[unit])
                        best[unit][0][better] = weights_of(unit).detach()[better]
                        best[unit][1][better] = bias[unit].detach()[better]
            stale = 0 if improved else stale + 1
            if stale >= patience:
                logger.info("early stopping after epoch %d: no probe improved for %d epochs", epoch + 1, patience)
                break
    final = best if early_stopping else {u: (weights_of(u).detach(), bias[u].detach()) for u in units}

    probes = []
    for s in specs:
        unit = (s.end - s.start, tuple(starts_of[(s.seed, s.end - s.start)]))
        j, si = unit[1].index(s.start), units[unit].index(s.seed)
        W, b = (t[j, si].cpu().numpy() for t in final[unit])
        probe = LinearProbe(l1=l1, l2=l2, epochs=epochs, batch_size=batch_size, lr=lr, seed=s.seed, device=device,
                            early_stopping=early_stopping, validation_fraction=validation_fraction, patience=patience)
        probe.classes_ = classes
        probe.coef_ = np.ascontiguousarray(W, dtype=np.float32)
        probe.intercept_ = np.ascontiguousarray(b, dtype=np.float32)
        probe.mean_ = mean[s.start : s.end]
        probe.scale_ = scale[s.start : s.end]
        probe.n_features_in_ = s.end - s.start
        probe.n_epochs_ = epochs_run
        probes.append(probe)
    return probes
