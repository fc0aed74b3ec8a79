"""Benchmark of ablation curves in the running model: prefix sharing vs replicating the input vs one
forward per variant, each beside one plain pass over the same data.

A 10-point curve with 5 random draws (1 + 10 x (top, bottom, 5 random) = 71 variants) with the
model's head as the metric, on small random-weight models (3 s clips at 16 kHz, 32 utterances of
varied length, batches of 8): adi-cnn and sre-cnn (the paper's CNNs, CPU presets) and Resemblyzer
(3-layer LSTM; its stacked LSTM does not fit prefix sharing, so its curve replicates each utterance;
it packs padded batches, so its reference runs one variant per forward).
Two rankings: over every probed layer (random draws touch the first layers, so little is shared) and
over one late layer (fc1: the variants share everything below it). Ratios are curve seconds over
plain-pass seconds; the issue's target is <= 3. The curves of the ways are compared (max difference,
beside the largest change the ablations make). Prefix sharing runs one utterance per forward: on these
small models that alone costs about 2.3x the batched plain pass.
Usage: python benchmarks/bench_intervene.py [--quick]
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from _harness import emit, parse_args, timed
from neurohook.hooks import Recorder
from neurohook.intervene import ablation_curve
from neurohook.models import build, probe_layers


def mean_output(outputs: np.ndarray, ids) -> float:
    """A continuous metric (any difference between two ways shows): the mean of every output."""
    return float(outputs.mean())


def setting(name: str, quick: bool):
    model = (build(name, pretrained=False) if name == "resemblyzer" else build(name, "small", seed=0)).eval()
    n, batch, seconds = (8, 4, 1.0) if quick else (32, 8, 3.0)
    g = torch.Generator().manual_seed(0)
    S = int(16000 * seconds)
    waves = torch.randn(n, S, generator=g) * 0.1
    lengths = torch.tensor([S - (i % 4) * S // 8 for i in range(n)])
    waves[torch.arange(S)[None, :] >= lengths[:, None]] = 0
    ids = [f"u{i}" for i in range(n)]
    data = [(ids[a : a + batch], waves[a : a + batch], lengths[a : a + batch]) for a in range(0, n, batch)]
    spec = probe_layers(model)
    with Recorder(model, spec.layers, spec.pooling, overrides=spec.overrides) as rec, torch.no_grad():
        for b_ids, w, n_ in data:
            with rec.batch(b_ids, lengths=n_):
                model(w, n_)
    return model, data, rec.features()


def curves(name: str, quick: bool) -> dict:
    model, data, feats = setting(name, quick)
    forward = (lambda m, w, n: m.embed(w, n)) if hasattr(model, "embed") else None

    def plain() -> None:
        with torch.no_grad():
            for _, w, n in data:
                model(w, n) if forward is None else forward(model, w, n)

    plain()  # warm-up
    t_plain = min(timed(plain)[1] for _ in range(3))
    late = next((s for s in feats.layers if s.name in ("fc1", "lstm.layers.2")), feats.layers[-1])
    rankings = {"all_layers": np.random.default_rng(0).permutation(feats.shape[1]),
                late.name: np.random.default_rng(1).permutation(np.arange(late.start, late.end))}
    out: dict = {"neurons": int(feats.shape[1]), "plain_pass_s": t_plain}
    for label, order in rankings.items():
        ks = np.unique(np.geomspace(max(1, len(order) // 200), len(order) // 2, 10).round().astype(int)).tolist()
        run = dict(ks=ks, metric=mean_output, draws=5, features=feats, forward=forward, n_boot=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shared, t_shared = timed(lambda: ablation_curve(model, data, order, **run))
        packs = name == "resemblyzer"  # packs padded batches: replicas cannot share a forward, one per variant
        replicated, t_rep = timed(lambda: ablation_curve(model, data, order, share_prefix=False,
                                                         max_replicas=1 if packs else None, **run))
        row = {"ks": ks, "variants": 1 + len(ks) * 7, "shared_s": t_shared, "replicated_s": t_rep,
               "shared_over_plain": t_shared / t_plain, "replicated_over_plain": t_rep / t_plain,
               "target_over_plain": 3, "fell_back_to_replication": bool(caught),
               "max_difference": float(np.max(np.abs(np.r_[shared.top, shared.random] - np.r_[replicated.top, replicated.random]))),
               "max_change_by_ablation": float(np.max(np.abs(np.r_[shared.top, shared.random] - shared.reference)))}
        if label == "all_layers" and not packs:
            looped, row["looped_s"] = timed(lambda: ablation_curve(model, data, order, share_prefix=False, max_replicas=1, **run))
            row["looped_over_plain"] = row["looped_s"] / t_plain
        out[label] = row
    return out


def main() -> None:
    args = parse_args(__doc__)
    n, seconds = (8, 1.0) if args.quick else (32, 3.0)
    emit("intervene", {"utterances": n, "seconds_each": seconds, "draws": 5, "threads": torch.get_num_threads(),
                       "models": {name: curves(name, args.quick) for name in ("adi-cnn", "sre-cnn", "resemblyzer")}})


if __name__ == "__main__":
    main()
