"""Benchmark of the whole study at a chosen scale: time and peak memory of `neurohook.analyze` beside scikit-learn.

Synthetic pooled features with planted information, laid out as the paper's CNN at paper size (CNN1-4
mean+std, FC1, FC2: 2000 + 2000 + 2000 + 3000 + 1500 + 600 = 11,100 neurons; ``--scale`` shrinks every
layer), one binary and one 7-class task (speakers of 20 utterances each, speaker-disjoint splits), an
R.INIT-sized second feature set, and the full `analyze()` per task: tuned layer-wise and ALL probes,
control task, R.INIT, ranking, ablation, minimal sets, cross-fit ranking check, over ``--seeds``.
Reference in the same run: scikit-learn's `LogisticRegressionCV` (lbfgs, 4 Cs, 3 folds) on the ALL
features of one seed's training rows (at most ``--sk-rows``), i.e. one probe of the hundreds the study
trains, with its test accuracy beside neurohook's ALL probe of that seed.
With ``--sharded`` the two feature sets are written as safetensors shards and the study runs from
``ShardedFeatures`` in a fresh process (values read on demand, never loaded: its own peak RSS),
beside the same study after NumPy loads every shard (``ShardedFeatures.load()``), the obvious way.
Usage: python benchmarks/bench_study.py [--quick] [--n 40000] [--scale 1.0] [--seeds 5]
       [--sharded [--no-reference] [--memory-cap GB]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _harness import emit, parse_args
from neurohook.analysis import analyze
from neurohook.features import Features, LayerSpan

PAPER_LAYERS = (("conv1", 2000), ("conv2", 2000), ("conv3", 2000), ("conv4", 3000), ("fc1", 1500), ("fc2", 600))


def features(n: int, scale: float, seed: int) -> tuple[Features, dict[str, np.ndarray], np.ndarray]:
    """(features, {task: labels}, speakers): information planted in some layers, float32 throughout."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(n // 20 + 1), 20)[:n]
    binary = speakers % 2  # a speaker property, as gender
    seven = rng.integers(0, 7, speakers.max() + 1)[speakers]  # another, as language
    spans, start = [], 0
    for name, width in PAPER_LAYERS:
        w = max(8, int(round(width * scale)))
        spans.append(LayerSpan(name, start, start + w, "mean"))
        start += w
    X = np.empty((n, start), dtype=np.float32)
    for i, s in enumerate(spans):  # row blocks keep the temporaries small
        for a in range(0, n, 4096):
            X[a : a + 4096, s.start : s.end] = rng.standard_normal((min(4096, n - a), s.end - s.start), dtype=np.float32)
        strength = 0.05 + 0.1 * i
        X[:, s.start : s.start + 16] += (strength * (2 * binary[:, None] - 1)).astype(np.float32)
        X[:, s.start + 16 : s.start + 23] += (strength * 2 * np.eye(7, dtype=np.float32)[seven])
    ids = [f"u{i:06d}" for i in range(n)]
    return Features(X, ids, spans), {"binary": binary, "seven": seven}, speakers


def sklearn_reference(feats: Features, y: np.ndarray, speakers: np.ndarray, rows: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = next(GroupShuffleSplit(1, test_size=0.2, random_state=seed).split(feats.values, y, speakers))
    tr = tr[:rows]
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 0, 4), cv=3, max_iter=300))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(feats.values[tr], y[tr])
    return {"rows": int(len(tr)), "fit_s": round(time.perf_counter() - t0, 2),
            "test_accuracy": round(float(model.score(feats.values[te], y[te])), 4)}


SHARD_ROWS = 5000


def write_shards(feats: Features, root: Path) -> Path:
    """The features as safetensors shards of SHARD_ROWS rows under root/shards (as `neurohook extract` writes)."""
    (root / "shards").mkdir(parents=True)
    for k, a in enumerate(range(0, len(feats.ids), SHARD_ROWS)):
        part = Features(feats.values[a : a + SHARD_ROWS], feats.ids[a : a + SHARD_ROWS], feats.layers)
        part.save(root / "shards" / f"shard-{k:05d}.safetensors")
    return root


class MemorySampler:
    """Peak resident memory of this process split as /proc/self/status does: anonymous (what the
    process allocated) and file-backed (pages of the memory-mapped shards, which the kernel can drop)."""

    def __init__(self, every: float = 0.1) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            for key in self.peak:
                self.peak[key] = max(self.peak[key], status_bytes(key))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {k: round(v / 1e9, 2) for k, v in self.peak.items()}


def drop_cached(root: Path) -> None:
    """Write the shards under root to disk and drop them from the page cache (POSIX_FADV_DONTNEED), so
    that a capped child process reads them from disk and its memory cgroup is charged for what it maps."""
    for path in root.rglob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def memory_cgroup(cap_gb: float) -> Path:
    """A new memory cgroup (v2, or v1's memory controller) limited to cap_gb of resident memory,
    page cache included (Linux; needs write access to /sys/fs/cgroup, e.g. root in a container)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    parent = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
    group = parent / f"neurohook-bench-{os.getpid()}"
    try:
        group.mkdir()
        (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(int(cap_gb * 1e9)))
    except OSError as error:
        sys.exit(f"bench_study: --memory-cap needs a writable memory cgroup under {parent}: {error}")
    return group


def cgroup_peak(group: Path) -> float:
    """The cgroup's peak memory (resident + page cache) in GB."""
    name = "memory.peak" if (group / "memory.peak").exists() else "memory.max_usage_in_bytes"
    return round(int((group / name).read_text()) / 1e9, 2)


def study_from_shards(root: Path, seeds: int) -> dict:
    """Run in a fresh process: the study of every task from ShardedFeatures, its time and peak RSS."""
    from neurohook.shards import ShardedFeatures

    anon_at_start, hwm_at_start = (status_bytes(key) for key in ("RssAnon", "VmHWM"))
    sampler = MemorySampler()
    feats, rinit = ShardedFeatures.open(root / "features"), ShardedFeatures.open(root / "rinit")
    saved = np.load(root / "labels.npz")
    out = {}
    for name in ("binary", "seven"):
        t0 = time.perf_counter()
        r = analyze(feats, saved[name], speakers=saved["speakers"], rinit_features=rinit,
                    seeds=tuple(range(seeds))).tasks["task"]
        out[name] = {"analyze_s": round(time.perf_counter() - t0, 1), "acc_all": round(float(r.oracle.mean), 4),
                     "peak_rss_gb": round(status_bytes("VmHWM") / 1e9, 2)}
    peaks = sampler.stop()
    out["peak_gb"] = {"rss": round(status_bytes("VmHWM") / 1e9, 2), "rss_at_start": round(hwm_at_start / 1e9, 2),
                      "anonymous": peaks["RssAnon"], "anonymous_above_start": round(peaks["RssAnon"] - anon_at_start / 1e9, 2),
                      "file_backed_shard_pages": peaks["RssFile"]}
    return out


def status_bytes(key: str) -> int:
    """A size from /proc/self/status in bytes (VmHWM: this process image's peak resident set; unlike
    ru_maxrss, not inherited from the parent by a child started by fork and exec)."""
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith(key + ":"))


def sharded(n: int, scale: float, seeds: int, reference: bool = True, cap_gb: float | None = None) -> dict:
    """The study from shards (a fresh process) beside NumPy load-everything (this process; skipped
    without ``reference``: at N = 150,000 the two sets alone take 13.4 GB of this machine's 24). With
    ``cap_gb`` the child runs in a memory cgroup of that size (resident memory and page cache together)
    after the shards were dropped from the page cache: the study must then work within the cap."""
    from neurohook.shards import ShardedFeatures

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feats, tasks, speakers = features(n, scale, seed=0)
        write_shards(feats, root / "features")
        matrix = feats.values.nbytes
        del feats  # one set in memory at a time (6.7 GB each at N = 150,000)
        write_shards(features(n, scale, seed=1)[0], root / "rinit")
        np.savez(root / "labels.npz", speakers=speakers, **tasks)
        group = None
        if cap_gb is not None:
            drop_cached(root)
            group = memory_cgroup(cap_gb)
        t0 = time.perf_counter()
        try:
            child = subprocess.run(
                [sys.executable, __file__, "--from-shards", str(root), "--seeds", str(seeds)], capture_output=True,
                text=True, check=True,
                preexec_fn=None if group is None else lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
            from_shards = json.loads(child.stdout.strip().splitlines()[-1])
            from_shards["process_s"] = round(time.perf_counter() - t0, 1)
            if group is not None:
                from_shards["memory_cap_gb"] = cap_gb
                from_shards["cgroup_peak_gb"] = cgroup_peak(group)
        finally:
            if group is not None:
                group.rmdir()
        disk = sum(p.stat().st_size for p in root.rglob("*.safetensors"))
        head = {"n": n, "neurons": int(ShardedFeatures.open(root / "features").shape[1]), "seeds": seeds,
                "feature_matrix_gb": round(matrix / 1e9, 3), "shards_on_disk_gb": round(disk / 1e9, 3),
                "from_shards": from_shards,
                "peak_anonymous_from_shards_over_matrix": round(from_shards["peak_gb"]["anonymous_above_start"] * 1e9 / matrix, 2)}
        if not reference:
            return {**head, "numpy_load_everything": "not run (--no-reference)"}
        t0 = time.perf_counter()
        loaded, rinit = ShardedFeatures.open(root / "features").load(), ShardedFeatures.open(root / "rinit").load()
        load_s = time.perf_counter() - t0
        in_memory = {"load_s": round(load_s, 1)}
        for name, y in tasks.items():
            t0 = time.perf_counter()
            r = analyze(loaded, y, speakers=speakers, rinit_features=rinit, seeds=tuple(range(seeds))).tasks["task"]
            in_memory[name] = {"analyze_s": round(time.perf_counter() - t0, 1), "acc_all": round(float(r.oracle.mean), 4)}
    return {**head, "numpy_load_everything": in_memory,
            "time_ratio": {k: round(from_shards[k]["analyze_s"] / in_memory[k]["analyze_s"], 2) for k in tasks},
            "peak_rss_from_shards_over_matrix": round(from_shards["peak_gb"]["rss"] * 1e9 / matrix, 2),
            "note": "peak RSS (VmHWM) counts the pages of the memory-mapped shards mapped at the time (file-backed; "
                    "released every neurohook.shards.RELEASE_BYTES); peak_gb.anonymous is what the process itself allocated"}


def main() -> None:
    def extra(p):
        p.add_argument("--n", type=int, default=40000, help="utterances")
        p.add_argument("--scale", type=float, default=1.0, help="layer widths relative to the paper's CNN")
        p.add_argument("--seeds", type=int, default=5)
        p.add_argument("--sk-rows", type=int, default=5000, help="training rows of the scikit-learn reference")
        p.add_argument("--sharded", action="store_true", help="the study from shards beside NumPy load-everything")
        p.add_argument("--no-reference", action="store_true", help="--sharded without NumPy load-everything")
        p.add_argument("--memory-cap", type=float, metavar="GB",
                       help="--sharded: run the study in a memory cgroup of GB (page cache included; Linux, root)")
        p.add_argument("--from-shards", type=Path, help=argparse.SUPPRESS)  # the child process

    args = parse_args(__doc__, extra)
    if args.from_shards is not None:  # the child process of --sharded
        print(json.dumps(study_from_shards(args.from_shards, args.seeds)))
        return
    n, scale, seeds = (4000, 0.1, 2) if args.quick else (args.n, args.scale, args.seeds)
    if args.sharded:
        emit("study_sharded", sharded(n, scale, seeds, reference=not args.no_reference, cap_gb=args.memory_cap))
        return
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the interpreter, numpy, torch
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    base_file = int(status["RssFile"].split()[0]) * 1024  # mapped libraries: resident, not the analysis's
    t0 = time.perf_counter()
    feats, tasks, speakers = features(n, scale, seed=0)
    rinit, _, _ = features(n, scale, seed=1)
    build_s = time.perf_counter() - t0
    matrix = feats.values.nbytes
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"n": n, "neurons": int(feats.values.shape[1]), "layers": feats.layer_names, "seeds": seeds,
           "feature_matrix_gb": round(matrix / 1e9, 3), "build_s": round(build_s, 1), "tasks": {}}
    for name, y in tasks.items():
        sampler = MemorySampler(0.02)  # this task's analysis alone (not the previous task's scikit-learn reference)
        t0 = time.perf_counter()
        result = analyze(feats, y, speakers=speakers, rinit_features=rinit, seeds=tuple(range(seeds))).tasks["task"]
        seconds = time.perf_counter() - t0
        rss = sampler.stop()["RssAnon"] * 1e9 + base_file
        out["tasks"][name] = {
            "classes": int(len(np.unique(y))), "analyze_s": round(seconds, 1), "minutes": round(seconds / 60, 2),
            "minutes_per_seed": round(seconds / 60 / seeds, 2),
            "acc_all": round(float(result.oracle.mean), 4), "best_layer": result.best_layer,
            "peak_rss_gb": round(rss / 1e9, 2), "peak_rss_over_matrix": round((rss - base) / matrix, 2),
            "process_high_water_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
            "peak_rss_over_features_held": round((rss - base) / (matrix + rinit.values.nbytes), 2),
            "sklearn_one_probe": sklearn_reference(feats, y, speakers, args.sk_rows, seed=0)}
    out["rss_before_analysis_gb"] = round(rss0 / 1e9, 2)
    out["rss_at_start_gb"] = round(base / 1e9, 2)
    out["note"] = ("peak RSS: anonymous memory sampled every 20 ms during the task's analyze() plus the libraries "
                   "mapped at start, above the process at start (interpreter, numpy, torch), over one feature matrix "
                   "(peak_rss_over_matrix; both feature sets, features and R.INIT, are 2.0 of it by themselves) and "
                   "over the two sets held (peak_rss_over_features_held). The issue's target: <= 2.5x the feature "
                   "matrix; process_high_water_gb is the high-water mark so far, which includes building the features and the "
                   "previous task's scikit-learn reference")
    emit("study", out)


if __name__ == "__main__":
    main()
