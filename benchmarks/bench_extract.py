"""Benchmark of feature extraction: the Recorder's cost over a plain forward, and 1 process vs 2 under torchrun.

(a) In one process, batches of 8 clips (3-4 s; for sre-cnn also 7.5-10 s) through sre-cnn at paper size
(1000-1000-1000-1500 filters, FC 1500 / 600: 6100 units, 11,100 columns with stats pooling) and torchaudio's wav2vec2_base
(random weights; 7 conv blocks + 12 transformer layers, mean-pooled): the model's forward under
``no_grad`` alone, then the same forward with a Recorder pooling every probed layer. The issue's
target: the recorder's overhead <= 5 % of the forward.
(b) ``neurohook extract`` over a manifest of the same clips (WAV files), one process (2 threads) vs
``torchrun --nproc_per_node=2`` (one thread per process, torchrun's default), wall time of the whole
command (imports and model build included, once per process) and utterances per second.
Usage: python benchmarks/bench_extract.py [--quick]
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from _harness import emit, parse_args
from neurohook.hooks import Recorder
from neurohook.models import build, probe_layers

MODELS = {"sre-cnn": dict(size="paper"), "wav2vec2_base": {}}


def clips(n: int, seconds: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(int(16000 * seconds * (0.75 + 0.25 * (i % 2))), generator=g) * 0.1 for i in range(n)]


def batches(waves: list[torch.Tensor], size: int):
    for a in range(0, len(waves), size):
        part = waves[a : a + size]
        lengths = torch.tensor([len(w) for w in part])
        batch = torch.zeros(len(part), int(lengths.max()))
        for i, w in enumerate(part):
            batch[i, : len(w)] = w
        yield [f"u{a + i}" for i in range(len(part))], batch, lengths


@contextlib.contextmanager
def hook_clock(model: torch.nn.Module):
    """Seconds spent inside the forward hooks and pre-hooks already registered on ``model``'s modules,
    summed into ``clock[0]``: a clock hook runs first and another last around each module's hooks."""
    clock = [0.0]
    start = [0.0]
    handles = []

    def tick(*args, **kwargs) -> None:
        start[0] = time.perf_counter()

    def tock(*args, **kwargs) -> None:
        clock[0] += time.perf_counter() - start[0]

    for module in model.modules():
        if module._forward_hooks:
            handles += [module.register_forward_hook(tick, prepend=True), module.register_forward_hook(tock)]
        if module._forward_pre_hooks:
            handles += [module.register_forward_pre_hook(tick, prepend=True), module.register_forward_pre_hook(tock)]
    try:
        yield clock
    finally:
        for h in handles:
            h.remove()


def in_process(name: str, waves: list[torch.Tensor], repeats: int) -> dict:
    """Batch-level pairs: each batch through a plain copy of the model and through the recorded model, in
    ABBA order (drift cancels), so that this shared machine's slow minutes hit both sides of a pair. One
    Recorder takes every pass (each pass's clips under new ids, as a corpus of repeats x clips utterances
    would be): the overhead is the ratio of summed times over all pairs, with a 95 % bootstrap interval
    over pairs and the median pair; ``features()`` at the end is timed on its own and added in
    ``recorder_overhead_with_features``. Less exposed to this machine's drift than a difference of two
    wall times, the time spent inside the Recorder's own hooks (clocks hooked just before and just after
    them on every module that has one) and in entering and leaving ``rec.batch`` (added to the recorded
    side of each pair too) is reported as a share of the plain forward, ``hook_share``."""
    model = build(name, **MODELS[name]).eval()
    plain_model = copy.deepcopy(model)  # the same weights, no hooks
    spec = probe_layers(model)
    data = list(batches(waves, 8))
    pairs: list[tuple[float, float]] = []

    def forward(m: torch.nn.Module, w: torch.Tensor, n: torch.Tensor) -> float:
        t0 = time.perf_counter()
        m(w, n)
        return time.perf_counter() - t0

    with torch.no_grad():
        for _, w, n in data:  # warm-up of both
            plain_model(w, n)
            model(w, n)
        with Recorder(model, spec.layers, spec.pooling, overrides=spec.overrides) as rec, hook_clock(model) as clock:
            for r in range(repeats):
                for i, (ids, w, n) in enumerate(data):
                    block = rec.batch([f"{u}-{r}" for u in ids], lengths=n)
                    t0 = time.perf_counter()
                    with block:  # entering and leaving it count as the Recorder's time
                        t_batch = time.perf_counter() - t0
                        recorded_first = (r + i) % 2 == 1
                        clock[0] = 0.0
                        t_rec = forward(model, w, n) if recorded_first else 0.0
                        t_plain = forward(plain_model, w, n)
                        t_rec = t_rec if recorded_first else forward(model, w, n)
                        t0 = time.perf_counter()
                    t_batch += time.perf_counter() - t0
                    pairs.append((t_plain, t_rec + t_batch, clock[0] + t_batch))
        t0 = time.perf_counter()
        feats = rec.features()
        features_s = time.perf_counter() - t0
    plain, recorded, hooks = np.array(pairs).T
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(pairs), (2000, len(pairs)))
    boot = [(recorded[i].sum() / plain[i].sum() - 1) for i in draws]
    share = [hooks[i].sum() / plain[i].sum() for i in draws]
    passes = repeats * len(waves)
    return {"columns": int(feats.shape[1]), "utterances_recorded": int(feats.shape[0]), "repeats": repeats,
            "pairs": len(pairs), "plain_forward_s": plain.sum() / repeats, "with_recorder_s": recorded.sum() / repeats,
            "utterances_per_s_plain": passes / plain.sum(), "utterances_per_s_recorded": passes / recorded.sum(),
            "recorder_overhead": recorded.sum() / plain.sum() - 1,
            "recorder_overhead_95ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "recorder_overhead_median_pair": float(np.median(recorded / plain - 1)),
            "hook_ms_per_pass": 1000 * hooks.sum() / repeats, "hook_share": hooks.sum() / plain.sum(),
            "hook_share_95ci": [float(np.percentile(share, 2.5)), float(np.percentile(share, 97.5))],
            "features_s": features_s,
            "recorder_overhead_with_features": (recorded.sum() + features_s) / plain.sum() - 1,
            "target_overhead": 0.05}


def cli_runs(name: str, waves: list[torch.Tensor], root: Path) -> dict:
    wav_dir = root / "wav"
    wav_dir.mkdir(exist_ok=True)
    rows = ["utt_id,path"]
    for i, w in enumerate(waves):
        sf.write(wav_dir / f"u{i}.wav", w.numpy(), 16000)
        rows.append(f"u{i},{wav_dir / f'u{i}.wav'}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    args = ["extract", "--model", name, "--manifest", str(root / "m.csv"), "--shard-size", str(max(1, len(waves) // 4))]
    if name == "sre-cnn":
        args += ["--size", "paper"]
    torchrun = Path(sys.executable).with_name("torchrun")
    out = {}
    for label, cmd in (("one_process", [sys.executable, "-m", "neurohook"]),
                       ("torchrun_2", [str(torchrun), "--nproc_per_node=2", "--master_port=29531", "-m", "neurohook"])):
        target = root / f"out-{label}"
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.perf_counter()
        run = subprocess.run([*cmd, *args, "--out", str(target)], cwd=root, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            raise RuntimeError(f"{label}: {run.stderr[-2000:]}")
        out[label] = {"wall_s": seconds, "utterances_per_s": len(waves) / seconds}
    a = np.load(root / "out-one_process" / "features.npz")["values"]
    b = np.load(root / "out-torchrun_2" / "features.npz")["values"]
    out["speedup"] = out["one_process"]["wall_s"] / out["torchrun_2"]["wall_s"]
    out["max_difference"] = float(np.abs(a - b).max())
    return out


def main() -> None:
    args = parse_args(__doc__)
    n, seconds, repeats = (8, 1.0, 1) if args.quick else (32, 4.0, 7)
    waves = clips(n, seconds)
    results = {"utterances": n, "seconds_each": f"{0.75 * seconds:g}-{seconds:g}", "threads": torch.get_num_threads(),
               "in_process": {}, "extract_cli": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            results["in_process"][name] = in_process(name, waves, repeats)
            results["extract_cli"][name] = cli_runs(name, waves, Path(tmp))
    # part of the recorder's cost is per hook call, not per frame: sre-cnn also at VoxCeleb-like lengths
    results["in_process"][f"sre-cnn, {0.75 * 2.5 * seconds:g}-{2.5 * seconds:g} s clips"] = in_process(
        "sre-cnn", clips(n, 2.5 * seconds), repeats)
    emit("extract", results)


if __name__ == "__main__":
    main()
