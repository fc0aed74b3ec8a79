"""Shared pieces of the built-in models: the SpeechModel base, probe specs, masks and pooling."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from neurohook.errors import TooShortError
from neurohook.lengths import frame_mask, full_lengths

__all__ = ["ChannelsLastConv1d", "ProbeLayers", "SpeechModel", "UtteranceCMVN", "masked_stats"]

logger = logging.getLogger(__name__)


@dataclass
class ProbeLayers(Mapping[str, Any]):
    """The layers the paper probes, as Recorder arguments: ``Recorder(model, **probe_layers(model))``.

    ``layers``: module names in feature order; ``pooling``: default pooling; ``overrides``: per-layer
    ``{"pooling", "lengths", "layout", "output"}`` (``lengths`` maps input samples (B,) to frames (B,)).
    """

    layers: list[str]
    pooling: str = "mean"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """Mapping access so the spec unpacks into Recorder keyword arguments."""
        if key not in ("layers", "pooling", "overrides"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(("layers", "pooling", "overrides"))

    def __len__(self) -> int:
        return 3


class ChannelsLastConv1d(nn.Conv1d):
    """An ``nn.Conv1d`` (same parameters, state dict and initialiser) computed as a channels-last 2-D
    convolution of height 1: on CPU, oneDNN runs many short sequences of many channels this way up to
    2x faster (PESTO's 40 -> 40 k39 layers: 64 -> 38 ms a batch; CREPE's 128 -> 16 k64: 78 -> 39 ms).
    The output (N, C_out, L_out) is a channels-last view; its values equal ``nn.Conv1d``'s up to float
    rounding (the sums run in another order).

    Example::

        conv = ChannelsLastConv1d(40, 40, 39, padding=19)
        y = conv(torch.randn(304, 40, 219))        # (304, 40, 219)
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        y = torch.nn.functional.conv2d(x4, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]),
                                       (0, self.padding[0]), (1, self.dilation[0]), self.groups)
        return y.squeeze(2)


def masked_stats(x: Tensor, lengths: Tensor, eps: float = 1e-5) -> Tensor:
    """Statistics pooling of x (B, C, T) over valid frames: [mean (C), biased std (C)] -> (B, 2C)."""
    lengths = lengths.clamp(min=1, max=x.shape[-1])
    m = frame_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, :]
    n = lengths.to(x.dtype)[:, None]
    mean = (x * m).sum(-1) / n
    var = (((x - mean[..., None]) ** 2) * m).sum(-1) / n
    return torch.cat([mean, torch.sqrt(var.clamp(min=0) + eps)], dim=1)


class UtteranceCMVN(nn.Module):
    """Per-utterance mean (and variance) normalisation over valid frames of (B, N, F) features."""

    def __init__(self, variance: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.variance = variance
        self.eps = eps

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> Tensor:
        """(B, N, F) -> (B, N, F) normalised; padded frames stay zero."""
        lengths = frame_lengths.clamp(min=1)
        m = frame_mask(lengths, feats.shape[1]).to(feats.dtype)[..., None]
        n = lengths.to(feats.dtype)[:, None, None]
        mean = (feats * m).sum(1, keepdim=True) / n
        out = feats - mean
        if self.variance:
            std = torch.sqrt(((out**2) * m).sum(1, keepdim=True) / n + self.eps)
            out = out / std
        return out * m


class SpeechModel(nn.Module):
    """A model on 16 kHz waveforms (B, samples) with optional lengths (B,), front-end included.

    Subclasses set ``name`` and ``config`` (plain JSON-like values, enough to rebuild the model) and
    implement :meth:`frame_lengths`, :meth:`layer_lengths` and :meth:`probe_spec`.
    """

    name: str = "model"
    sample_rate: int = 16000
    #: Whether an utterance's outputs are the same alone and zero-padded in a batch (see extract).
    padding_invariant: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Front-end frames (B,) for valid samples (B,)."""
        raise NotImplementedError

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid frames (B,) of a probed layer's output for valid input samples (B,)."""
        raise NotImplementedError

    def probe_spec(self) -> ProbeLayers:
        """The layers the paper probes, with pooling and exact per-layer lengths."""
        raise NotImplementedError

    @property
    def min_samples(self) -> int:
        """Fewest valid samples an utterance needs: the front-end's minimum (1 without one).

        Models whose layers shorten time (strided or unpadded convolutions) raise it so that every
        probed layer has at least one valid frame.
        """
        return int(getattr(getattr(self, "frontend", None), "min_samples", 1))

    def valid_lengths(self, waves: Tensor, lengths: Tensor | None) -> Tensor:
        """:func:`full_lengths`, and TooShortError when an utterance is shorter than :attr:`min_samples`.

        Checked per utterance, so a short clip is rejected alone and in any batch alike.
        """
        lens = full_lengths(waves, lengths)
        need = self.min_samples
        short = torch.nonzero(lens < need).flatten().tolist()
        if short:
            raise TooShortError(
                f"{self.name}: utterance(s) at batch position(s) {short[:5]} have {lens[short[:5]].tolist()} samples; "
                f"{self.name} needs at least {need} ({need / self.sample_rate:.4f} s at {self.sample_rate} Hz)")
        return lens

    def lengths_fn(self, layer: str) -> Callable[[Tensor], Tensor]:
        """A Recorder ``lengths`` override for one layer (input samples (B,) -> frames (B,))."""

        def fn(lengths: Tensor) -> Tensor:
            return self.layer_lengths(layer, torch.as_tensor(lengths, dtype=torch.int64))

        fn.__name__ = f"{self.name}:{layer}"
        return fn

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
