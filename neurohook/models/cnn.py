"""The paper's temporal CNN (Appendix A.1): MFCC-40, four Conv1d layers, statistics pooling, FC 1500/600.

``size="paper"``: kernels 5-7-1-1, strides 1-2-1-1, 1000-1000-1000-1500 filters, FC 1500 and 600.
``size="small"``: the same shape, narrower (CPU-friendly). The MFCCs are normalised per utterance
(mean and variance over valid frames) before the first convolution.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from neurohook.data.frontends import MFCC
from neurohook.lengths import conv_out_lengths
from neurohook.models.base import ProbeLayers, SpeechModel, UtteranceCMVN, masked_stats

__all__ = ["CNN_SIZES", "ConvBlock", "SpeechCNN"]

logger = logging.getLogger(__name__)

#: Widths per size: conv filters (4), FC units (2).
CNN_SIZES: dict[str, dict[str, Any]] = {
    "paper": {"channels": [1000, 1000, 1000, 1500], "fc": [1500, 600]},
    "small": {"channels": [128, 128, 128, 192], "fc": [192, 96]},
}
#: Default classes: ADI17 dialects and VoxCeleb1-dev speakers (section 4.1.1).
PAPER_CLASSES: dict[str, int] = {"adi-cnn": 17, "sre-cnn": 1211}
KERNELS = (5, 7, 1, 1)
STRIDES = (1, 2, 1, 1)


class ConvBlock(nn.Module):
    """Conv1d (no padding) + ReLU on (B, C, T) -> (B, C', T')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, C_out, (T - k) // s + 1)."""
        return self.relu(self.conv(x))

    def out_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for valid input frames (B,) (0 when shorter than the kernel)."""
        return conv_out_lengths(lengths, self.conv.kernel_size[0], self.conv.stride[0])


class SpeechCNN(SpeechModel):
    """ADI / SRE CNN on waveforms (B, samples): logits (B, num_classes); FC2 embeddings via :meth:`embed`."""

    #: Layers the paper probes (CNN1-CNN4 statistics-pooled, FC1, FC2).
    PROBED = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2")

    def __init__(
        self,
        name: str = "adi-cnn",
        num_classes: int = 2,
        channels: list[int] | tuple[int, ...] = (1000, 1000, 1000, 1500),
        fc: list[int] | tuple[int, ...] = (1500, 600),
        n_mfcc: int = 40,
        size: str = "custom",
    ) -> None:
        super().__init__()
        if len(channels) != 4 or len(fc) != 2:
            raise ValueError(f"{name}: need 4 conv widths and 2 FC widths, got {list(channels)} and {list(fc)}")
        if num_classes < 1:
            raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
        self.name = name
        self.config = {
            "name": name,
            "num_classes": int(num_classes),
            "channels": [int(c) for c in channels],
            "fc": [int(u) for u in fc],
            "n_mfcc": int(n_mfcc),
            "size": size,
        }
        self.frontend = MFCC(n_mfcc=n_mfcc, n_mels=max(40, n_mfcc))
        self.norm = UtteranceCMVN()
        widths = [n_mfcc, *channels]
        self.conv1 = ConvBlock(widths[0], widths[1], KERNELS[0], STRIDES[0])
        self.conv2 = ConvBlock(widths[1], widths[2], KERNELS[1], STRIDES[1])
        self.conv3 = ConvBlock(widths[2], widths[3], KERNELS[2], STRIDES[2])
        self.conv4 = ConvBlock(widths[3], widths[4], KERNELS[3], STRIDES[3])
        self.fc1 = nn.Sequential(nn.Linear(2 * channels[3], fc[0]), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(fc[0], fc[1]), nn.ReLU())
        self.classifier = nn.Linear(fc[1], num_classes)

    @property
    def convs(self) -> list[ConvBlock]:
        """The four conv blocks in order."""
        return [self.conv1, self.conv2, self.conv3, self.conv4]

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """MFCC frames (B,) for valid samples (B,): samples // 160 + 1."""
        return self.frontend.frame_lengths(lengths)

    @property
    def min_samples(self) -> int:
        """Fewest samples for one valid conv4 frame: 11 MFCC frames at paper kernels (1600 samples, 0.1 s)."""
        frames = 1
        while int(self._conv_frames(torch.tensor([frames]))[0]) < 1:
            frames += 1
        return max(self.frontend.min_samples, (frames - 1) * self.frontend.hop)

    def _conv_frames(self, frames: Tensor) -> Tensor:
        for block in self.convs:
            frames = block.out_lengths(frames)
        return frames

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid frames (B,) of ``conv1``..``conv4`` (ones for the utterance-level fc layers)."""
        n = self.frame_lengths(lengths)
        if layer in ("fc1", "fc2", "classifier"):
            return torch.ones_like(n)
        names = ["conv1", "conv2", "conv3", "conv4"]
        if layer not in names:
            raise KeyError(f"{self.name}: no frame-level layer {layer!r}; choose from {names}")
        for block in self.convs[: names.index(layer) + 1]:
            n = block.out_lengths(n)
        return n.clamp(min=1)

    def probe_spec(self) -> ProbeLayers:
        """CNN1-CNN4 statistics-pooled (mean, std) and FC1, FC2 (utterance-level)."""
        overrides = {
            f"conv{i}": {"pooling": "stats", "layout": "BDT", "lengths": self.lengths_fn(f"conv{i}")} for i in range(1, 5)
        }
        return ProbeLayers(list(self.PROBED), "mean", overrides)

    def utterance_embedding(self, waves: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Pooled conv4 statistics, fc1 and fc2 outputs: {"stats": (B, 2C), "fc1": (B, U1), "fc2": (B, U2)}."""
        lens = self.valid_lengths(waves, lengths)  # every utterance long enough for one conv4 frame
        feats, fl = self.frontend(waves, lens)  # (B, N, n_mfcc)
        x = self.norm(feats, fl).transpose(1, 2)  # (B, n_mfcc, N)
        n = fl
        for block in self.convs:
            x = block(x)
            n = block.out_lengths(n)
        stats = masked_stats(x, n)
        h1 = self.fc1(stats)
        h2 = self.fc2(h1)
        return {"stats": stats, "fc1": h1, "fc2": h2}

    def embed(self, waves: Tensor, lengths: Tensor | None = None, layer: str = "fc2") -> Tensor:
        """Utterance embeddings (B, D) from ``fc2`` (default), ``fc1`` or ``stats``."""
        out = self.utterance_embedding(waves, lengths)
        if layer not in out:
            raise KeyError(f"{self.name}: no embedding {layer!r}; choose from {sorted(out)}")
        return out[layer]

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> class logits (B, num_classes)."""
        return self.classifier(self.utterance_embedding(waves, lengths)["fc2"])


def build_cnn(name: str, size: str = "paper", num_classes: int | None = None, **kwargs: Any) -> SpeechCNN:
    """An ``adi-cnn`` / ``sre-cnn`` of ``size`` ("paper" or "small")."""
    if size not in CNN_SIZES:
        raise ValueError(f"{name}: unknown size {size!r}; choose from {sorted(CNN_SIZES)}")
    widths = {**CNN_SIZES[size], **kwargs}
    classes = num_classes if num_classes is not None else PAPER_CLASSES.get(name, 2)
    return SpeechCNN(name=name, num_classes=classes, size=size, **widths)
