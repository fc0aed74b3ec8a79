"""Mockingjay-style transformer encoders (Appendix A.2): STbase (3 layers) and STlarge (12 layers).

Log-mel input (80 bands, 25/10 ms, normalised per utterance), ``stack`` consecutive frames stacked
into one step, a projection to ``hidden``, sinusoidal positions, bidirectional
``nn.TransformerEncoder`` layers with key padding masks from the lengths, and a masked-frame
reconstruction head: the mel frames for ``st-base``, the log linear spectrogram for ``st-large``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from neurohook.data.frontends import LogMel
from neurohook.lengths import frame_mask
from neurohook.models.base import ProbeLayers, SpeechModel, UtteranceCMVN

__all__ = ["ST_SIZES", "MockingjayTransformer", "SinusoidalPositions", "build_transformer"]

#: Widths per size (layers come from the model name).
ST_SIZES: dict[str, dict[str, Any]] = {
    "paper": {"hidden": 768, "heads": 12, "ffn": 3072},
    "small": {"hidden": 96, "heads": 4, "ffn": 192},
}
#: Layers and reconstruction target per name (section 4.1.2).
ST_NAMES: dict[str, dict[str, Any]] = {
    "st-base": {"num_layers": 3, "target": "mel"},
    "st-large": {"num_layers": 12, "target": "linear"},
}


class SinusoidalPositions(nn.Module):
    """Adds sinusoidal position encodings to (B, S, H)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, x: Tensor) -> Tensor:
        """(B, S, H) -> (B, S, H) + PE."""
        s, h = x.shape[1], x.shape[2]
        pos = torch.arange(s, device=x.device, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, h, 2, device=x.device, dtype=torch.float32) * (-math.log(10000.0) / h))
        pe = torch.zeros(s, h, device=x.device, dtype=torch.float32)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : h // 2]
        return x + pe.to(x.dtype)[None]


class MockingjayTransformer(SpeechModel):
    """Waveforms (B, samples) -> hidden states (B, steps, hidden) of the last encoder layer."""

    def __init__(
        self,
        name: str = "st-base",
        num_layers: int = 3,
        hidden: int = 768,
        heads: int = 12,
        ffn: int = 3072,
        n_mels: int = 80,
        stack: int = 3,
        target: str = "mel",
        dropout: float = 0.1,
        mask_prob: float = 0.15,
        size: str = "custom",
    ) -> None:
        super().__init__()
        if target not in ("mel", "linear"):
            raise ValueError(f"{name}: target must be 'mel' or 'linear', got {target!r}")
        if hidden % heads:
            raise ValueError(f"{name}: hidden {hidden} is not divisible by heads {heads}")
        self.name = name
        self.config = {
            "name": name,
            "num_layers": int(num_layers),
            "hidden": int(hidden),
            "heads": int(heads),
            "ffn": int(ffn),
            "n_mels": int(n_mels),
            "stack": int(stack),
            "target": target,
            "dropout": float(dropout),
            "mask_prob": float(mask_prob),
            "size": size,
        }
        self.stack = stack
        self.mask_prob = mask_prob
        self.frontend = LogMel(n_mels=n_mels)
        self.norm = UtteranceCMVN()
        self.projection = nn.Linear(n_mels * stack, hidden)
        self.positions = SinusoidalPositions(hidden)
        self.input_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.target_dim = n_mels if target == "mel" else 201
        self.linear_spec = torchaudio.transforms.Spectrogram(n_fft=400, hop_length=160, power=2.0) if target == "linear" else None
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, self.target_dim * stack)
        )

    # ------------------------------------------------------------------------------ lengths
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Mel frames (B,) for valid samples (B,): samples // 160 + 1."""
        return self.frontend.frame_lengths(lengths)

    def step_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder steps (B,) for valid samples (B,): ceil(frames / stack)."""
        return -torch.div(-self.frame_lengths(lengths), self.stack, rounding_mode="floor")

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid steps (B,) of any encoder layer (every layer keeps the step count)."""
        if not (layer == "encoder" or layer.startswith("encoder.layers.") or layer in ("projection", "positions")):
            raise KeyError(f"{self.name}: no step-level layer {layer!r}; use encoder.layers.<i>")
        return self.step_lengths(lengths)

    def probe_spec(self) -> ProbeLayers:
        """Every encoder layer L1..LN, mean-pooled over valid steps."""
        names = [f"encoder.layers.{i}" for i in range(len(self.encoder.layers))]
        return ProbeLayers(names, "mean", {n: {"lengths": self.lengths_fn(n)} for n in names})

    # ------------------------------------------------------------------------------ forward
    def features(self, waves: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised mel frames (B, N, n_mels), frame lengths (B,), valid samples (B,)."""
        lens = self.valid_lengths(waves, lengths)
        feats, fl = self.frontend(waves, lens)
        return self.norm(feats, fl), fl, lens

    def stack_frames(self, feats: Tensor) -> Tensor:
        """(B, N, F) -> (B, ceil(N / stack), stack * F), zero-padding the last step."""
        b, n, f = feats.shape
        steps = -(-n // self.stack)
        pad = steps * self.stack - n
        if pad:
            feats = torch.cat([feats, feats.new_zeros(b, pad, f)], dim=1)
        return feats.reshape(b, steps, self.stack * f)

    def encode(self, stacked: Tensor, step_lengths: Tensor) -> Tensor:
        """Stacked frames (B, S, stack*F) -> hidden states (B, S, H), padded steps masked as keys."""
        x = self.input_dropout(self.positions(self.projection(stacked)))
        pad = ~frame_mask(step_lengths, x.shape[1])
        return self.encoder(x, src_key_padding_mask=pad)

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> last-layer hidden states (B, steps, hidden)."""
        feats, fl, lens = self.features(waves, lengths)
        steps = -torch.div(-fl, self.stack, rounding_mode="floor")
        return self.encode(self.stack_frames(feats), steps)

    # ------------------------------------------------------------------------------ training
    def targets(self, waves: Tensor, lens: Tensor, mel: Tensor, fl: Tensor) -> Tensor:
        """Reconstruction targets (B, N, target_dim): normalised mel or log linear spectrogram."""
        if self.linear_spec is None:
            return mel
        spec = torch.log(self.linear_spec(waves) + 1e-6).transpose(1, 2)[:, : mel.shape[1]]  # (B, N, 201)
        return self.norm(spec, fl)

    def pretrain_loss(self, waves: Tensor, lengths: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Masked-frame reconstruction loss (L1 on masked steps): 15% of steps, 80% zeroed / 10% random / 10% kept."""
        feats, fl, lens = self.features(waves, lengths)
        target = self.stack_frames(self.targets(waves, lens, feats, fl))
        stacked = self.stack_frames(feats)
        steps = -torch.div(-fl, self.stack, rounding_mode="floor")
        valid = frame_mask(steps, stacked.shape[1])
        r = torch.rand(valid.shape, generator=generator, device=stacked.device)
        chosen = (r < self.mask_prob) & valid
        if not bool(chosen.any()):  # at least one step per batch
            chosen = valid & (r == r.masked_fill(~valid, 2.0).min())
        action = torch.rand(valid.shape, generator=generator, device=stacked.device)
        zero = chosen & (action < 0.8)
        rand = chosen & (action >= 0.8) & (action < 0.9)
        x = stacked.masked_fill(zero[..., None], 0.0)
        if bool(rand.any()):
            src = torch.randint(0, stacked.shape[1], valid.shape, generator=generator, device=stacked.device)
            swapped = torch.gather(stacked, 1, src[..., None].expand_as(stacked))
            x = torch.where(rand[..., None], swapped, x)
        pred = self.head(self.encode(x, steps))
        err = (pred - target).abs().mean(-1)
        return (err * chosen).sum() / chosen.sum()


def build_transformer(name: str, size: str = "paper", **kwargs: Any) -> MockingjayTransformer:
    """An ``st-base`` / ``st-large`` of ``size`` ("paper": hidden 768; "small": hidden 96)."""
    if name not in ST_NAMES:
        raise ValueError(f"unknown transformer {name!r}; choose from {sorted(ST_NAMES)}")
    if size not in ST_SIZES:
        raise ValueError(f"{name}: unknown size {size!r}; choose from {sorted(ST_SIZES)}")
    cfg = {**ST_NAMES[name], **ST_SIZES[size], **kwargs}
    return MockingjayTransformer(name=name, size=size, **cfg)
