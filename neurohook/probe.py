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

__all__ = ["LinearProbe", "ProbeSpec", "fit_probes"]

logger = logging.getLogger(__name__)


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
        raise ValueError(f"a probe needs at least two classes in its training labels, got only {classes.tolist()}")
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

    Probes of one seed and width share one ``torch.bmm`` and every minibatch of that seed. As the
    summed loss separates and Adam is elementwise, each result equals fitting that probe alone.
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

    if _is_row_source(X):  # read and normalise one minibatch at a time
        mean, scale = X.column_stats()
        scale[scale == 0] = 1.0

        def batch(rows: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(((X.rows(rows.cpu().numpy()) - mean) / scale).astype(np.float32)).to(dev)
    else:
        mean = X.mean(axis=0, dtype=np.float64)
        scale = X.std(axis=0, dtype=np.float64)
        scale[scale == 0] = 1.0
        Z = torch.from_numpy(((X - mean) / scale).astype(np.float32)).to(dev)

        def batch(rows: torch.Tensor) -> torch.Tensor:
            return torch.index_select(Z, 0, rows)
    Y = torch.from_numpy(y_idx.astype(np.int64)).to(dev)

    # Per seed: training rows, validation rows and the minibatch generator.
    seeds = sorted({s.seed for s in specs})
    rows: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for seed in seeds:
        if early_stopping:
            val = _stratified_holdout(y_idx, validation_fraction, np.random.default_rng(seed))
            rows[seed] = (torch.from_numpy(np.flatnonzero(~val)).to(dev), torch.from_numpy(np.flatnonzero(val)).to(dev))
        else:
            rows[seed] = (torch.arange(len(X), device=dev), None)
    n_train = len(rows[seeds[0]][0])

    # Probes of one seed and one width train in one bmm ("units"). When their columns tile one
    # contiguous range (a model's equal-width layers) they read strided views of the minibatch.
    units: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(specs):
        units.setdefault((s.seed, s.end - s.start), []).append(i)
    params = {u: (torch.zeros(len(ix), C, u[1], device=dev, requires_grad=True),
                  torch.zeros(len(ix), C, device=dev, requires_grad=True)) for u, ix in units.items()}
    opt = torch.optim.Adam([p for pair in params.values() for p in pair], lr=lr, fused=True)
    columns: dict[tuple[int, int], slice | torch.Tensor] = {}
    for (seed, w), ix in units.items():
        starts = [specs[i].start for i in ix]
        if starts == list(range(starts[0], starts[0] + w * len(ix), w)):
            columns[(seed, w)] = slice(starts[0], starts[0] + w * len(ix))
        else:
            columns[(seed, w)] = torch.cat([torch.arange(specs[i].start, specs[i].end, device=dev) for i in ix])

    # A seed's single probe over exactly the columns its layer probes tile (ALL beside its layers)
    # is computed with them: one bmm against [W_layer; W_ALL's slice of that layer] gives each
    # layer's logits and ALL's per-layer partial sums, so every minibatch is read once, not twice.
    fused: dict[tuple[int, int], tuple[int, int]] = {}  # layer unit -> ALL unit
    for (seed, w), ix in units.items():
        cols = columns[(seed, w)]
        if len(ix) < 2 or not isinstance(cols, slice):
            continue
        for (seed2, w2), ix2 in units.items():
            if seed2 == seed and len(ix2) == 1 and specs[ix2[0]].start == cols.start and specs[ix2[0]].end == cols.stop:
                fused[(seed, w)] = (seed2, w2)

    def logits_of(zrow: torch.Tensor, unit: tuple[int, int], W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits (k, B, C) of a unit's k probes for minibatch rows zrow (B, D)."""
        xs = zrow[:, columns[unit]].unflatten(1, (len(W), unit[1])).transpose(0, 1)  # (k, B, w)
        return torch.baddbmm(b[:, None, :], xs, W.transpose(1, 2))

    def fused_logits(zrow: torch.Tensor, unit: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (k, B, C) of a layer unit and (1, B, C) of its ALL probe, from one read of zrow (B, D)."""
        (W, b), (Wa, ba) = params[unit], params[fused[unit]]
        k, w = len(W), unit[1]
        xs = zrow[:, columns[unit]].unflatten(1, (k, w)).transpose(0, 1)  # (k, B, w)
        out = torch.bmm(xs, torch.cat([W, Wa[0].view(C, k, w).transpose(0, 1)], dim=1).transpose(1, 2))  # (k, B, 2C)
        return out[:, :, :C] + b[:, None, :], (out[:, :, C:].sum(dim=0) + ba)[None]

    gens = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    best = {u: (W.detach().clone(), b.detach().clone()) for u, (W, b) in params.items()}
    best_acc = {u: torch.full((len(ix),), -1.0, device=dev) for u, ix in units.items()}
    stale = 0
    epochs_run = 0
    for epoch in range(epochs):
        epochs_run = epoch + 1
        perms = {s: rows[s][0][torch.randperm(n_train, generator=gens[s]).to(dev)] for s in seeds}
        for start in range(0, n_train, batch_size):
            zrows = {s: (batch(perms[s][start : start + batch_size]), Y[perms[s][start : start + batch_size]]) for s in seeds}
            loss = torch.zeros((), device=dev)
            for unit, (W, b) in params.items():
                if unit in fused.values():
                    continue  # computed with its layer unit
                zrow, yrow = zrows[unit[0]]
                if unit in fused:
                    pairs = zip(fused_logits(zrow, unit), (params[unit][0], params[fused[unit]][0]))
                else:
                    pairs = [(logits_of(zrow, unit, W, b), W)]
                for logits, weights in pairs:  # logits (k, B, C) of the k probes with these weights
                    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, C), yrow.repeat(len(weights)), reduction="sum")
                    loss = loss + ce / len(yrow)
                    if l1:
                        loss = loss + l1 * weights.abs().sum()
                    if l2:
                        loss = loss + l2 * (weights * weights).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if early_stopping:
            improved = False
            with torch.no_grad():
                for unit, (W, b) in params.items():
                    vrows = rows[unit[0]][1]
                    acc = (logits_of(batch(vrows), unit, W, b).argmax(2) == Y[vrows]).float().mean(dim=1)  # (k,)
                    better = acc > best_acc[unit]
                    if better.any():
                        improved = True
                        best_acc[unit] = torch.where(better, acc, best_acc[unit])
                        best[unit][0][better] = W.detach()[better]
                        best[unit][1][better] = b.detach()[better]
            stale = 0 if improved else stale + 1
            if stale >= patience:
                logger.info("early stopping after epoch %d: no probe improved for %d epochs", epoch + 1, patience)
                break
    final = best if early_stopping else {u: (W.detach(), b.detach()) for u, (W, b) in params.items()}

    probes: list[LinearProbe | None] = [None] * len(specs)
    for u, ix in units.items():
        W, b = (t.cpu().numpy() for t in final[u])
        for p, i in enumerate(ix):
            s = specs[i]
            probe = LinearProbe(l1=l1, l2=l2, epochs=epochs, batch_size=batch_size, lr=lr, seed=s.seed, device=device,
                                early_stopping=early_stopping, validation_fraction=validation_fraction, patience=patience)
            probe.classes_ = classes
            probe.coef_ = np.ascontiguousarray(W[p], dtype=np.float32)
            probe.intercept_ = np.ascontiguousarray(b[p], dtype=np.float32)
            probe.mean_ = mean[s.start : s.end]
            probe.scale_ = scale[s.start : s.end]
            probe.n_features_in_ = s.end - s.start
            probe.n_epochs_ = epochs_run
            probes[i] = probe
    return probes  # type: ignore[return-value]
