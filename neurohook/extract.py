"""Extraction of pooled layer activations for a whole manifest: sharded, resumable, distributable.

The manifest's utterances are cut into shards of ``shard_size`` (in manifest order); shard k is
processed by rank ``k % world_size`` and written atomically as
``<out>/shards/shard-00007.safetensors`` with a fingerprint of what produced it (model, layers,
settings, the rows' files: :mod:`neurohook.provenance`). A rerun reuses exactly the shards this
configuration wrote, so an interrupted extraction resumes where it stopped; a folder holding another
configuration's shards stops the run before any work (``overwrite=True`` recomputes), and a shard
whose skipped files have changed since is recomputed. Rank 0 then merges the shards into
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

from neurohook.atomic import atomic_write_text
from neurohook.data.batching import make_loader
from neurohook.data.manifest import Manifest
from neurohook.errors import DataError, FolderConflictError, FeaturesFileError, TooShortError, check_writable_dir
from neurohook.distributed import barrier, context
from neurohook.features import STORAGE_DTYPES, Features, read_provenance
from neurohook.hooks import Recorder
from neurohook.provenance import changed_rows, compare_rows, compare_run, row_fingerprints, run_fingerprint
from neurohook.shards import SHARD_PATTERN

__all__ = ["extract", "plan_shards", "shard_ids", "shard_path", "FEATURES_FILE"]

logger = logging.getLogger(__name__)

FEATURES_FILE = "features.npz"


def shard_ids(ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Consecutive groups of at most shard_size ids, in the given order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    return [list(ids[i : i + shard_size]) for i in range(0, len(ids), shard_size)]


def shard_path(shard_dir: Path, k: int) -> Path:
    """The file of shard k: ``<shard_dir>/shard-00007.safetensors``."""
    return shard_dir / f"shard-{k:05d}.safetensors"


def _clear(out: Path) -> None:
    """Remove what an extraction wrote into ``out`` (shards, merged features, extract.json)."""
    for path in [*sorted((out / "shards").glob(SHARD_PATTERN)), out / FEATURES_FILE, out / "extract.json"]:
        path.unlink(missing_ok=True)


def plan_shards(out: Path, shards: Sequence[Sequence[str]], manifest: Manifest, run: Mapping[str, Any]) -> list[int]:
    """Indices of the shards to (re)compute; FolderConflictError when ``out`` holds another run's work.

    A shard on disk is reused when its fingerprint is this run's and its files are unchanged; it is
    recomputed when it cannot be read (with a warning) or when a file it had skipped has changed
    (fixed, or now present). Any other difference stops the run before it does any work.
    """
    def conflict(path: Path, problem: str) -> FolderConflictError:
        return FolderConflictError(f"{out}/: {path.name} {problem}; use a new --out or --overwrite")

    stored: dict[Path, dict[str, Any] | None] = {}
    for path in sorted((out / "shards").glob(SHARD_PATTERN)):
        try:
            stored[path] = read_provenance(path) or {}
        except FeaturesFileError as e:
            logger.warning("%s; recomputing it", e)
            stored[path] = None
            continue
        problem = compare_run(stored[path], run)  # another configuration: the most telling difference first
        if problem is not None:
            raise conflict(path, problem)
    extra = [p for p in stored if p not in {shard_path(out / "shards", k) for k in range(len(shards))}]
    if extra:
        raise conflict(extra[0], f"is not part of this run (this manifest gives {len(shards)} shard(s))")
    todo = []
    for k, ids in enumerate(shards):
        path = shard_path(out / "shards", k)
        info = stored.get(path)
        if info is None:  # not written yet, or unreadable
            todo.append(k)
            continue
        rows = row_fingerprints(manifest.select(ids))
        problem = compare_rows(info, rows)
        if problem is not None:
            raise conflict(path, problem)
        skipped = {u for u, _ in info.get("skipped", [])}
        changed = changed_rows(info["rows"], rows)
        kept = [u for u in changed if u not in skipped]
        if kept:
            raise conflict(path, f"has an audio file that changed since it was extracted (utterance {kept[0]!r}; "
                                 f"{len(kept)} file(s) in all)")
        if changed:
            logger.info("%s: retrying %d skipped utterance(s) whose file changed", path.name, len(changed))
            todo.append(k)
    return todo


def _index(path: Path) -> int | None:
    try:
        return int(path.name[len("shard-") : -len(".safetensors")])
    except ValueError:
        return None


def _drop_short(ids: list[str], wave: torch.Tensor, lengths: torch.Tensor, min_samples: int, on_error: str,
                what: str, sample_rate: int, skipped: list[list[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The batch without utterances shorter than ``min_samples`` (recorded in ``skipped``, or TooShortError)."""
    short = lengths < min_samples
    if not bool(short.any()):
        return ids, wave, lengths
    for u, n in zip(ids, lengths.tolist()):
        if n < min_samples:
            reason = (f"{n} samples ({n / sample_rate:.4f} s) is shorter than the {min_samples} samples "
                      f"({min_samples / sample_rate:.4f} s) {what} needs")
            if on_error == "raise":
                raise TooShortError(f"utterance {u!r}: {reason} (--on-error skip leaves it out)")
            skipped.append([u, reason])
    keep = ~short
    if not bool(keep.any()):
        return [], wave[:0], lengths[:0]
    lengths = lengths[keep]
    return [u for u, s in zip(ids, short.tolist()) if not s], wave[keep][:, : int(lengths.max())], lengths


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
    overwrite: bool = False,
    min_samples: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    dtype: str = "float32",
) -> Path | None:
    """Pool ``layers`` of ``model`` over every utterance of ``manifest``; returns the merged file (rank 0).

    The model is called as ``model(wave, lengths)`` with wave (B, samples) and lengths (B,) in
    samples (``model(wave)`` when pass_lengths is False). Utterances shorter than ``min_samples``
    (default: the model's ``min_samples``, when it has one) are skipped with the reason, or raise
    :class:`~neurohook.errors.TooShortError` under ``on_error="raise"``. A rerun into ``out_dir``
    reuses only shards this configuration wrote (see :func:`plan_shards`); ``overwrite`` recomputes
    everything. Other ranks return None; without ``merge``, rank 0 returns the shard folder.
    ``dtype="float16"`` stores the pooled values in half precision (pooling itself runs in float32).
    """
    env_rank, env_world = context()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    check_writable_dir(out, "output folder")
    shards = shard_ids([r.utt_id for r in manifest.records], shard_size)
    model = model.to(device).eval()
    rec = Recorder(model, layers, pooling=pooling, overrides=overrides)  # bad layers fail here, before any write
    if min_samples is None:
        min_samples = getattr(model, "min_samples", None)
    if not getattr(model, "padding_invariant", True) and batch_size > 1:
        logger.info("%s sees zero padding (its outputs depend on the batch): one utterance per forward",
                    getattr(model, "name", type(model).__name__))
        batch_size = 1
    run = run_fingerprint(model, rec.layer_specs(), pooling=pooling, shard_size=shard_size, batch_size=batch_size,
                          sample_rate=sample_rate, pass_lengths=pass_lengths, min_samples=min_samples, dtype=dtype)
    if overwrite:
        if rank == 0:
            _clear(out)
        barrier(world_size)
    todo = [k for k in plan_shards(out, shards, manifest, run) if k % world_size == rank]
    mine = sum(1 for k in range(len(shards)) if k % world_size == rank)
    logger.info("rank %d/%d: %d shard(s), %d already done", rank, world_size, mine, mine - len(todo))

    from tqdm.auto import tqdm

    # leave=False and the with block: an error ends on a clean line; disable=None: no bar unless a terminal.
    with tqdm(total=sum(len(shards[k]) for k in todo), unit="utt", disable=None if progress and rank == 0 else True,
              leave=False, desc="extract") as bar:
        for k in todo:
            _extract_shard(model, rec, manifest.select(shards[k]), shard_path(out / "shards", k), run, bar=bar,
                           sample_rate=sample_rate, batch_size=batch_size, device=device, on_error=on_error,
                           pass_lengths=pass_lengths, min_samples=min_samples)
    barrier(world_size)
    if rank != 0:
        return None
    return _merge(out, shards, manifest, run) if merge else out / "shards"


def _extract_shard(model: torch.nn.Module, rec: Recorder, sub: Manifest, path: Path, run: Mapping[str, Any], *,
                   bar: Any, sample_rate: int, batch_size: int, device: str | torch.device, on_error: str,
                   pass_lengths: bool, min_samples: int | None) -> None:
    """Record one shard's utterances and write it atomically with its fingerprint (nothing when all failed)."""
    t0 = time.perf_counter()
    rows = row_fingerprints(sub)  # the files as they are before reading them
    loader = make_loader(sub, sample_rate=sample_rate, batch_size=batch_size, on_error=on_error)
    skipped: list[list[str]] = []
    what = getattr(model, "name", type(model).__name__)
    rec.reset()
    with rec, torch.inference_mode():
        for batch_ids, wave, lengths in loader:
            bar.update(len(batch_ids))
            if min_samples:
                batch_ids, wave, lengths = _drop_short(batch_ids, wave, lengths, min_samples, on_error, what,
                                                       sample_rate, skipped)
                if not batch_ids:
                    continue
            wave, lengths = wave.to(device), lengths.to(device)
            with rec.batch(batch_ids, lengths=lengths):
                model(wave, lengths) if pass_lengths else model(wave)
    skipped += [[u, reason] for u, reason in loader.failures]
    if not rec.ids:
        logger.warning("%s: every utterance was skipped (first: %s); nothing written, retried on rerun",
                       path.name, skipped[0][1] if skipped else "none")
        return
    rec.features().save(path, provenance={"run": run, "rows": rows, "skipped": skipped}, dtype=run["dtype"])
    logger.info("%s: %d utterances (%d skipped) in %.1f s", path.name, len(rec.ids), len(skipped),
                time.perf_counter() - t0)


def _merge(out: Path, shards: Sequence[Sequence[str]], manifest: Manifest, run: Mapping[str, Any]) -> Path:
    """Merge the shards into ``features.npz`` in manifest order and write ``extract.json``."""
    paths = [shard_path(out / "shards", k) for k in range(len(shards))]
    paths = [p for p in paths if p.exists()]
    if not paths:
        raise DataError(f"{out}/: no utterance could be extracted (every file was skipped; see the warnings)")
    parts = [Features.load(p) for p in paths]
    skipped = [s for p in paths for s in (read_provenance(p) or {}).get("skipped", [])]
    merged = Features.concat(parts)
    present = set(merged.ids)
    merged = merged.select_ids([r.utt_id for r in manifest.records if r.utt_id in present])  # manifest order
    path = merged.save(out / FEATURES_FILE, provenance={"run": run, "skipped": skipped}, dtype=run["dtype"])
    atomic_write_text(out / "extract.json", json.dumps({
        "utterances": len(merged), "neurons": int(merged.values.shape[1]), "layers": merged.layer_names,
        "shards": len(shards), "skipped": skipped, "run": run}, indent=2))
    if skipped:
        logger.warning("%d utterance(s) skipped, e.g. %s: %s (all listed in %s)", len(skipped), skipped[0][0],
                       skipped[0][1], out / "extract.json")
    logger.info("wrote %s: %d utterances x %d neurons", path, len(merged), merged.values.shape[1])
    return path
