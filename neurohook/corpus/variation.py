"""Real-world variation of the built-in corpus: rooms, noise, loudness and channels that differ per utterance.

Every factor is drawn per utterance from its own seed (:func:`draw_conditions`) and written to the
manifest, so a study can ask what a representation encodes beyond the labels. The signal path of one
utterance, all at 16 kHz (:func:`render`):

1. the speaker's vocal-tract scaling (``Speaker.vtl``: resampling scales formants and pitch together,
   the classic VTLP approximation);
2. a room: with probability 1/2 an exponentially decaying noise impulse response of RT60 0.2-0.9 s
   (direct path kept), else dry;
3. additive noise with probability 0.7 at an SNR of 0-30 dB: white, pink, brown, or babble made
   from 3 other synthetic talkers of other languages (:data:`NOISES`);
4. the channel (:mod:`neurohook.corpus.channels`) with per-utterance band edges, quantisation and,
   on the telephone, packet loss;
5. the level: RMS at -38 to -18 dBFS (peaks clipped to full scale, as a recorder would).

Example::

    cond = draw_conditions("en-03-007", "telephone", seed=0)
    y = render(x, cond, vtl=1.05, babble=[b1, b2, b3], generator=g)
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torchaudio.functional as AF
from torch import Tensor

from neurohook.corpus.channels import apply_channel

__all__ = ["Conditions", "NOISES", "VTL_FACTORS", "draw_conditions", "render", "room_response", "vtl_warp"]

RATE = 16000
#: Additive noise types ("none": clean).
NOISES: tuple[str, ...] = ("none", "white", "pink", "brown", "babble")
#: Vocal-tract (formant and pitch) scalings a speaker can have: 40/m for m in 36..44 (0.91-1.11).
VTL_FACTORS: tuple[float, ...] = tuple(40 / m for m in range(36, 45))
BABBLE_TALKERS = 3


@dataclass(frozen=True)
class Conditions:
    """The recording conditions of one utterance (every field goes to the manifest)."""

    rate_scale: float  # speaking rate relative to the speaker's
    rt60: float  # seconds; 0 = dry
    noise: str  # one of NOISES
    snr_db: float  # of the additive noise (nan when none)
    level_db: float  # RMS level, dBFS
    band_lo: float  # channel pass band, Hz
    band_hi: float
    bits: int  # quantisation of the channel's codec (16: none)
    loss: float  # share of 20 ms packets lost (telephone)

    def row(self) -> dict[str, str]:
        """The manifest columns of these conditions."""
        return {k: ("" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" if isinstance(v, float) else str(v))
                for k, v in asdict(self).items()}


def draw_conditions(utt_id: str, channel: str, seed: int) -> Conditions:
    """Conditions of one utterance, from (seed, utt_id) only; the channel sets the ranges of its band,
    codec and losses."""
    rng = random.Random(f"conditions/{seed}/{utt_id}")
    noise = rng.choice(NOISES[1:]) if rng.random() < 0.7 else "none"
    if channel == "telephone":
        band = (rng.uniform(200, 400), rng.uniform(3000, 3600))
        bits, loss = rng.choice((6, 7, 8)), rng.uniform(0.0, 0.05)
    elif channel == "broadcast":
        band, bits, loss = (rng.uniform(80, 200), rng.uniform(4000, 7000)), rng.choice((10, 12)), 0.0
    else:
        band, bits, loss = (rng.uniform(20, 80), rng.uniform(7000, 7900)), 16, 0.0
    return Conditions(rate_scale=rng.uniform(0.85, 1.15), rt60=rng.uniform(0.2, 0.9) if rng.random() < 0.5 else 0.0,
                      noise=noise, snr_db=rng.uniform(0.0, 30.0) if noise != "none" else float("nan"),
                      level_db=rng.uniform(-38.0, -18.0), band_lo=band[0], band_hi=band[1], bits=bits, loss=loss)


def vtl_warp(x: Tensor, factor: float) -> Tensor:
    """Scale every frequency (formants and pitch) by ``factor`` (one of :data:`VTL_FACTORS`): (T,) -> (T',)."""
    m = round(40 / factor)
    return x if m == 40 else AF.resample(x, 40, m)


def room_response(rt60: float, generator: torch.Generator) -> Tensor:
    """A synthetic room impulse response (L,): a direct path then noise decaying 60 dB in ``rt60`` s."""
    n = max(1, int(rt60 * RATE))
    t = torch.arange(n, dtype=torch.float32) / RATE
    tail = torch.randn(n, generator=generator) * torch.exp(-6.9078 * t / rt60) * 0.3
    tail[: int(0.002 * RATE)] = 0.0  # the first reflections arrive after the direct sound
    tail[0] = 1.0
    return tail / tail.norm()


def _coloured(n: int, exponent: float, generator: torch.Generator) -> Tensor:
    """Noise (n,) with power spectrum ~ 1 / f^exponent (0 white, 1 pink, 2 brown)."""
    spec = torch.fft.rfft(torch.randn(n, generator=generator))
    f = torch.arange(spec.shape[0], dtype=torch.float32).clamp(min=1.0)
    return torch.fft.irfft(spec / f ** (exponent / 2), n)


def _babble(n: int, talkers: Sequence[Tensor], generator: torch.Generator) -> Tensor:
    """Babble (n,): other talkers' speech, each looped to length n from a random offset, summed."""
    out = torch.zeros(n)
    for b in talkers:
        b = b / (b.pow(2).mean().sqrt() + 1e-8)
        reps = math.ceil((n + len(b)) / len(b))
        start = int(torch.randint(0, len(b), (1,), generator=generator))
        out += b.repeat(reps)[start : start + n]
    return out


def _add_noise(x: Tensor, cond: Conditions, babble: Sequence[Tensor], generator: torch.Generator) -> Tensor:
    if cond.noise == "none":
        return x
    if cond.noise == "babble":
        noise = _babble(len(x), babble, generator)
    else:
        noise = _coloured(len(x), {"white": 0.0, "pink": 1.0, "brown": 2.0}[cond.noise], generator)
    return AF.add_noise(x[None], noise[None], torch.tensor([cond.snr_db]))[0]


def render(x: Tensor, cond: Conditions, channel: str, *, vtl: float, babble: Sequence[Tensor],
           generator: torch.Generator) -> Tensor:
    """Clean 16 kHz speech (T,) -> the recorded utterance (T',) under ``cond`` (module docstring)."""
    y = vtl_warp(x, vtl)
    if cond.rt60 > 0:
        y = AF.fftconvolve(y, room_response(cond.rt60, generator))[: len(y)]
    y = _add_noise(y, cond, babble, generator)
    y = apply_channel(y, channel, generator, band=(cond.band_lo, cond.band_hi), bits=cond.bits, loss=cond.loss)
    rms = y.pow(2).mean().sqrt()
    if rms > 0:
        y = y * (10 ** (cond.level_db / 20) / rms)
    return y.clamp(-1.0, 1.0)
