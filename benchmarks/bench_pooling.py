"""Benchmark: streaming Recorder vs store-all-frames pooling on wav2vec2-base (random weights).

Records mean pooling of all 12 transformer layers of ``torchaudio.models.wav2vec2_base()`` for
one utterance of each duration, and prints JSON with, per duration:

- ``forward_s``: plain forward, forward with the recorder, forward keeping every layer's frames
  (as ``output_hidden_states`` does) followed by pooling; ``recorder_over_plain`` and
  ``store_all_over_recorder`` wall-time ratios (runs are interleaved; the minimum of the repeats is
  reported, the least disturbed by other work on a shared machine); ``hook_s``: time inside the
  recorder's hooks (profiler ``neurohook/<layer>`` ranges), a contention-robust overhead measure;
- ``memory``: peak heap during the encoder phase (the 12 recorded layers; the CNN front-end's
  large transients are excluded so the kept frames are visible) for plain / recorder / store-all,
  measured with memray when available, each method's extra peak over plain, and the bytes each
  method holds once the forward ends (pooled statistics vs kept frames).

Usage: ``python benchmarks/bench_pooling.py [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torchaudio

import _harness as harness
from neurohook.hooks import Recorder

logger = logging.getLogger("bench_pooling")
LAYERS = "transformer.layers.*"  # relative to model.encoder (memory phase)
SAMPLE_RATE = 16000


def sync(device: torch.device) -> None:
    """Wait for queued device work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class StoreAll:
    """Baseline: keep every layer's full output (references, like output_hidden_states), pool after."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        self.frames: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._keep) for m in layers]

    def _keep(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.frames.append((output[0] if isinstance(output, tuple) else output).detach())

    def held_bytes(self) -> int:
        """Bytes of kept frames."""
        return sum(t.numel() * t.element_size() for t in self.frames)

    def pool(self) -> torch.Tensor:
        """Mean over frames of every kept layer, concatenated: (B, 12 * D)."""
        return torch.cat([f.float().mean(dim=1) for f in self.frames], dim=1)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def recorder_held_bytes(rec: Recorder) -> int:
    """Bytes of the recorder's running statistics."""
    total = 0
    for pool in rec._pools.values():
        state = pool._state
        if state is not None:
            for k in ("count", "mean", "m2", "max", "min"):
                t = getattr(state, k)
                if t is not None:
                    total += t.numel() * t.element_size()
    return total


def hook_seconds(fn: Callable[[], Any]) -> float:
    """CPU seconds spent inside the recorder's ``neurohook/<layer>`` ranges during fn (profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("neurohook/")) / 1e6


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Peak heap bytes allocated during fn (CUDA counters on GPU, memray on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
    return harness.peak_bytes(fn, "memray")


def encoder_memory(model: torch.nn.Module, wave: torch.Tensor, device: torch.device) -> tuple[int, dict[str, Any]]:
    """(encoder frames, peak and held memory of the plain, recorded and store-everything encoder passes);
    the encoder phase only: the features are computed outside the measured region."""
    with torch.inference_mode():
        feats, _ = model.feature_extractor(wave, None)
        enc_layers = [model.encoder.transformer.layers[i] for i in range(12)]
        enc_rec = Recorder(model.encoder, LAYERS, pooling="mean")

        def enc_plain() -> None:
            model.encoder(feats)

        def enc_recorded() -> None:
            with enc_rec, enc_rec.batch(["u"]):
                model.encoder(feats)

        held: dict[str, int] = {}

        def enc_store() -> None:
            keep = StoreAll(enc_layers)
            try:
                model.encoder(feats)
                held["store_all"] = keep.held_bytes()
                keep.pool()
            finally:
                keep.close()

        enc_recorded()  # warm-up outside tracking (statistics allocated on first use)
        peak_plain, how = peak_bytes(enc_plain, device)
        peak_rec, _ = peak_bytes(enc_recorded, device)
        peak_store, _ = peak_bytes(enc_store, device)
        held["recorder"] = recorder_held_bytes(enc_rec)

    extra_rec = max(0, peak_rec - peak_plain)
    extra_store = max(0, peak_store - peak_plain)
    return int(feats.shape[1]), {
        "method": how,
        "phase": "encoder (12 transformer layers)",
        "peak_bytes": {"plain": peak_plain, "recorder": peak_rec, "store_all": peak_store},
        "extra_peak_bytes": {"recorder": extra_rec, "store_all": extra_store},
        "held_bytes": held,
        "extra_peak_ratio_store_all_over_recorder": extra_store / max(extra_rec, 1),
        "held_ratio_store_all_over_recorder": held["store_all"] / max(held["recorder"], 1),
    }


def bench_duration(
    model: torch.nn.Module, seconds: float, repeats: int, device: torch.device, warm_up: bool
) -> dict[str, Any]:
    """All measurements for one utterance of ``seconds``."""
    torch.manual_seed(0)
    wave = torch.randn(1, int(seconds * SAMPLE_RATE), device=device)
    layers = [model.encoder.transformer.layers[i] for i in range(12)]
    rec = Recorder(model, ["encoder." + LAYERS], pooling="mean")

    def plain() -> None:
        model(wave)

    def recorded() -> None:
        with rec, rec.batch(["u"]):
            model(wave)

    pooled: list[torch.Tensor] = []

    def store_all() -> torch.Tensor:
        keep = StoreAll(layers)
        try:
            model(wave)
            return keep.pool()
        finally:
            keep.close()

    with torch.inference_mode():
        if warm_up:
            timed(plain, device)
        plain_t, rec_t, store_t = [], [], []
        for _ in range(repeats):  # interleave to share drift
            plain_t.append(timed(plain, device))
            rec_t.append(timed(recorded, device))
            store_t.append(timed(lambda: pooled.append(store_all()), device))
        pooled_rec = rec.features().values
        hook_s = hook_seconds(recorded)
        pooled_store = pooled[-1].cpu().numpy()
        max_diff = float(abs(pooled_rec - pooled_store).max())

    frames, memory = encoder_memory(model, wave, device)
    plain_med, rec_med, store_med = (min(v) for v in (plain_t, rec_t, store_t))
    return {
        "seconds": seconds,
        "frames": frames,
        "forward_s": {"plain": plain_med, "recorder": rec_med, "store_all": store_med},
        "forward_s_all_repeats": {"plain": plain_t, "recorder": rec_t, "store_all": store_t},
        "recorder_over_plain": rec_med / plain_med,
        "hook_s": hook_s,
        "hook_s_over_plain_forward": hook_s / plain_med,
        "store_all_over_recorder": store_med / rec_med,
        "pooled_max_abs_diff_vs_store_all": max_diff,
        "memory": memory,
    }


def main() -> None:
    """Run the benchmark and print JSON to stdout."""
    def options(parser):
        parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        parser.add_argument("--durations", type=float, nargs="*", help="override utterance durations (s)")

    args = harness.parse_args(__doc__, options)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    device = torch.device(args.device)
    durations = args.durations or ([1.0, 3.0] if args.quick else [5.0, 30.0, 120.0])
    torch.manual_seed(0)
    model = torchaudio.models.wav2vec2_base().to(device).eval()
    results = []
    for seconds in durations:
        repeats = 5 if seconds <= 10 else (3 if seconds <= 60 else 1)
        logger.info("benchmarking %.0f s on %s", seconds, device)
        results.append(bench_duration(model, seconds, repeats, device, warm_up=not results))
        logger.info("%s", json.dumps(results[-1]))
    harness.emit("pooling", {
        "model": "torchaudio wav2vec2_base (random weights), 12 transformer layers, mean pooling",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "results": results,
    })


if __name__ == "__main__":
    main()
