"""Linear probes: multinomial logistic regression with the elastic-net penalty of the paper's eq. 2.

``LinearProbe`` is a scikit-learn estimator (``BaseEstimator``, ``ClassifierMixin``): its
hyper-parameters are declared once, in ``__init__``; ``clone``, ``cross_val_score``, ``Pipeline`` and
``GridSearchCV`` work with it; learned state has a trailing underscore. :func:`fit_probes` trains
many probes over column blocks of one feature matrix (every layer and ALL, for several seeds)
together.

Normalisation: features are z-normalised with the training set's mean and standard deviation, kept
in the probe (``mean_``, ``scale_``), so that ``|coef_|`` compares neurons on one scale whatever
their raw ranges. ``coef_`` is therefore the weight on *normalised* features, which is what the
ranking uses; :meth:`LinearProbe.transform` gives the matching features. Zeroing a neuron in that
space (the ablation of :mod:`neurohook.ablation`) sets it to its training mean.

Loss: mean cross-entropy + l1 * sum|W| + l2 * sum W^2 (weights only, not biases). The default
chooses l2 on dev folds of the training rows and minimises the loss to convergence with full-batch
L-BFGS (:mod:`neurohook.probe_tuning`, :mod:`neurohook.probe_lbfgs`); ``PAPER_SETTINGS`` gives the
paper's section 4.3 instead: Adam (lr 1e-3), 20 epochs, batch 128, l1 = l2 = 1e-5
(:mod:`neurohook.probe_batch`). Weights start at zero: training is deterministic on a given device.
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
from neurohook.probe_tuning import DEFAULT_L2_GRID, Tuning, dev_phase, refit, tuning_folds
from neurohook.zscore import CHUNK, standardize, take, take_rows

PREDICT_ROWS = 1024  # rows normalised at once when predicting

__all__ = ["PAPER_SETTINGS", "KernelInputs", "LinearProbe", "ProbeSpec", "fit_probes"]

# The paper's probe (section 4.3): Adam at its default learning rate, 20 epochs, l1 = l2 = 1e-5.
PAPER_SETTINGS: dict[str, Any] = {"solver": "adam", "l1": 1e-5, "l2": 1e-5, "epochs": 20, "lr": 1e-3, "batch_size": 128}


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
    for a in range(0, len(X), CHUNK):  # in row blocks: no (N, D) mask
        bad = ~np.isfinite(X[a : a + CHUNK])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"{name} with shape {X.shape} holds NaN or Inf (first at row {a + row}, column {col})")
    return X


def _check_labels(y: Any, n: int, rows: Any = None) -> np.ndarray:
    """Labels y (N,) with at least two classes (among ``rows``, when given)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), got {y.shape}")
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels but X has {n} rows")
    classes = np.unique(y if rows is None else y[np.asarray(rows, dtype=np.int64)])
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
    """Elastic-net multinomial logistic regression probe on z-normalised features, tuned by default.

    Example::

        probe = LinearProbe().fit(X_train, y_train, groups=speakers)   # X: (N, D), y: (N,)
        probe.score(X_test, y_test); probe.coef_; probe.l2_            # coef_: (C, D)
        LinearProbe(**PAPER_SETTINGS).fit(X_train, y_train)            # the paper's probe, exactly
        cross_val_score(LinearProbe(), X, y, cv=3)                      # any scikit-learn tool

    By default (``l2=None``) the L2 penalty is chosen from ``l2_grid`` by ``dev_folds``-fold
    cross-validation on the training rows (speaker-disjoint with ``groups``): the highest accuracy on
    the folds' dev rows, ties to the lower cross-entropy; then
    the probe is refit on all training rows (:mod:`neurohook.probe_tuning`). Training runs full-batch
    L-BFGS to convergence. ``PAPER_SETTINGS`` reproduces section 4.3: Adam,
    l1 = l2 = 1e-5, 20 epochs.

    Args:
        solver: ``"lbfgs"`` (full batch, to ``tol`` or ``max_iter`` evaluations) or ``"adam"`` (minibatches).
        l1, l2: penalties of the elastic net on the weights (not the biases); ``l2=None`` tunes l2.
        l2_grid: the l2 values tried.
        dev_folds, dev_size: the folds of the training rows that choose among them (``"auto"``: 3 below
            10,000 training rows, else 1); with 1 fold, one dev part holding ``dev_size`` of the rows.
        max_iter, tol: L-BFGS's bound on iterations and its gradient tolerance.
        epochs, batch_size, lr: Adam's passes over the data, minibatch size and learning rate.
        seed: the dev split and Adam's minibatch order (training is deterministic on a given device).
        device: the torch device to train on.
        early_stopping, validation_fraction, patience: Adam only: keep each probe's best epoch on a
            stratified held-out part of the training rows; stop after ``patience`` epochs without gain.

    Attributes:
        classes_: (C,) the sorted training labels.
        coef_, intercept_: (C, D) and (C,) float32, on z-normalised features.
        mean_, scale_: (D,) the training statistics of the normalisation.
        l2_: the l2 trained with (chosen on dev, or given).
        tuning_: the dev phase (``l2_grid``, ``dev_accuracy``, ``dev_loss``, ``l2``, ``folds``), or None when fixed.
        n_features_in_, n_epochs_: D, and the passes over the training rows (Adam epochs or L-BFGS iterations).
    """

    def __init__(
        self,
        solver: str = "lbfgs",
        l1: float = 0.0,
        l2: float | None = None,
        l2_grid: Sequence[float] = DEFAULT_L2_GRID,
        dev_size: float = 0.25,
        dev_folds: int | str = "auto",
        max_iter: int = 200,
        tol: float = 1e-5,
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 3,
    ) -> None:
        self.solver = solver
        self.l1 = l1
        self.l2 = l2
        self.l2_grid = l2_grid
        self.dev_size = dev_size
        self.dev_folds = dev_folds
        self.max_iter = max_iter
        self.tol = tol
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience

    def fit(self, X: Any, y: Any, groups: Any = None) -> "LinearProbe":
        """Train on features X (N, D) and labels y (N,) of any values; returns self.

        ``groups`` (N,), e.g. speakers, makes the dev folds of the tuning group-disjoint. X may be an
        array or features read on demand (:class:`neurohook.shards.ShardedFeatures`).
        """
        (probe,) = fit_probes(X, y, [ProbeSpec(0, _check_features(X).shape[1], self.seed)], groups=groups,
                              **self.get_params())
        return self._set_state(probe._state, probe.tuning_)

    def _set_state(self, state: ProbeState, tuning: Tuning | None = None, l2: float | None = None) -> "LinearProbe":
        """Take the learned state of one trained probe (and its dev phase); returns self."""
        self._state = state
        self.classes_, self.coef_, self.intercept_ = state.classes, state.coef, state.intercept
        self.mean_, self.scale_ = state.mean, state.scale
        self.n_features_in_ = state.coef.shape[1]
        self.n_epochs_ = state.epochs
        self.tuning_ = tuning.to_dict() if isinstance(tuning, Tuning) else tuning
        self.l2_ = float(self.tuning_["l2"] if self.tuning_ else (self.l2 if l2 is None else l2))
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
        X = _check_features(X)
        if len(X) <= PREDICT_ROWS:
            return self.transform(X) @ self.coef_.T + self.intercept_
        # in row blocks: the normalised copy is one block, not the whole of X
        return np.concatenate([self.decision_function(X[a : a + PREDICT_ROWS]) for a in range(0, len(X), PREDICT_ROWS)])

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

    def kernel_inputs(self, X: Any, y: Any, rows: Any = None) -> KernelInputs:
        """Features X (N, D) and labels y (N,) for the ranking kernels: normalised once, with the weights.
        With ``rows`` (n,), X's rows ``rows`` (y per selected row), without a copy of them beside the
        normalised one."""
        if rows is None:
            return KernelInputs(self.transform(X), self.coef_, self.intercept_, self.encode(y))
        X = _check_features(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns but the probe was trained on {self.coef_.shape[1]}")
        return KernelInputs(standardize(X, self.mean_, self.scale_, rows=np.asarray(rows)), self.coef_, self.intercept_,
                            self.encode(y))

    def encode(self, y: Any) -> np.ndarray:
        """Class indices (N,) int64 of labels y (N,); a label unseen in training is an error."""
        check_is_fitted(self, "coef_")
        y = np.asarray(y)
        idx = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"labels {np.unique(y[unknown])[:5].tolist()} were not seen in training")
        return idx.astype(np.int64)


def predict_rows(probe: LinearProbe, X: Any, rows: np.ndarray | None = None, cols: Any = None) -> np.ndarray:
    """``probe.predict(X[rows][:, cols])`` (rows default all; cols an index array or a slice) computed in
    blocks of :data:`PREDICT_ROWS` rows: neither the selected rows nor their normalised copy are ever whole.

    Example: ``predict_rows(layer_probe, X, test_rows, slice(768, 1536)) == y[test_rows]``.
    """
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = []
    for a in range(0, len(rows), PREDICT_ROWS):
        block = take_rows(X, rows[a : a + PREDICT_ROWS])
        if isinstance(cols, slice):
            block = block[:, cols]
        elif cols is not None:
            block = take(block, cols=np.asarray(cols, dtype=np.int64))
        out.append(probe.predict(block))
    return np.concatenate(out) if out else np.empty(0, dtype=getattr(probe, "classes_", np.empty(0)).dtype)


def fit_probes(X: Any, y: Any, specs: Sequence[ProbeSpec], groups: Any = None, *, columns: Any = None,
               rows: Any = None, **params: Any) -> list[LinearProbe]:
    """Train one probe per spec (columns of X (N, D) and a seed) together; returns fitted LinearProbes.

    ``params`` are :class:`LinearProbe` hyper-parameters (``seed`` comes from each spec). With
    ``l2=None`` each seed's probes are tuned on dev folds of the rows (drawn with that seed;
    group-disjoint with ``groups`` (N,)): the whole grid for all of them in one L-BFGS pass a fold, then
    one refit pass (:mod:`neurohook.probe_tuning`). With fixed penalties the probes train in one pass;
    with Adam, probes of one width at the same column starts train together for all their seeds
    (:mod:`neurohook.probe_batch`), each ending where training it alone would. ``columns`` (D',)
    are the columns of X the specs index, in that order (default all): e.g. a ranking's top neurons
    first, without a copy of ``X[:, columns]`` beside the probes' normalised one (L-BFGS). ``rows``
    (n,) trains on those rows of X only (y and groups are still per row of X; the others are not read):
    a study's training rows, without a copy of ``X[rows]``.
    """
    template = LinearProbe(**params)
    X = _check_features(X)
    y = _check_labels(y, len(X), rows)
    if not specs:
        raise ValueError("specs is empty: give at least one ProbeSpec")
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if template.solver == "adam":  # minibatches: the selected rows, gathered once
            X, y, groups, rows = take_rows(X, rows), y[rows], None if groups is None else np.asarray(groups)[rows], None
    if columns is not None:
        columns = np.asarray(columns, dtype=np.int64)
        if template.solver == "adam":  # minibatches: the selected columns, gathered once
            X = take_rows(X, np.arange(len(X))) if _is_row_source(X) else np.asarray(X)
            X, columns = X[:, columns], None
    width = X.shape[1] if columns is None else len(columns)
    for s in specs:
        if not 0 <= s.start < s.end <= width:
            raise ValueError(f"probe columns [{s.start}, {s.end}) are outside X's {width} columns")
    if template.solver == "adam" and template.l2 is not None:
        states = train_probes(X, y, specs, template)
        return [clone(template).set_params(seed=s.seed)._set_state(st) for s, st in zip(specs, states)]
    out: dict[int, LinearProbe] = {}
    for seed in sorted({s.seed for s in specs}):
        mine = [i for i, s in enumerate(specs) if s.seed == seed]
        spans = [(specs[i].start, specs[i].end) for i in mine]
        tunings: list[Any] = [None] * len(spans)
        l2s = [template.l2] * len(spans)
        if template.l2 is None:  # folds drawn among the rows (all rows of X by default), as rows of X
            folds = tuning_folds(template, y, np.arange(len(y)) if rows is None else rows, groups, seed)
            tunings = dev_phase(X, y, spans, folds, template, seed, columns)
            l2s = [t.l2 for t in tunings]
        init = [t.start if t is not None else None for t in tunings]
        states = refit(X, y, [(a, b, l2) for (a, b), l2 in zip(spans, l2s)], template, seed, init, columns, rows)
        for i, st, t, l2 in zip(mine, states, tunings, l2s):
            out[i] = clone(template).set_params(seed=seed)._set_state(st, t, l2)
    return [out[i] for i in range(len(specs))]
