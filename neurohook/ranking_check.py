"""A neuron ranking scored by probes it did not come from: cross-fitting on two halves of the training rows.

Judging a ranking with the probe that produced it is biased (Antverg & Belinkov, ICLR 2022): the
probe's weights fit its own rows. Here the training rows are split into two halves (speaker-disjoint
when speakers are known). A probe trained on half A ranks the neurons; fresh probes trained on half B
on *only* its top ``percent`` of the neurons, and on random sets of the same size, are scored on the
test rows. Top beats random here only if the ranking found neurons that carry the property for any
probe, on other utterances.

Example::

    check = retrained_check(X_tr, y_tr, X_te, y_te, l2=1e-2, percent=20, seed=7, groups=speakers_tr)
    check["top"].mean() - check["random"].mean()    # per test utterance: right (top), share right (random)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from neurohook import ranking
from neurohook.ablation import ablation_masks
from neurohook.data.splits import train_dev_split
from neurohook.probe import ProbeSpec, fit_probes, predict_rows

__all__ = ["retrained_check"]


def retrained_check(X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, y_te: np.ndarray, *, l2: float,
                    percent: float, seed: int, groups: Any = None, constant: np.ndarray | None = None,
                    steps: Sequence[float] | None = None, draws: int = 5,
                    retrain_l2: float | None = None, rows: np.ndarray | None = None,
                    test_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per test utterance (N_te,): right with a probe retrained on half B on the top ``percent`` of half A's
    ranking (``"top"``, bool), and the share of ``draws`` random sets of that size under which it is right
    (``"random"``).

    X_tr (N, D), y_tr (N,): training rows; ``groups`` (N,) makes the halves group-disjoint; ``constant``
    (D,) bool marks neurons kept out of the top and random sets; ``l2`` is the ranking probe's penalty,
    ``retrain_l2`` the retrained probes' (default ``l2``). ``rows``: the training rows are these rows of
    X_tr (y_tr and groups per row of X_tr), none copied; default all. ``test_rows``: the test rows are
    these rows of X_te (read in blocks, none copied; y_te per test row); default all.
    """
    rows = np.arange(len(y_tr)) if rows is None else np.asarray(rows)
    y_tr = np.asarray(y_tr)
    half_a, half_b = (rows[i] for i in train_dev_split(y_tr[rows], 0.5, seed,
                                                         None if groups is None else np.asarray(groups)[rows]))
    (ranker,) = fit_probes(X_tr, y_tr, [ProbeSpec(0, X_tr.shape[1], 0)], rows=half_a, l2=l2)
    order = ranking.neuron_ordering(ranker.coef_, steps).order
    if constant is not None:
        order = order[~constant[order]]
    masks = ablation_masks(order, percent, seed, X_tr.shape[1], draws)
    sets = [np.flatnonzero(m) for m in masks[[0, *range(2, len(masks))]]]  # top, then the random draws
    k = len(sets[0])
    probes = fit_probes(X_tr, y_tr, [ProbeSpec(i * k, (i + 1) * k, seed) for i in range(len(sets))],  # one L-BFGS pass
                        columns=np.concatenate(sets), rows=half_b, l2=l2 if retrain_l2 is None else retrain_l2)
    right = [predict_rows(p, X_te, test_rows, cols) == y_te for p, cols in zip(probes, sets)]
    return {"top": right[0], "random": np.mean(right[1:], axis=0)}
