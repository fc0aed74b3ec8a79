"""Transmission channels applied with torchaudio to 16 kHz mono audio (the CC analogue).

Each channel has a kind (the label) and per-utterance parameters (drawn by
:func:`neurohook.corpus.variation.draw_conditions`): its pass band, its codec's quantisation and, on
the telephone, lost packets. The defaults are each channel's nominal values.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["CHANNELS", "apply_channel", "broadcast", "hq", "telephone"]

#: Channel labels of the built-in corpus.
CHANNELS: tuple[str, ...] = ("hq", "telephone", "broadcast")

_RATE = 16000
BROADCAST_SNR_DB = 15.0
PACKET = 0.02  # seconds per packet (telephone losses)


def _peak(x: Tensor, peak: float) -> Tensor:
    m = x.abs().max()
    return x * (peak / m) if m > 0 else x


def _band(x: Tensor, rate: int, band: tuple[float, float]) -> Tensor:
    """Two biquads each side (24 dB/octave skirts) around the pass band."""
    for _ in range(2):
        x = AF.highpass_biquad(x, rate, band[0])
        x = AF.lowpass_biquad(x, rate, band[1])
    return x


def _quantise(x: Tensor, bits: int) -> Tensor:
    """Uniform quantisation of [-1, 1] audio to ``bits`` bits (16: unchanged)."""
    if bits >= 16:
        return x
    step = 2.0 / (2**bits)
    return torch.round(x.clamp(-1, 1) / step) * step


def hq(x: Tensor, band: tuple[float, float] = (20.0, 7900.0)) -> Tensor:
    """Studio microphone: a gentle pass band only: (T,) -> (T,)."""
    return _band(x, _RATE, band)


def telephone(x: Tensor, band: tuple[float, float] = (300.0, 3400.0), bits: int = 8, loss: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """Narrow-band telephone: 8 kHz, band-pass, ``bits``-bit mu-law, a share ``loss`` of 20 ms packets
    lost (zeroed), back to 16 kHz: (T,) -> (T,)."""
    y = _band(AF.resample(x, _RATE, 8000), 8000, band)
    y = _peak(y, 0.95)
    y = AF.mu_law_decoding(AF.mu_law_encoding(y, 2**bits), 2**bits)
    if loss > 0:
        n = int(PACKET * 8000)
        lost = torch.rand(-(-len(y) // n), generator=generator) < loss
        y = y * (~lost).repeat_interleave(n)[: len(y)].to(y.dtype)
    return AF.resample(y, 8000, _RATE)[: x.shape[-1]]


def broadcast(x: Tensor, generator: torch.Generator, snr_db: float = BROADCAST_SNR_DB,
              band: tuple[float, float] = (150.0, 4500.0), bits: int = 12) -> Tensor:
    """Degraded broadcast/satellite link: band-pass, compression, white noise at ``snr_db``, a
    ``bits``-bit codec: (T,) -> (T,)."""
    y = AF.contrast(_peak(_band(x, _RATE, band), 0.9), enhancement_amount=75.0)  # SoX-style compression
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    y = AF.add_noise(y[None], noise[None], torch.tensor([snr_db], dtype=y.dtype))[0]
    return _quantise(_peak(y, 0.9), bits)


def apply_channel(x: Tensor, channel: str, generator: torch.Generator, *, band: tuple[float, float] | None = None,
                  bits: int | None = None, loss: float = 0.0) -> Tensor:
    """Apply a channel by name to 16 kHz mono float audio (T,), with its nominal or the given parameters."""
    if channel == "hq":
        return hq(x, band or (20.0, 7900.0))
    if channel == "telephone":
        return telephone(x, band or (300.0, 3400.0), bits or 8, loss, generator)
    if channel == "broadcast":
        return broadcast(x, generator, band=band or (150.0, 4500.0), bits=bits or 12)
    raise ValueError(f"unknown channel {channel!r}; choose from {CHANNELS}")
