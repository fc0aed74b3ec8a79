"""Benchmark of probe quality: neurohook's default probe beside scikit-learn's tuned logistic regression.

For each demo model and task, on the demo's own features and speaker-disjoint splits (seeds 0-2 by
default, 40 % of the speakers held out): test accuracy of the ALL probe with a 95 % interval (bootstrap
over test speakers) and its fitting time, for (1) neurohook's default ``LinearProbe()`` (l2 chosen by 3
speaker-disjoint folds of the training rows, L-BFGS), (2) the same with one dev part of a quarter of the
training speakers (``dev_folds=1``, the default before 2026-12-07), (3) the paper's setting
(``PAPER_SETTINGS``) and (4) scikit-learn's ``StandardScaler`` + ``LogisticRegressionCV`` (lbfgs, Cs
1e-3..1, 3 folds); and (1) and (2) minus scikit-learn on the same test utterances with paired 95 %
intervals. Needs a finished demo (``neurohook demo --out DIR``).
Usage: python benchmarks/bench_probe_quality.py [--demo DIR] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from _harness import emit, parse_args, timed
from neurohook.data.manifest import read_manifest
from neurohook.data.splits import seed_streams, train_test_split
from neurohook.demo import DEMO_PRETRAINED, TASKS, _task_manifest
from neurohook.models import BUILTIN
from neurohook.features import Features
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.probe import PAPER_SETTINGS, LinearProbe
from neurohook.study import labels_of

MODELS = (*BUILTIN, *DEMO_PRETRAINED)  # those the demo analysed (features present)


def sklearn_probe():
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 0, 7), cv=3, max_iter=1000))


def with_interval(right: np.ndarray, speakers: np.ndarray) -> dict[str, object]:
    """Accuracy (%) of per-utterance outcomes with its 95 % interval over test speakers."""
    reps = replicate_means([right.astype(float)], [speakers], seed=0)[:, 0]
    lo, hi = percentile_interval(reps)
    return {"acc": round(100 * float(right.mean()), 2), "ci": [round(100 * lo, 2), round(100 * hi, 2)]}


def paired_difference(ours: np.ndarray, ref: np.ndarray, speakers: np.ndarray) -> dict[str, object]:
    """Accuracy difference (points) of two probes on the same test utterances, with its paired 95 %
    interval (bootstrap over test speakers of the per-utterance difference)."""
    diff = ours.astype(float) - ref.astype(float)
    reps = replicate_means([diff], [speakers], seed=0)[:, 0]
    lo, hi = percentile_interval(reps)
    return {"points": round(100 * float(diff.mean()), 2), "ci": [round(100 * lo, 2), round(100 * hi, 2)]}


def one_task(X: np.ndarray, y: np.ndarray, spk: np.ndarray, seed: int) -> dict[str, object]:
    tr, te = train_test_split(y, 0.4, seed_streams(seed).split, spk)
    out: dict[str, object] = {"n_train": len(tr), "n_test": len(te), "D": X.shape[1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, t = timed(lambda: sklearn_probe().fit(X[tr], y[tr]))
    ref_right = ref.predict(X[te]) == y[te]
    out["sklearn_lrcv"] = {**with_interval(ref_right, spk[te]), "s": round(t, 2), "C": float(ref[-1].C_[0])}
    for name, params in (("neurohook", {}), ("neurohook_one_dev_part", {"dev_folds": 1})):
        ours, t = timed(lambda: LinearProbe(**params).fit(X[tr], y[tr], groups=spk[tr]))
        right = ours.predict(X[te]) == y[te]
        out[name] = {**with_interval(right, spk[te]), "s": round(t, 2), "l2": ours.l2_,
                     "minus_sklearn": paired_difference(right, ref_right, spk[te]),
                     "speedup_vs_sklearn": round(out["sklearn_lrcv"]["s"] / max(t, 1e-9), 1)}
    paper, t = timed(lambda: LinearProbe(**PAPER_SETTINGS).fit(X[tr], y[tr]))
    out["paper_settings"] = {**with_interval(paper.predict(X[te]) == y[te], spk[te]), "s": round(t, 2)}
    return out


def summary(results: dict[str, dict[str, object]], name: str) -> dict[str, object]:
    """How one neurohook probe compares with scikit-learn over every (model, task, seed)."""
    diffs = [r[name]["minus_sklearn"] for r in results.values()]
    points = [d["points"] for d in diffs]
    speed = [r[name]["speedup_vs_sklearn"] for r in results.values()]
    return {"runs": len(points), "mean_minus_sklearn_points": round(float(np.mean(points)), 2),
            "worst_minus_sklearn_points": min(points), "within_1_point": sum(p >= -1 for p in points),
            "below_beyond_interval": [k for k, d in zip(results, diffs) if d["ci"][1] < 0],
            "more_than_1_point_below_beyond_interval": [k for k, d in zip(results, diffs) if d["ci"][1] < -1],
            "median_fit_s": float(np.median([r[name]["s"] for r in results.values()])),
            "median_speedup": float(np.median(speed)), "faster_5x": sum(v >= 5 for v in speed)}


def main() -> None:
    def extra(p):
        p.add_argument("--demo", default="neurohook-demo", help="demo output folder")
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="splits (seed_streams(seed).split)")

    args = parse_args(__doc__, extra)
    demo = Path(args.demo)
    settings = json.loads((demo / "results.json").read_text())["demo_settings"]
    manifest = _task_manifest(read_manifest(settings["corpus"], check_files=False))
    results: dict[str, dict[str, object]] = {}
    for model in MODELS[:1] if args.quick else MODELS:
        path = demo / "features" / model / "features.npz"
        if not path.is_file():
            continue
        feats = Features.load(path)
        ids = [str(u) for u in feats.ids]
        speakers = labels_of(manifest, "speaker", ids)
        for task, column in list(TASKS.items())[: 1 if args.quick else None]:
            labels = labels_of(manifest, column, ids)
            rows = [i for i, u in enumerate(ids) if u in labels]
            X = np.asarray(feats.values)[rows]
            y = np.array([labels[ids[i]] for i in rows])
            spk = np.array([speakers[ids[i]] for i in rows])
            for seed in args.seeds[:1] if args.quick else args.seeds:
                results[f"{model}/{task}/{seed}"] = one_task(X, y, spk, seed)
    emit("probe_quality", {"demo": str(demo), "seeds": args.seeds, "tasks": results, "summary": {
        "neurohook": summary(results, "neurohook"), "neurohook_one_dev_part": summary(results, "neurohook_one_dev_part"),
        "target": "never more than 1 point below scikit-learn, >= 5x faster"}})


if __name__ == "__main__":
    main()
