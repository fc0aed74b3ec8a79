"""Linear probes: multinomial logistic regression with the elastic-net penalty of the paper's eq. 2.

``LinearProbe`` is a scikit-learn estimator (``BaseEstimator``, ``ClassifierMixin``): its
hyper-parameters are declared once, in ``__init__``; ``clone``, ``cross_val_score``, ``Pipeline`` and
``GridSearchCV`` work with it; learned state has a trailing underscore. :func:`fit_probes` trains
many probes over column blocks of one feature matrix (every layer and ALL, for several seeds) in one
batched loop (:mod:`neurohook.probe_batch`); each probe ends exactly where training it alone would.

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

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from neurohook.errors import DataError
from neurohook.features import Features
from neurohook.probe_batch import ProbeSpec, ProbeState, _is_row_source, train_probes
from neurohook.zscore import standardize

__all__ = ["KernelInputs", "LinearProbe", "ProbeSpec", "fit_probes"]


def _check_features(X: Any, name: str = "X") -> Any:
    """X (N, D) numeric and finite (Features give their values), or features read on demand (as they are)."""
    if _is_row_source(X):
        return X
    X = np.asarray(X.values if isinstance(X, Features) else X)
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
    """Labels y (N,) with at least two classes."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), got {y.shape}")
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels but X has {n} rows")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"a probe needs at least two classes in its training labels, got only {classes.tolist()}")
    return y


class KernelInputs(NamedTuple):
    """A trained probe and test data as the compiled ranking kernels take them (``neurohook.ranking``)."""

    Z: np.ndarray  # (N, D) float32 features z-normalised with the probe's training statistics
    W: np.ndarray  # (C, D) float32 weights
    b: np.ndarray  # (C,) float32 biases
    y: np.ndarray  # (N,) int64 class indices


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Elastic-net multinomial logistic regression probe on z-normalised features.

    Example::

        probe = LinearProbe(l1=1e-5, l2=1e-5).fit(X_train, y_train)   # X: (N, D), y: (N,)
        probe.score(X_test, y_test); probe.coef_                       # coef_: (C, D)
        cross_val_score(LinearProbe(epochs=10), X, y, cv=3)             # any scikit-learn tool

    Args:
        l1, l2: penalties of the elastic net on the weights (not the biases).
        epochs, batch_size, lr: Adam's passes over the data, minibatch size and learning rate.
        seed: the minibatch order (training is deterministic on a given device).
        device: the torch device to train on.
        early_stopping, validation_fraction, patience: keep each probe's best epoch on a stratified
            held-out part of the training rows; stop after ``patience`` epochs without improvement.

    Attributes:
        classes_: (C,) the sorted training labels.
        coef_, intercept_: (C, D) and (C,) float32, on z-normalised features.
        mean_, scale_: (D,) the training statistics of the normalisation.
        n_features_in_, n_epochs_: D and the epochs run.
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

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        """Train on features X (N, D) and labels y (N,) of any values; returns self.

        X may be an array or features read on demand (:class:`neurohook.shards.ShardedFeatures`),
        which are then read one minibatch at a time.
        """
        X = _check_features(X)
        (state,) = train_probes(X, _check_labels(y, len(X)), [ProbeSpec(0, X.shape[1], self.seed)], self)
        return self._set_state(state)

    def _set_state(self, state: ProbeState) -> "LinearProbe":
        """Take the learned state of one trained probe; returns self."""
        self.classes_, self.coef_, self.intercept_ = state.classes, state.coef, state.intercept
        self.mean_, self.scale_ = state.mean, state.scale
        self.n_features_in_ = state.coef.shape[1]
        self.n_epochs_ = state.epochs
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Features X (N, D) z-normalised with the training statistics, float32 C-contiguous (N, D)."""
        check_is_fitted(self, "coef_")
        X = _check_features(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns but the probe was trained on {self.coef_.shape[1]}")
        return standardize(X, self.mean_, self.scale_)

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

    def kernel_inputs(self, X: Any, y: Any) -> KernelInputs:
        """Features X (N, D) and labels y (N,) for the ranking kernels: normalised once, with the weights."""
        return KernelInputs(self.transform(X), self.coef_, self.intercept_, self.encode(y))

    def encode(self, y: Any) -> np.ndarray:
        """Class indices (N,) int64 of labels y (N,); a label unseen in training is an error."""
        check_is_fitted(self, "coef_")
        y = np.asarray(y)
        idx = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"labels {np.unique(y[unknown])[:5].tolist()} were not seen in training")
        return idx.astype(np.int64)


def fit_probes(X: Any, y: Any, specs: Sequence[ProbeSpec], **params: Any) -> list[LinearProbe]:
    """Train one probe per spec (columns of X (N, D) and a seed) together; returns fitted LinearProbes.

    ``params`` are :class:`LinearProbe` hyper-parameters (``seed`` comes from each spec). Probes of
    one width at the same column starts train together for all their seeds: each step is one gather
    of the seeds' minibatches and one ``torch.bmm``; an ALL probe beside its layers shares their bmm
    (:mod:`neurohook.probe_batch`). Each result equals fitting that probe alone (up to float32
    summation order). With early stopping each probe keeps its own best epoch, but training stops
    only when no probe improved for ``patience`` epochs. Memory: up to one normalised float32 copy of X.
    """
    template = LinearProbe(**params)
    X = _check_features(X)
    y = _check_labels(y, len(X))
    if not specs:
        raise ValueError("specs is empty: give at least one ProbeSpec")
    for s in specs:
        if not 0 <= s.start < s.end <= X.shape[1]:
            raise ValueError(f"probe columns [{s.start}, {s.end}) are outside X's {X.shape[1]} columns")
    states = train_probes(X, y, specs, template)
    return [clone(template).set_params(seed=s.seed)._set_state(state) for s, state in zip(specs, states)]
