"""Choosing a probe's regularisation on dev folds of its training rows, then refitting on all of them.

The default :class:`neurohook.LinearProbe` (``l2=None``) is tuned here, in two batched passes:

1. **dev phase** (:func:`dev_phase`): for each of k folds of the training rows (speaker-disjoint
   when speakers are known, :func:`neurohook.data.splits.train_dev_folds`; k = ``dev_folds``, by
   default 3 below :data:`FOLD_ROWS` training rows and 1 from there on), every probe is trained for every value of the λ grid on the fold's fit rows (to
   ``DEV_TOL_FACTOR`` x the probe's tolerance, and with several folds at most ``DEV_MAX_ITER``
   iterations a fold; the grid is more probes in one L-BFGS pass,
   :mod:`neurohook.probe_lbfgs`) and scored on its dev rows; each probe takes the λ of the highest
   accuracy over all folds' dev rows (every training row once), ties to the lower cross-entropy
   (:func:`choose`). One dev part of a quarter of the speakers (``dev_folds=1``) chose noisily
   where few speakers make it up (on the demo's features, 3 folds were within 1 point of
   scikit-learn's ``LogisticRegressionCV`` in more runs than 1 fold: 83 vs 75 of 96 on the splits the
   rule was chosen on, 76 vs 70 on 3 fresh ones; ``bench_probe_quality``);
   the lowest dev cross-entropy alone favours over-strong penalties where train and dev speakers
   differ (sre-cnn LID: -6 points);
2. **refit** (:func:`refit`): each probe is trained again on all training rows with its chosen λ,
   starting from its dev-phase weights (re-expressed for the statistics of all rows).

The test rows are never seen. With fixed penalties (``l2`` given) the grid is that one value; the
Adam solver (the paper's setting) trains with :mod:`neurohook.probe_batch`.

Example::

    folds = train_dev_folds(y, 3, seed=seed, speakers=speakers)
    tunings = dev_phase(X, y, [(0, 768), (0, D)], folds, LinearProbe())
    states = refit(X, y, [(0, 768, t.l2) for t in tunings], LinearProbe(), init=[t.start for t in tunings])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.base import clone

from neurohook.data.splits import train_dev_folds
from neurohook.probe_batch import ProbeSpec, ProbeState, train_probes
from neurohook.probe_lbfgs import Block, lbfgs_probes
from neurohook.zscore import CHUNK, standardize, take_rows

__all__ = ["DEFAULT_L2_GRID", "Tuning", "choose", "dev_phase", "fold_count", "refit", "tuning_folds"]

DEFAULT_L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# The dev phase trains to a 10x looser gradient tolerance than the refit: it only ranks grid values
# (dev accuracies move by < 0.3 points on the benchmark's sweep), and the refit starts from its weights.
DEV_TOL_FACTOR = 10.0
# With several folds, each fold's dev phase also stops at DEV_MAX_ITER iterations: weakly penalised
# probes of separable data run on to max_iter without changing which grid value wins, and 3 folds then
# cost about what one dev part at max_iter 200 did (on the demo's features: 0.66 s vs 0.77 s a probe,
# the same agreement with scikit-learn as 3 folds uncapped; bench_probe_quality).
DEV_MAX_ITER = 50


# dev_folds="auto": 3 folds below FOLD_ROWS training rows, else one dev part of dev_size. Above it one
# quarter holds >= 2,500 rows, whose accuracy has a standard error <= 1 point (0.5 / sqrt(2500)), about
# what separates neighbouring grid values; below it the folds' accuracy over every training row is
# steadier (bench_probe_quality), and at paper scale (N = 40,000) 3 folds would triple the dev phase.
FOLD_ROWS = 10_000
AUTO_FOLDS = 3


def fold_count(dev_folds: int | str, n_rows: int) -> int:
    """The number of dev folds for ``n_rows`` training rows: ``dev_folds``, or for ``"auto"`` 3 below
    :data:`FOLD_ROWS` rows and 1 from there on. Example: ``fold_count("auto", 1000) == 3``."""
    if dev_folds == "auto":
        return AUTO_FOLDS if n_rows < FOLD_ROWS else 1
    if isinstance(dev_folds, bool) or not isinstance(dev_folds, (int, np.integer)) or dev_folds < 1:
        raise ValueError(f"dev_folds must be 'auto' or a positive integer, got {dev_folds!r}")
    return int(dev_folds)


def tuning_folds(params: Any, y: np.ndarray, rows: np.ndarray, groups: Any, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (fit, dev) folds, as rows of X, that choose the l2 of probes trained on rows ``rows`` of X
    (y (N,) and groups (N,) or None per row of X): :func:`fold_count` folds of ``params`` (a
    LinearProbe), one dev part when its l2 is fixed, drawn with ``seed``."""
    k = fold_count(params.dev_folds, len(rows)) if params.l2 is None else 1  # a fixed l2 is not chosen
    g = None if groups is None else np.asarray(groups)[rows]
    return [(rows[f], rows[d]) for f, d in train_dev_folds(np.asarray(y)[rows], k, params.dev_size, seed, g)]


@dataclass
class Tuning:
    """The dev phase of one probe: each grid value's dev accuracy and cross-entropy (over every fold's dev
    rows), and the choice."""

    grid: list[float]  # the l2 values tried
    dev_accuracy: list[float]  # (G,) on the dev rows
    dev_loss: list[float]  # (G,) mean cross-entropy on the dev rows
    chosen: int  # index of the chosen value
    folds: int = 1  # the dev folds the accuracies and losses are pooled over
    states: list[ProbeState] = field(repr=False, default_factory=list)  # (G,) trained on the fit rows

    @property
    def l2(self) -> float:
        """The chosen l2."""
        return self.grid[self.chosen]

    @property
    def start(self) -> ProbeState | None:
        """The chosen value's probe trained on the fit rows: where its refit starts."""
        return self.states[self.chosen] if self.states else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (without the dev-phase weights)."""
        return {"l2_grid": self.grid, "dev_accuracy": self.dev_accuracy, "dev_loss": self.dev_loss, "l2": self.l2,
                "folds": self.folds}


def _train(X: Any, y: np.ndarray, spans: Sequence[tuple[int, int, float]], rows: np.ndarray | None,
           params: Any, seed: int, init: Sequence[ProbeState | None] | None = None,
           columns: np.ndarray | None = None) -> list[ProbeState]:
    """One probe per (start, end, l2) on rows ``rows`` of X, with the solver of ``params`` (a LinearProbe).

    ``init`` (L-BFGS only) gives per probe the weights to start from, or None for zeros; ``columns``:
    the columns of X that (start, end) index (default all).
    """
    if params.solver == "lbfgs":
        blocks = [Block(a, b, params.l1, l2) for a, b, l2 in spans]
        return lbfgs_probes(X, y, blocks, rows, max_iter=params.max_iter, tol=params.tol, device=params.device,
                            init=init, columns=columns)
    if params.solver != "adam":
        raise ValueError(f"solver must be 'lbfgs' or 'adam', got {params.solver!r}")
    if any(l2 != params.l2 for _, _, l2 in spans):
        raise ValueError("solver='adam' trains with fixed penalties: give l1 and l2 (the tuned default uses 'lbfgs')")
    Xr = X if rows is None else take_rows(X, rows)
    Xr = Xr if columns is None else np.asarray(Xr)[:, columns]
    yr = y if rows is None else y[rows]
    return train_probes(Xr, yr, [ProbeSpec(a, b, seed) for a, b, _ in spans], params)


def dev_phase(X: Any, y: np.ndarray, spans: Sequence[tuple[int, int]], folds: Sequence[tuple[np.ndarray, np.ndarray]],
              params: Any, seed: int = 0, columns: np.ndarray | None = None) -> list[Tuning]:
    """Per fold (fit, dev) of ``folds``, train every span for every grid value on rows ``fit`` and score it
    on rows ``dev``; choose per span the value of the highest dev accuracy over all folds' dev rows, ties
    to the lowest dev cross-entropy (:func:`choose`).

    The grid is ``params.l2_grid`` when ``params.l2`` is None, else ``(params.l2,)``. ``columns``: the
    columns of X that the spans index (default all). The Tunings keep the first fold's states.
    """
    grid = [float(v) for v in (params.l2_grid if params.l2 is None else (params.l2,))]
    if not grid:
        raise ValueError("l2_grid is empty: give at least one l2 value")
    if not folds:
        raise ValueError("folds is empty: give at least one (fit, dev) pair of rows")
    coarse = clone(params).set_params(tol=DEV_TOL_FACTOR * params.tol)  # the dev phase only ranks grid values
    if len(folds) > 1:
        coarse.set_params(max_iter=min(params.max_iter, DEV_MAX_ITER))
    right, nll, first_states = np.zeros(len(spans) * len(grid)), np.zeros(len(spans) * len(grid)), None
    for fit, dev in folds:
        states = _train(X, y, [(a, b, l2) for a, b in spans for l2 in grid], fit, coarse, seed, columns=columns)
        _score_dev(X, y, spans, len(grid), states, dev, columns, right, nll)
        first_states = first_states or states
    n_dev = sum(len(dev) for _, dev in folds)
    out = []
    for i in range(len(spans)):
        part = slice(i * len(grid), (i + 1) * len(grid))
        acc, loss = (right[part] / n_dev).tolist(), (nll[part] / n_dev).tolist()
        out.append(Tuning(grid, acc, loss, choose(acc, loss), len(folds), first_states[part]))
    return out


def _score_dev(X: Any, y: np.ndarray, spans: Sequence[tuple[int, int]], n_grid: int, states: list[ProbeState],
               dev: np.ndarray, columns: np.ndarray | None, right: np.ndarray, nll: np.ndarray) -> None:
    """Add each state's correct count and summed cross-entropy on rows ``dev`` to ``right`` and ``nll``."""
    classes = states[0].classes  # one set of fit rows: the same classes and statistics per span
    for start in range(0, len(dev), CHUNK):  # in blocks: features read on demand never all in memory
        rows = dev[start : start + CHUNK]
        X_dev, y_dev = take_rows(X, rows), np.asarray(y)[rows]
        X_dev = X_dev if columns is None else X_dev[:, columns]
        known = np.isin(y_dev, classes)
        target = np.searchsorted(classes, y_dev).clip(0, len(classes) - 1)
        for i, (a, b) in enumerate(spans):
            first = states[i * n_grid]
            Z = standardize(X_dev[:, a:b], first.mean, first.scale)  # once per span, for every grid value
            for j in range(i * n_grid, (i + 1) * n_grid):
                right[j], nll[j] = _dev_scores(Z @ states[j].coef.T + states[j].intercept, target, known,
                                               right[j], nll[j])


def choose(accuracy: Sequence[float], loss: Sequence[float]) -> int:
    """Index of the highest accuracy; among equal accuracies, of the lowest loss.

    Example: ``choose([0.8, 0.9, 0.9], [0.5, 0.4, 0.3]) == 2``.
    """
    acc, nll = np.asarray(accuracy, float), np.asarray(loss, float)
    tied = np.flatnonzero(acc >= acc.max() - 1e-12)
    return int(tied[np.argmin(nll[tied])])


def _dev_scores(logits: np.ndarray, target: np.ndarray, known: np.ndarray, right: float, nll: float) -> tuple[float, float]:
    """Running (correct count, summed cross-entropy) after adding one block of dev rows' logits (n, C)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    right += float(np.sum((z.argmax(axis=1) == target) & known))
    nll -= float(np.sum(np.where(known, logp[np.arange(len(z)), target], np.log(1e-12))))
    return right, nll


def refit(X: Any, y: np.ndarray, spans: Sequence[tuple[int, int, float]], params: Any, seed: int = 0,
          init: Sequence[ProbeState | None] | None = None, columns: np.ndarray | None = None,
          rows: np.ndarray | None = None) -> list[ProbeState]:
    """One probe per (start, end, l2) trained on all rows of X (N, D) (or its rows ``rows``), together.

    ``init``: per probe its dev-phase state to start from (``Tuning.start``), or None; ``columns``: the
    columns of X that (start, end) index (default all).
    """
    return _train(X, y, spans, rows, params, seed, init, columns)
