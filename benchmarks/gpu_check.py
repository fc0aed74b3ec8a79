"""The GPU checks of issues #15 and #17, as one script for a session that is lent a GPU (never CI).

Each check compares the device with this machine's CPU in the same run:
  1. pooling: a Recorder on sre-cnn (small) and wav2vec2_base (random weights) on CUDA, the model in
     float32 and under float16 / bfloat16 autocast, against CPU float32 pooling of the same model
     (float32 must agree within 1e-5 of each column's scale; the half types are reported, not asserted);
  2. probes: the tuned LinearProbe on planted features on CUDA vs CPU (test accuracies within 0.5 points);
  3. ablation and prefix sharing on CUDA: an ablation curve of sre-cnn equals the CPU curve;
  4. throughput: utterances/s of recorder + forward on the GPU, and the pooled layers' bytes per
     second of that run as a fraction of the GPU's memory bandwidth (``--bandwidth-gbs``, default
     4800, an H200's; a lower bound of the pooling's own share).
Prints one JSON object; exits 1 if a check fails. ``--device cpu`` runs every path on the CPU (a dry run).
Usage: python benchmarks/gpu_check.py [--quick] [--device cuda] [--bandwidth-gbs 4800]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from _harness import emit, parse_args
from neurohook.hooks import Recorder
from neurohook.intervene import ablation_curve
from neurohook.models import build, probe_layers
from neurohook.probe import LinearProbe


def batches(n: int, seconds: float, batch: int):
    g = torch.Generator().manual_seed(0)
    S = int(16000 * seconds)
    for a in range(0, n, batch):
        b = min(batch, n - a)
        lengths = torch.tensor([S - (i % 3) * S // 6 for i in range(b)])
        w = torch.randn(b, S, generator=g) * 0.1
        w[torch.arange(S)[None, :] >= lengths[:, None]] = 0
        yield [f"u{a + i}" for i in range(b)], w, lengths


def pooled(model, data, device: str, dtype: torch.dtype) -> tuple[np.ndarray, float]:
    """Pooled features of every probed layer; float16 / bfloat16 through autocast (the front-ends'
    FFTs stay float32, as in mixed-precision inference), pooling accumulated in float32."""
    spec = probe_layers(model)
    m = model.to(device)
    half = dtype != torch.float32
    t0 = time.perf_counter()
    with Recorder(m, spec.layers, spec.pooling, overrides=spec.overrides) as rec, torch.no_grad(), \
            torch.autocast(device.split(":")[0], dtype=dtype, enabled=half):
        for ids, w, n in data:
            with rec.batch(ids, lengths=n):
                m(w.to(device), n.to(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    model.to("cpu")
    return np.asarray(rec.features().values, dtype=np.float64), seconds


def pooling_check(name: str, device: str, data) -> dict:
    model = (build(name) if name == "wav2vec2_base" else build(name, "small", seed=0)).eval()
    ref, t_cpu = pooled(model, data, "cpu", torch.float32)
    out: dict = {"cpu_float32_s": t_cpu, "columns": int(ref.shape[1])}
    scale = np.abs(ref).max(axis=0) + 1e-6
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        key = str(dtype).split(".")[1]
        try:
            got, seconds = pooled(model, data, device, dtype)
        except RuntimeError as e:  # e.g. an op without a kernel for this dtype on this device
            out[key] = {"error": str(e)[:300], "max_relative_difference": float("inf")}
            continue
        rel = float((np.abs(got - ref) / scale).max())
        out[key] = {"seconds": seconds, "max_relative_difference": rel,
                    "utterances_per_s": sum(len(i) for i, _, _ in data) / seconds}
    out["float32_within_1e-5"] = out["float32"]["max_relative_difference"] <= 1e-5
    return out


def probe_check(device: str, quick: bool) -> dict:
    rng = np.random.default_rng(0)
    n, d = (600, 64) if quick else (4000, 1024)
    y = rng.integers(0, 5, n)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, :10] += 0.6 * np.eye(5)[y].repeat(2, axis=1)
    tr, te = np.arange(n) < int(0.6 * n), np.arange(n) >= int(0.6 * n)
    acc = {}
    for dev in ("cpu", device):
        t0 = time.perf_counter()
        acc[dev] = (LinearProbe(device=dev).fit(X[tr], y[tr]).score(X[te], y[te]), time.perf_counter() - t0)
    diff = abs(acc["cpu"][0] - acc[device][0]) * 100
    return {"cpu_accuracy": acc["cpu"][0], "device_accuracy": acc[device][0], "cpu_s": acc["cpu"][1],
            "device_s": acc[device][1], "difference_points": diff, "within_0.5_points": diff <= 0.5}


def ablation_check(device: str, data) -> dict:
    model = build("sre-cnn", "small", seed=0).eval()
    spec = probe_layers(model)
    with Recorder(model, spec.layers, spec.pooling, overrides=spec.overrides) as rec, torch.no_grad():
        for ids, w, n in data:
            with rec.batch(ids, lengths=n):
                model(w, n)
    feats = rec.features()
    order = np.random.default_rng(0).permutation(feats.shape[1])
    metric = lambda outputs, ids: float(outputs.mean())
    run = dict(ks=[10, 100, 500], metric=metric, draws=2, features=feats, n_boot=0)
    cpu = ablation_curve(model, data, order, **run)
    on_device = [(ids, w.to(device), n.to(device)) for ids, w, n in data]
    dev = ablation_curve(model.to(device), on_device, order, **run)
    model.to("cpu")
    diff = float(np.max(np.abs(np.r_[cpu.top, cpu.random] - np.r_[dev.top, dev.random])))
    return {"max_difference": diff, "equal_within_1e-4": diff <= 1e-4}


def main() -> None:
    def extra(p):
        p.add_argument("--device", default="cuda")
        p.add_argument("--bandwidth-gbs", type=float, default=4800.0)

    args = parse_args(__doc__, extra)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu for a dry run)", file=sys.stderr)
        sys.exit(2)
    n, seconds = (4, 1.0) if args.quick else (64, 4.0)
    data = list(batches(n, seconds, 8))
    out = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
           "pooling": {m: pooling_check(m, args.device, data) for m in ("sre-cnn", "wav2vec2_base")},
           "probe": probe_check(args.device, args.quick), "ablation": ablation_check(args.device, data[:2])}
    w2v = out["pooling"]["wav2vec2_base"]["float32"]
    # bytes the pooling reads (every probed layer's float32 frames once) per second of the whole recorded
    # forward: a lower bound of the pooling's own share of the memory bandwidth
    frames = sum(int(n_.sum()) for _, _, n_ in data) / 320  # about one frame per 20 ms
    layer_bytes = frames * (7 * 512 + 12 * 768) * 4
    out["pooled_bytes_per_s_over_bandwidth"] = layer_bytes / w2v["seconds"] / (args.bandwidth_gbs * 1e9)
    ok = all(v["float32_within_1e-5"] for v in out["pooling"].values()) and out["probe"]["within_0.5_points"] \
        and out["ablation"]["equal_within_1e-4"]
    out["all_checks_pass"] = ok
    emit("gpu_check", out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
