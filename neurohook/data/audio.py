"""Audio loading: soundfile I/O, segments, mono mixdown, torchaudio resampling, energy VAD trimming.

Corrupt, truncated or unreadable files raise :class:`AudioError` naming the file; callers that
want to skip them use :class:`ErrorPolicy` (count, log once at the end) instead of going on with a
silently wrong waveform.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from neurohook.errors import FileInputError
from neurohook.data.manifest import Record

__all__ = [
    "AudioError",
    "ErrorPolicy",
    "energy_vad",
    "load_audio",
    "load_record",
    "resample",
    "to_mono",
]

logger = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
OnError = Literal["skip", "raise"]

# libsndfile's log says "data : <declared> (should be <present>)" for a truncated WAV/AIFF chunk.
_SHOULD_BE = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 8}


class AudioError(FileInputError, RuntimeError):
    """An audio file could not be read correctly (missing, corrupt, truncated, bad segment)."""


def _check_not_truncated(path: PathLike, info: sf._SoundFileInfo) -> None:
    """Raise if libsndfile reports a data chunk shorter than its header declares."""
    for m in _SHOULD_BE.finditer(info.extra_info or ""):
        declared, present = int(m.group(2)), int(m.group(3))
        if declared not in _STREAMING_SIZES and present < declared:
            raise AudioError(path, f"truncated file: {m.group(1)} chunk declares {declared} bytes, {present} present")


def to_mono(wave: Tensor) -> Tensor:
    """Average channels: (C, T) -> (T,); a (T,) input is returned unchanged."""
    if wave.dim() == 1:
        return wave
    return wave[0] if wave.shape[0] == 1 else wave.mean(dim=0)


def resample(wave: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample (..., T) with torchaudio's windowed-sinc resampler; no-op when the rates match."""
    if orig_rate == new_rate:
        return wave
    return AF.resample(wave, orig_rate, new_rate)


def energy_vad(
    wave: Tensor,
    sample_rate: int,
    *,
    threshold_db: float = -40.0,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
    margin_ms: float = 50.0,
) -> tuple[int, int]:
    """Sample range [start, end) of a mono (T,) wave between its first and last voiced frames.

    A frame is voiced when its energy is within ``threshold_db`` of the loudest frame; ``margin_ms``
    of context is kept on both sides. A wave without any voiced frame is kept whole.
    """
    n = wave.shape[-1]
    win = max(1, round(sample_rate * frame_ms / 1000))
    hop = max(1, round(sample_rate * hop_ms / 1000))
    if n < win:
        return 0, n
    frames = wave.unfold(-1, win, hop)  # (F, win)
    energy_db = 10 * torch.log10(frames.double().pow(2).mean(-1) + 1e-20)
    top = float(energy_db.max())
    if top <= -190:  # digital silence
        return 0, n
    voiced = torch.nonzero(energy_db >= top + threshold_db).flatten()
    margin = round(sample_rate * margin_ms / 1000)
    start = max(0, int(voiced[0]) * hop - margin)
    end = min(n, int(voiced[-1]) * hop + win + margin)
    return start, end


def load_audio(
    path: PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int | None = None,
    mono: bool = True,
    vad: bool = False,
) -> tuple[Tensor, int]:
    """Load a file (or its [start, end) segment in seconds) as float32 in [-1, 1].

    Returns ``(wave, rate)``: wave (T,) when ``mono`` else (C, T); ``rate`` is ``sample_rate`` when
    given (the audio is resampled), else the file's rate. Raises :class:`AudioError` on a missing,
    corrupt or truncated file, a segment outside the file, or non-finite samples.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(p, "no such file")
    try:
        info = sf.info(str(p))
        _check_not_truncated(p, info)
        rate = int(info.samplerate)
        with sf.SoundFile(str(p)) as f:
            total = f.frames
            first = 0 if start is None else int(round(start * rate))
            last = total if end is None else int(round(end * rate))
            if first >= total or last > total + 1 or last <= first:
                raise AudioError(
                    p,
                    f"segment [{start}, {end}] s is outside the file ({total / rate:.3f} s at {rate} Hz)",
                )
            last = min(last, total)
            if first:
                f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)  # (T, C)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AudioError(p, f"unreadable audio ({type(e).__name__}: {e})") from e
    if data.shape[0] != last - first:
        raise AudioError(p, f"read {data.shape[0]} frames, expected {last - first} (truncated or corrupt)")
    if not np.isfinite(data).all():
        raise AudioError(p, "non-finite samples (NaN or inf)")
    if mono:  # mix down in NumPy: cheaper than torch for small reads
        wave = torch.from_numpy(data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32))
    else:
        wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)
    if sample_rate is not None and sample_rate != rate:
        wave = resample(wave, rate, sample_rate)
        rate = sample_rate
    if vad:
        s, e = energy_vad(to_mono(wave), rate)
        wave = wave[..., s:e]
    return wave.contiguous(), rate


def load_record(record: Record, *, sample_rate: int | None = None, mono: bool = True, vad: bool = False) -> Tensor:
    """Load a manifest record's audio (its segment when start/end are set): (T,) or (C, T)."""
    wave, _ = load_audio(
        record.path, start=record.start, end=record.end, sample_rate=sample_rate, mono=mono, vad=vad
    )
    return wave


@dataclass
class ErrorPolicy:
    """What to do with unreadable files: ``"skip"`` (count them, log a summary) or ``"raise"``."""

    on_error: OnError = "skip"
    failures: list[tuple[str, str]] = field(default_factory=list)  # (utt_id, reason)

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")

    def handle(self, utt_id: str, error: AudioError) -> None:
        """Record a failure, or re-raise it under the ``"raise"`` policy."""
        if self.on_error == "raise":
            raise error
        self.failures.append((utt_id, str(error)))
        logger.debug("skipping %s: %s", utt_id, error)

    @property
    def skipped(self) -> int:
        """Number of utterances skipped so far."""
        return len(self.failures)

    def report(self) -> None:
        """Log one warning with the count and the first failures (nothing when none failed)."""
        if not self.failures:
            return
        first = "; ".join(f"{u}: {r}" for u, r in self.failures[:5])
        logger.warning("skipped %d unreadable utterance(s); first: %s", len(self.failures), first)
