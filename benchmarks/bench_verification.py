"""Benchmark of neurohook.verification's exact EER and minDCF against a 1000-threshold sweep.

Prints one JSON object. 10 million trials (10% targets, as in large SV lists) of float64 scores:
(a) eer(scores, labels) and min_dcf(scores, labels) — time (best of repeats, untraced) and peak
    memory allocated during the call (tracemalloc, which sees numpy's buffers; the inputs are
    allocated before and not counted);
(b) in the same run, the common alternative: a sweep over 1000 evenly spaced thresholds counting
    misses and false alarms at each one (EER read where |FRR - FAR| is smallest, minDCF the smallest
    cost seen) — ratios sweep / exact, and the sweep's error against the exact values;
(c) cosine scoring of a VoxCeleb1-O-sized trial list (37,720 trials over 4,874 utterances) on
    13 layers x 768 neurons plus ALL.
Usage: python benchmarks/bench_verification.py [--trials N] [--quick]
"""

from __future__ import annotations


import numpy as np

import _harness as harness
from neurohook import verification as V


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Fastest wall time of `repeats` calls (seconds) and the result."""
    return harness.best_of(fn, repeats), fn()


def peak_bytes(fn) -> int:
    """Peak Python/NumPy memory while fn runs, above what was allocated when it started."""
    return harness.peak_bytes(fn, "tracemalloc")[0]


def sweep(scores: np.ndarray, labels: np.ndarray, n_thresholds: int = 1000, p_target: float = 0.01) -> tuple[float, float]:
    """EER and minDCF from FRR/FAR counted at n evenly spaced thresholds (accept score >= t)."""
    tar, non = scores[labels], scores[~labels]
    best_gap, eer, dcf = np.inf, 1.0, np.inf
    for t in np.linspace(scores.min(), scores.max(), n_thresholds):
        frr = np.count_nonzero(tar < t) / len(tar)
        far = np.count_nonzero(non >= t) / len(non)
        if abs(frr - far) < best_gap:
            best_gap, eer = abs(frr - far), (frr + far) / 2
        dcf = min(dcf, p_target * frr + (1 - p_target) * far)
    return eer, dcf / min(p_target, 1 - p_target)


def main() -> None:
    args = harness.parse_args(__doc__, lambda p: p.add_argument("--trials", type=int, default=10_000_000))
    n = 1_000_000 if args.quick else args.trials
    repeats = 1 if args.quick else 3

    rng = np.random.default_rng(0)
    labels = rng.random(n) < 0.1
    scores = rng.normal(size=n) + 2.0 * labels  # EER about 16%

    t_eer, e = best_of(lambda: V.eer(scores, labels), repeats)
    t_dcf, d = best_of(lambda: V.min_dcf(scores, labels), repeats)
    m_eer = peak_bytes(lambda: V.eer(scores, labels))
    m_dcf = peak_bytes(lambda: V.min_dcf(scores, labels))
    t_sweep, (e_sw, d_sw) = best_of(lambda: sweep(scores, labels), 1)
    m_sweep = peak_bytes(lambda: sweep(scores, labels, n_thresholds=20))  # per-threshold temporaries do not grow with the count

    result: dict[str, object] = {
        "trials": n,
        "targets": int(labels.sum()),
        "input_mb": round((scores.nbytes + labels.nbytes) / 2**20, 1),
        "exact": {
            "eer": e,
            "min_dcf": d,
            "eer_s": round(t_eer, 3),
            "min_dcf_s": round(t_dcf, 3),
            "eer_plus_min_dcf_s": round(t_eer + t_dcf, 3),
            "eer_peak_mb": round(m_eer / 2**20, 1),
            "min_dcf_peak_mb": round(m_dcf / 2**20, 1),
        },
        "sweep_1000": {
            "eer": e_sw,
            "min_dcf": d_sw,
            "s": round(t_sweep, 3),
            "peak_mb": round(m_sweep / 2**20, 1),
            "abs_error_eer": abs(e_sw - e),
            "abs_error_min_dcf": abs(d_sw - d),
        },
        "ratios": {
            "sweep_time_over_exact_eer_plus_min_dcf": round(t_sweep / (t_eer + t_dcf), 2),
            "exact_peak_over_sweep_peak": round(max(m_eer, m_dcf) / max(m_sweep, 1), 2),
        },
        "targets_met": {"under_5_s": t_eer + t_dcf < 5.0, "under_1_gb": max(m_eer, m_dcf) < 2**30},
    }

    if not args.quick:
        n_utt, n_layers, width, n_trials = 4874, 13, 768, 37720
        values = rng.normal(size=(n_utt, n_layers * width)).astype(np.float32)
        ids = [f"u{i}" for i in range(n_utt)]
        a, b = rng.integers(0, n_utt, n_trials), rng.integers(0, n_utt, n_trials)
        trials = V.Trials([ids[i] for i in a], [ids[i] for i in b], rng.random(n_trials) < 0.5)
        layers = {f"L{i}": (i * width, (i + 1) * width) for i in range(n_layers)}
        t_score, _ = best_of(lambda: V.layer_scores(values, ids, layers, trials), 1)
        t_lw, _ = best_of(lambda: V.layerwise_eer(values, ids, layers, trials), 1)
        result["scoring"] = {
            "utterances": n_utt, "neurons": n_layers * width, "trials": n_trials, "layers_plus_all": n_layers + 1,
            "layer_scores_s": round(t_score, 3), "layerwise_eer_s": round(t_lw, 3),
            "peak_mb": round(peak_bytes(lambda: V.layer_scores(values, ids, layers, trials)) / 2**20, 1),
        }
    harness.emit("verification", result)


if __name__ == "__main__":
    main()
