"""Front-ends on padded batches: waveform, log-mel filterbank, MFCC (paper A.1), Kaldi fbank/MFCC.

Every front-end maps ``(waves (B, T), lengths (B,))`` to ``(features (B, N, F), frame_lengths (B,))``
(``N`` frames of ``F`` features; the waveform front-end gives (B, T, 1)). Frames past an
utterance's valid length are zero.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torchaudio
from torch import Tensor, nn

__all__ = [
    "FRONTENDS",
    "FrontEnd",
    "KaldiFbank",
    "KaldiMFCC",
    "LogMel",
    "MFCC",
    "Waveform",
    "make_frontend",
]


class FrontEnd(Protocol):
    """(waves (B, T), lengths (B,)) -> (features (B, N, F), frame_lengths (B,))."""

    def __call__(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...


def _ms(sample_rate: int, ms: float) -> int:
    return int(round(sample_rate * ms / 1000))


def _mask(feats: Tensor, frame_lengths: Tensor) -> Tensor:
    """Zero frames at or past each item's length: feats (B, N, F)."""
    keep = torch.arange(feats.shape[1], device=feats.device)[None, :] < frame_lengths[:, None].to(feats.device)
    return feats * keep[..., None].to(feats.dtype)


class Waveform(nn.Module):
    """The samples themselves: (B, T) -> (B, T, 1), lengths unchanged."""

    min_samples = 1

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Add a feature axis."""
        return _mask(waves[..., None], lengths), lengths.clone()


class _Spectral(nn.Module):
    """Shared framing for centred-STFT front-ends (``center=True``: N = T // hop + 1)."""

    hop: int
    n_fft: int
    transform: nn.Module

    @property
    def min_samples(self) -> int:
        """Fewest samples a centred STFT takes: its reflect padding (n_fft // 2) must be shorter than the input."""
        return self.n_fft // 2 + 1

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames per utterance (B,) for valid sample lengths (B,)."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def features(self, waves: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, N, F) with padded frames zeroed, and frame lengths (B,).

        Each utterance is transformed on its valid samples only, so its frames equal those of the
        unpadded utterance (the edge frames of a padded batch would otherwise see zeros).
        """
        fl = self.frame_lengths(lengths)
        if bool((lengths == waves.shape[1]).all()):
            return self.features(waves).transpose(1, 2), fl
        outs = [self.features(waves[b : b + 1, : int(lengths[b])])[0].T for b in range(waves.shape[0])]
        feats = waves.new_zeros(waves.shape[0], int(fl.max()), outs[0].shape[1])
        for b, o in enumerate(outs):
            feats[b, : o.shape[0]] = o
        return feats, fl


class LogMel(_Spectral):
    """Log mel filterbank: log(mel power + eps) with torchaudio.transforms.MelSpectrogram."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        eps: float = 1e-6,
        **mel_kwargs: Any,
    ) -> None:
        super().__init__()
        win = _ms(sample_rate, win_ms)
        self.hop = _ms(sample_rate, hop_ms)
        self.n_fft = n_fft or win
        self.eps = eps
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=self.n_fft,
            win_length=win,
            hop_length=self.hop,
            n_mels=n_mels,
            **mel_kwargs,
        )

    def features(self, waves: Tensor) -> Tensor:
        """(B, T) -> (B, n_mels, N)."""
        return torch.log(self.transform(waves) + self.eps)


class MFCC(_Spectral):
    """MFCC with torchaudio.transforms.MFCC; defaults are the paper's (A.1): 40 coefficients, 25/10 ms."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 40,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        log_mels: bool = False,
    ) -> None:
        super().__init__()
        win = _ms(sample_rate, win_ms)
        self.hop = _ms(sample_rate, hop_ms)
        self.n_fft = n_fft or win
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            log_mels=log_mels,
            melkwargs={"n_fft": self.n_fft, "win_length": win, "hop_length": self.hop, "n_mels": n_mels},
        )

    def features(self, waves: Tensor) -> Tensor:
        """(B, T) -> (B, n_mfcc, N)."""
        return self.transform(waves)


class _Kaldi(nn.Module):
    """Kaldi-compatible features per utterance (valid samples only; ``snip_edges`` framing)."""

    def __init__(self, sample_rate: int, win_ms: float, hop_ms: float, **kwargs: Any) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.win = _ms(sample_rate, win_ms)
        self.hop = _ms(sample_rate, hop_ms)
        self.kwargs = {"frame_length": win_ms, "frame_shift": hop_ms, "sample_frequency": float(sample_rate), **kwargs}
        if not self.kwargs.setdefault("snip_edges", True):
            raise ValueError("only snip_edges=True is supported (frame count 1 + (T - win) // hop)")

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one frame: the window length."""
        return self.win

    def one(self, wave: Tensor) -> Tensor:
        """(T,) -> (N, F) for one utterance."""
        raise NotImplementedError

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames per utterance (B,): 1 + (T - win) // hop, 0 when shorter than one window."""
        n = torch.div(lengths - self.win, self.hop, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, N, F) zero-padded, and frame lengths (B,)."""
        fl = self.frame_lengths(lengths)
        outs = [self.one(waves[b, : int(lengths[b])]) if int(fl[b]) > 0 else None for b in range(waves.shape[0])]
        dim = next((o.shape[1] for o in outs if o is not None), None)
        if dim is None:
            dim = self.one(torch.zeros(self.win, dtype=waves.dtype, device=waves.device)).shape[1]
        feats = waves.new_zeros(waves.shape[0], int(fl.max()) if len(fl) else 0, dim)
        for b, o in enumerate(outs):
            if o is not None:
                feats[b, : o.shape[0]] = o
        return feats, fl


class KaldiFbank(_Kaldi):
    """torchaudio.compliance.kaldi.fbank (log mel filterbank, Kaldi defaults: dither off here)."""

    def __init__(
        self, sample_rate: int = 16000, num_mel_bins: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0, **kwargs: Any
    ) -> None:
        super().__init__(sample_rate, win_ms, hop_ms, num_mel_bins=num_mel_bins, dither=kwargs.pop("dither", 0.0), **kwargs)

    def one(self, wave: Tensor) -> Tensor:
        """(T,) -> (N, num_mel_bins)."""
        return torchaudio.compliance.kaldi.fbank(wave[None, :], **self.kwargs)


class KaldiMFCC(_Kaldi):
    """torchaudio.compliance.kaldi.mfcc; defaults as the paper (A.1): 40 cepstra, 40 mel bins, 25/10 ms."""

    def __init__(
        self,
        sample_rate: int = 16000,
        num_ceps: int = 40,
        num_mel_bins: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sample_rate,
            win_ms,
            hop_ms,
            num_ceps=num_ceps,
            num_mel_bins=num_mel_bins,
            dither=kwargs.pop("dither", 0.0),
            **kwargs,
        )

    def one(self, wave: Tensor) -> Tensor:
        """(T,) -> (N, num_ceps)."""
        return torchaudio.compliance.kaldi.mfcc(wave[None, :], **self.kwargs)


#: Front-end names accepted by :func:`make_frontend`.
FRONTENDS: dict[str, type[nn.Module]] = {
    "waveform": Waveform,
    "logmel": LogMel,
    "mfcc": MFCC,
    "kaldi_fbank": KaldiFbank,
    "kaldi_mfcc": KaldiMFCC,
}


def make_frontend(name: str, sample_rate: int = 16000, **kwargs: Any) -> nn.Module:
    """A front-end by name (``waveform``, ``logmel``, ``mfcc``, ``kaldi_fbank``, ``kaldi_mfcc``)."""
    try:
        cls = FRONTENDS[name]
    except KeyError:
        raise ValueError(f"unknown front-end {name!r}; choose from {sorted(FRONTENDS)}") from None
    if cls is Waveform:
        if kwargs:
            raise TypeError(f"the waveform front-end takes no options, got {sorted(kwargs)}")
        return Waveform()
    return cls(sample_rate=sample_rate, **kwargs)
