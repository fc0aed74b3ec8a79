"""Transmission channels applied with torchaudio to 16 kHz mono audio (the CC analogue)."""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["CHANNELS", "apply_channel", "broadcast", "hq", "telephone"]

#: Channel labels of the built-in corpus.
CHANNELS: tuple[str, ...] = ("hq", "telephone", "broadcast")

_RATE = 16000
BROADCAST_SNR_DB = 15.0


def _peak(x: Tensor, peak: float) -> Tensor:
    m = x.abs().max()
    return x * (peak / m) if m > 0 else x


def hq(x: Tensor) -> Tensor:
    """Clean 16 kHz (unchanged): (T,) -> (T,)."""
    return x


def telephone(x: Tensor) -> Tensor:
    """Narrow-band telephone: 8 kHz, 300-3400 Hz band-pass, 8-bit mu-law, back to 16 kHz: (T,) -> (T,)."""
    y = AF.resample(x, _RATE, 8000)
    for _ in range(2):  # two biquads each side: 24 dB/octave skirts
        y = AF.highpass_biquad(y, 8000, 300.0)
        y = AF.lowpass_biquad(y, 8000, 3400.0)
    y = _peak(y, 0.95)
    y = AF.mu_law_decoding(AF.mu_law_encoding(y, 256), 256)
    return AF.resample(y, 8000, _RATE)[: x.shape[-1]]


def broadcast(x: Tensor, generator: torch.Generator, snr_db: float = BROADCAST_SNR_DB) -> Tensor:
    """Degraded broadcast/satellite link: 150-4500 Hz band, compression, white noise at ``snr_db``: (T,) -> (T,)."""
    y = x
    for _ in range(2):
        y = AF.highpass_biquad(y, _RATE, 150.0)
        y = AF.lowpass_biquad(y, _RATE, 4500.0)
    y = AF.contrast(_peak(y, 0.9), enhancement_amount=75.0)  # SoX-style loudness compression
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    return AF.add_noise(y[None], noise[None], torch.tensor([snr_db], dtype=y.dtype))[0]


def apply_channel(x: Tensor, channel: str, generator: torch.Generator) -> Tensor:
    """Apply a channel by name to 16 kHz mono float audio (T,)."""
    if channel == "hq":
        return hq(x)
    if channel == "telephone":
        return telephone(x)
    if channel == "broadcast":
        return broadcast(x, generator)
    raise ValueError(f"unknown channel {channel!r}; choose from {CHANNELS}")
