"""Detection metrics: exact EER, normalised minDCF and bootstrap intervals (conventions in :mod:`neurohook.verification`)."""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np

from neurohook.errors import DataError

__all__ = ["eer", "min_dcf", "bootstrap_ci"]



def _as_labels(labels: Any, what: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y
    if y.size and not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{what} must be bool or 0/1, got dtype {y.dtype}")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:5]
        raise ValueError(f"{what} must be bool or 0/1, found values {bad.tolist()}")
    return y.astype(bool)


def _split_sorted(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated target and non-target scores, each sorted ascending."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    y = _as_labels(labels)
    if len(y) != len(s):
        raise ValueError(f"scores and labels have different lengths: {len(s)} and {len(y)}")
    nan = np.isnan(s)
    if nan.any():
        raise ValueError(f"scores contain {int(nan.sum())} NaN value(s), first at index {int(np.flatnonzero(nan)[0])}")
    tar = np.sort(s[y])
    non = np.sort(s[~y])
    if len(tar) == 0:
        raise DataError(f"no target trials among {len(s)} (EER and minDCF need both kinds)")
    if len(non) == 0:
        raise DataError(f"no non-target trials among {len(s)} (EER and minDCF need both kinds)")
    return tar, non


def _errors_at(tar: np.ndarray, non: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of misses (targets < t) and false alarms (non-targets >= t) at sorted thresholds (K,)."""
    miss = np.searchsorted(tar, thresholds, side="left")
    fa = len(non) - np.searchsorted(non, thresholds, side="left")
    return miss, fa


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate, a fraction in [0, 1], of scores (T,) with labels (T,) (True/1 = target).

    Exact, in O(T log T): the distinct operating points (FAR, FRR) — one per distinct score, equal
    scores grouped, plus "reject all" — are joined by straight segments (equivalently, a tied group
    or the gap between two adjacent thresholds is decided at random), and the EER is where that
    curve crosses FAR = FRR. This is the linear interpolation of the ROC that s3prl solves with a root
    finder; it is invariant to the order of tied scores, 0 for separable scores and 0.5 for constant
    ones.
    """
    tar, non = _split_sorted(scores, labels)
    nt, nn = len(tar), len(non)
    # P: the last operating point with FRR < FAR; Q: the first with FRR >= FAR. The sign of
    # FRR - FAR is that of miss*nn - fa*nt (exact in integers) and rises with the threshold.
    p_thr, p_pt = -np.inf, (0, nn)  # below every score: accept all (never FRR >= FAR)
    q_thr, q_pt = np.inf, (nt, 0)  # reject all

    def point(t: float) -> tuple[int, int]:
        return int(np.searchsorted(tar, t, side="left")), nn - int(np.searchsorted(non, t, side="left"))

    for keys in (tar, non):
        # Bisection for the first key with FRR >= FAR: O(log^2 T) after the sorts, no T-sized temporaries.
        lo, hi = 0, len(keys)
        while lo < hi:
            mid = (lo + hi) // 2
            miss, fa = point(keys[mid])
            if miss * nn - fa * nt >= 0:
                hi = mid
            else:
                lo = mid + 1
        if lo > 0 and keys[lo - 1] >= p_thr:
            p_thr, p_pt = keys[lo - 1], point(keys[lo - 1])
        if lo < len(keys) and keys[lo] <= q_thr:
            q_thr, q_pt = keys[lo], point(keys[lo])
    # (FRR - FAR) * nt * nn at P (< 0) and Q (>= 0), exact integers; the crossing is a fraction alpha
    # of the way from P to Q.
    s_p = p_pt[0] * nn - p_pt[1] * nt
    s_q = q_pt[0] * nn - q_pt[1] * nt
    alpha = -s_p / (s_q - s_p)
    frr_p, frr_q = p_pt[0] / nt, q_pt[0] / nt
    return float(min(1.0, max(0.0, frr_p + alpha * (frr_q - frr_p))))


def min_dcf(scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost of scores (T,) with labels (T,), over every threshold.

    DCF(t) = c_miss * p_target * FRR(t) + c_fa * (1 - p_target) * FAR(t), minimised over all distinct
    operating points, divided by min(c_miss * p_target, c_fa * (1 - p_target)) — the cost of the best
    system that ignores the scores (NIST SRE and s3prl's normalisation; SpeechBrain's is unnormalised).
    In [0, 1]; O(T log T).
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    tar, non = _split_sorted(scores, labels)
    nt, nn = len(tar), len(non)
    w_miss, w_fa = c_miss * p_target / nt, c_fa * (1.0 - p_target) / nn
    best = min(c_miss * p_target, c_fa * (1.0 - p_target))  # reject all / accept all
    # The cost is minimal at an end of a run of constant misses (or false alarms), so the scores of
    # the smaller class are enough: thresholds at each target score, or just above each non-target.
    if nt <= nn:
        miss, fa = _errors_at(tar, non, tar)
    else:
        miss = np.searchsorted(tar, non, side="right")
        fa = nn - np.searchsorted(non, non, side="right")
    best = min(best, float((w_miss * miss + w_fa * fa).min()))
    return best / min(c_miss * p_target, c_fa * (1.0 - p_target))


def bootstrap_ci(
    scores: Any,
    labels: Any,
    metric: Literal["eer", "min_dcf"] | Callable[[np.ndarray, np.ndarray], float] = "eer",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **metric_kwargs: Any,
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of a metric over trials: scores (T,), labels (T,).

    Targets and non-targets are resampled separately with replacement (so every replicate has both
    and keeps the counts). Trials sharing utterances are not independent, so the interval is
    optimistic — a lower bound on the true uncertainty. Seeded.
    """
    fn: Callable[..., float]
    fn = {"eer": eer, "min_dcf": min_dcf}[metric] if isinstance(metric, str) else metric
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    tar, non = _split_sorted(scores, labels)
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(len(tar), bool), np.zeros(len(non), bool)]
    stats = np.empty(n_boot)
    for r in range(n_boot):
        s = np.r_[tar[rng.integers(0, len(tar), len(tar))], non[rng.integers(0, len(non), len(non))]]
        stats[r] = fn(s, y, **metric_kwargs)
    q = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [q, 1.0 - q])
    return float(low), float(high)
