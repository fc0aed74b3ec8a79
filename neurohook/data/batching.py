"""Batches of padded audio from a manifest: a Dataset, a length-bucketed batch sampler, a loader.

The loader yields ``(ids, waves, lengths)``: ``ids`` a list of B utterance ids, ``waves`` (B, T)
float32 zero-padded, ``lengths`` (B,) int64 valid samples — what :class:`neurohook.hooks.Recorder`
consumes (``for ids, wave, lengths in loader:``). Unreadable files are skipped and counted (or
raise, ``on_error="raise"``); the count is logged when an epoch ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from neurohook.data.audio import AudioError, ErrorPolicy, OnError, load_record
from neurohook.data.manifest import Manifest

__all__ = ["AudioDataset", "AudioLoader", "BucketBatchSampler", "collate_padded", "make_loader", "pad_batch"]

logger = logging.getLogger(__name__)


class AudioDataset(Dataset):
    """Utterances of a manifest as ``(utt_id, wave (T,) float32 | None, error | None)``."""

    def __init__(self, manifest: Manifest, *, sample_rate: int = 16000, vad: bool = False) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.vad = vad

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[str, Tensor | None, AudioError | None]:
        """Load item ``i`` (mono, at ``sample_rate``); a failure is returned, not raised."""
        rec = self.manifest[i]
        try:
            return rec.utt_id, load_record(rec, sample_rate=self.sample_rate, mono=True, vad=self.vad), None
        except AudioError as e:
            return rec.utt_id, None, e

    def durations(self) -> list[float]:
        """Approximate duration in seconds of each item from headers or start/end (0 if unreadable)."""
        out = []
        for rec in self.manifest:
            if rec.start is not None and rec.end is not None:
                out.append(rec.end - rec.start)
                continue
            try:
                info = sf.info(str(rec.path))
                d = info.frames / info.samplerate
            except Exception:  # reported when the item is loaded
                d = 0.0
            if rec.start is not None:
                d = max(0.0, d - rec.start)
            elif rec.end is not None:
                d = min(d, rec.end)
            out.append(d)
        return out


def pad_batch(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad (T_i,) waves with zeros: (B, max T) and lengths (B,) int64."""
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.int64)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0, dtype=torch.float32)
    for b, w in enumerate(waves):
        out[b, : w.shape[-1]] = w
    return out, lengths


def collate_padded(items: Sequence[tuple[str, Tensor | None, AudioError | None]]) -> tuple[list[str], Tensor, Tensor, list[tuple[str, AudioError]]]:
    """Dataset items -> (ids, waves (B, T), lengths (B,), failures) with failed items left out."""
    good = [(u, w) for u, w, e in items if e is None]
    failed = [(u, e) for u, _, e in items if e is not None]
    waves, lengths = pad_batch([w for _, w in good])
    return [u for u, _ in good], waves, lengths, failed


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: sort by duration, cut into batches, shuffle batch order (seeded).

    A batch holds at most ``batch_size`` items and, with ``max_batch_seconds``, at most that much
    padded audio (B x longest); an item longer than the budget gets a batch of its own.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int = 16,
        *,
        max_batch_seconds: float | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.durations = list(durations)
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._batches = self._make_batches()

    def _make_batches(self) -> list[list[int]]:
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], i))
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            longest = self.durations[i]  # ascending order: the newest item is the longest
            full = len(cur) >= self.batch_size or (
                self.max_batch_seconds is not None and cur and longest * (len(cur) + 1) > self.max_batch_seconds
            )
            if full:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur and not (self.drop_last and len(cur) < self.batch_size):
            batches.append(cur)
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Use a different (seeded) batch order for each epoch when shuffling."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[list[int]]:
        batches = [list(b) for b in self._batches]
        if self.shuffle:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            rng.shuffle(batches)
            for b in batches:
                rng.shuffle(b)
        return iter(batches)


class AudioLoader:
    """Iterates ``(ids, waves (B, T), lengths (B,))``; counts skipped files and logs them per epoch."""

    def __init__(self, loader: DataLoader, on_error: OnError = "skip") -> None:
        self.loader = loader
        self.policy = ErrorPolicy(on_error)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def skipped(self) -> int:
        """Utterances skipped (unreadable) so far."""
        return self.policy.skipped

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(utt_id, reason) of every skipped utterance so far."""
        return self.policy.failures

    def __iter__(self) -> Iterator[tuple[list[str], Tensor, Tensor]]:
        sampler = self.loader.batch_sampler
        try:
            for ids, waves, lengths, failed in self.loader:
                for u, e in failed:
                    self.policy.handle(u, e)
                if ids:
                    yield ids, waves, lengths
        finally:
            self.policy.report()
            if isinstance(sampler, BucketBatchSampler):
                sampler.set_epoch(sampler.epoch + 1)


def make_loader(
    manifest: Manifest,
    *,
    sample_rate: int = 16000,
    batch_size: int = 16,
    max_batch_seconds: float | None = None,
    bucket: bool = True,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    vad: bool = False,
    on_error: OnError = "skip",
    **loader_kwargs: Any,
) -> AudioLoader:
    """A loader of padded batches over a manifest (length-bucketed unless ``bucket=False``)."""
    ds = AudioDataset(manifest, sample_rate=sample_rate, vad=vad)
    if bucket:
        durations = ds.durations()
    else:
        durations = [0.0] * len(ds)  # stable sort keeps manifest order
    sampler = BucketBatchSampler(
        durations, batch_size, max_batch_seconds=max_batch_seconds if bucket else None, shuffle=shuffle, seed=seed
    )
    if num_workers > 0:
        loader_kwargs.setdefault("persistent_workers", False)
    dl = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_padded, num_workers=num_workers, **loader_kwargs)
    return AudioLoader(dl, on_error)
