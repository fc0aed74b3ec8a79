"""Confidence intervals of accuracies measured over several seeds: a two-level (hierarchical) bootstrap.

Each seed has its own split and probes, so a quantity's uncertainty has two parts: which utterances
happened to be tested (speakers, when known, are resampled whole: utterances of one speaker are not
independent) and which seed (split and training) was drawn. One bootstrap replicate draws the seeds
with replacement and, within each drawn seed, its test groups (speakers, else utterances) with
replacement; the replicate's value is the mean over its seeds of the quantity on its groups. The
interval is the replicates' percentile interval. With one seed only the test-set part remains.

Example::

    # per seed: correct (n_s, k) bool (k measurements: e.g. the ALL probe and the control probe),
    # groups (n_s,) the test speakers
    reps = replicate_means([correct_0, correct_1], [speakers_0, speakers_1], seed=0)   # (B, k)
    lo, hi = percentile_interval(reps[:, 0])                 # accuracy of the first measurement
    lo, hi = percentile_interval(reps[:, 0] - reps[:, 1])    # of a difference (selectivity)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["CONFIDENCE", "N_BOOT", "percentile_interval", "replicate_means"]

#: Coverage of every interval neurohook reports, and bootstrap replicates behind it.
CONFIDENCE = 0.95
N_BOOT = 1000


def replicate_means(values: Sequence[np.ndarray], groups: Sequence[np.ndarray | None], seed: int = 0,
                    n_boot: int = N_BOOT) -> np.ndarray:
    """Bootstrap replicates (n_boot, k) of the seed-mean of k per-utterance quantities.

    ``values[s]``: (n_s, k) or (n_s,) per-utterance values of seed s (e.g. 1 where the probe is
    right); ``groups[s]``: (n_s,) their resampling groups (speakers), or None for utterances.
    """
    rng = np.random.default_rng(seed)
    per_seed = []  # (group sums (G, k), group counts (G,)) of each seed
    for v, g in zip(values, groups):
        v = np.asarray(v, dtype=np.float64)
        v = v[:, None] if v.ndim == 1 else v
        codes = np.arange(len(v)) if g is None else np.unique(np.asarray(g), return_inverse=True)[1]
        sums = np.zeros((codes.max() + 1, v.shape[1]))
        np.add.at(sums, codes, v)
        per_seed.append((sums, np.bincount(codes).astype(np.float64)))
    S = len(per_seed)
    chosen = rng.integers(0, S, (n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    out = np.zeros((n_boot, per_seed[0][0].shape[1]))
    for s, (sums, counts) in enumerate(per_seed):
        rows = np.repeat(np.arange(n_boot), (chosen == s).sum(axis=1))  # one entry per draw of seed s
        if not len(rows):
            continue
        draws = rng.integers(0, len(counts), (len(rows), len(counts)))  # its groups, with replacement, each time
        np.add.at(out, rows, sums[draws].sum(axis=1) / counts[draws].sum(axis=1)[:, None])
    return out / S


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The (low, high) percentile interval of bootstrap replicates (B,)."""
    q = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(replicates, dtype=np.float64), [q, 1.0 - q])
    return float(lo), float(hi)
