"""Extraction of pooled layer activations for a whole manifest: sharded, resumable, distributable.

The manifest's utterances are cut into shards of ``shard_size`` (in manifest order); shard k is
processed by rank ``k % world_size`` and written atomically as
``<out>/shards/shard-00007.safetensors``. A rerun skips every shard already on disk, so an
interrupted extraction resumes where it stopped. Rank 0 then merges the shards into
``<out>/features.npz`` in manifest order, identical to a single-process run; with ``merge=False``
the shards stay the store, read memory-mapped by :class:`neurohook.shards.ShardedFeatures`
(for features larger than memory). Under ``torchrun`` the rank and world size come from its environment
(RANK, WORLD_SIZE); ranks wait for each other with a gloo barrier before the merge.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from neurohook.data.batching import make_loader
from neurohook.atomic import atomic_write_text
from neurohook.data.manifest import Manifest
from neurohook.features import Features
from neurohook.hooks import Recorder

__all__ = ["extract", "shard_ids", "distributed_context", "FEATURES_FILE"]

logger = logging.getLogger(__name__)

FEATURES_FILE = "features.npz"


def distributed_context() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard_ids(ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Consecutive groups of at most shard_size ids, in the given order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    return [list(ids[i : i + shard_size]) for i in range(0, len(ids), shard_size)]


def _barrier(world_size: int) -> None:
    if world_size <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def extract(
    model: torch.nn.Module,
    manifest: Manifest,
    out_dir: str | os.PathLike[str],
    layers: Any,
    *,
    pooling: str = "mean",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    sample_rate: int = 16000,
    batch_size: int = 8,
    shard_size: int = 256,
    device: str | torch.device = "cpu",
    on_error: str = "skip",
    pass_lengths: bool = True,
    progress: bool = True,
    merge: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> Path | None:
    """Pool ``layers`` of ``model`` over every utterance of ``manifest``; returns the merged file (rank 0).

    The model is called as ``model(wave, lengths)`` with wave (B, samples) and lengths (B,) in
    samples (``model(wave)`` when pass_lengths is False). Other ranks return None; without
    ``merge``, rank 0 returns the shard folder.
    """
    env_rank, env_world = distributed_context()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    ids = [r.utt_id for r in manifest.records]
    shards = shard_ids(ids, shard_size)
    mine = [k for k in range(len(shards)) if k % world_size == rank]
    model = model.to(device).eval()
    todo = [k for k in mine if not (shard_dir / f"shard-{k:05d}.safetensors").exists()]
    logger.info("rank %d/%d: %d shard(s), %d already done", rank, world_size, len(mine), len(mine) - len(todo))

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(shards[k]) for k in todo), unit="utt", disable=not progress or rank != 0, desc="extract")
    skipped_total = 0
    for k in todo:
        t0 = time.perf_counter()
        sub = manifest.select(shards[k])
        loader = make_loader(sub, sample_rate=sample_rate, batch_size=batch_size, on_error=on_error)
        rec = Recorder(model, layers, pooling=pooling, overrides=overrides)
        with rec, torch.inference_mode():
            for batch_ids, wave, lengths in loader:
                wave, lengths = wave.to(device), lengths.to(device)
                with rec.batch(batch_ids, lengths=lengths):
                    model(wave, lengths) if pass_lengths else model(wave)
                bar.update(len(batch_ids))
        skipped_total += loader.skipped
        if not rec.ids:
            logger.warning("shard %d: every utterance failed to load; nothing written", k)
            continue
        rec.features().save(shard_dir / f"shard-{k:05d}.safetensors")
        logger.info("shard %d: %d utterances in %.1f s", k, len(rec.ids), time.perf_counter() - t0)
    bar.close()
    if skipped_total:
        logger.warning("rank %d: %d unreadable utterance(s) skipped", rank, skipped_total)

    _barrier(world_size)
    if rank != 0:
        return None
    if not merge:
        return shard_dir
    parts = [Features.load(shard_dir / f"shard-{k:05d}.safetensors") for k in range(len(shards))
             if (shard_dir / f"shard-{k:05d}.safetensors").exists()]
    if not parts:
        raise RuntimeError(f"no shard of {out} holds any utterance: every file failed to load")
    merged = Features.concat(parts)
    present = set(merged.ids)
    merged = merged.select_ids([u for u in ids if u in present])  # manifest order, whatever the batching
    path = merged.save(out / FEATURES_FILE)
    atomic_write_text(out / "extract.json", json.dumps({
        "utterances": len(merged), "neurons": int(merged.values.shape[1]), "layers": merged.layer_names,
        "shards": len(shards), "world_size": world_size, "pooling": pooling}, indent=2))
    logger.info("wrote %s: %d utterances x %d neurons", path, len(merged), merged.values.shape[1])
    return path
