"""Adapters for torchaudio's wav2vec 2.0 / HuBERT / WavLM models: layer discovery and exact frame lengths.

``build("wav2vec2_base")`` (also ``wav2vec2_large``, ``hubert_base``, ``hubert_large``,
``wavlm_base``) gives a :class:`TorchaudioSSL` with random weights, built offline;
``pretrained=True`` loads the matching ``torchaudio.pipelines`` bundle instead (downloads the
weights once, into torch's hub cache). :func:`discover` finds the CNN feature-extractor blocks and
transformer layers of any module that contains a ``torchaudio.models.Wav2Vec2Model``, with each
layer's frame-length arithmetic (``(n - kernel) // stride + 1`` per conv block, as torchaudio).

torchaudio's ``wavlm_base`` raises an AssertionError when given ``lengths`` (pytorch/audio#3700):
:class:`TorchaudioSSL` then runs the model without them (padded frames are attended to), and the
Recorder still pools only each utterance's valid frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from neurohook.lengths import conv_out_lengths
from neurohook.models.base import ProbeLayers, SpeechModel

__all__ = ["BUNDLES", "TORCHAUDIO_MODELS", "DiscoveredEncoder", "DiscoveredLayers", "TorchaudioSSL", "conv_lengths", "discover", "build_torchaudio"]

logger = logging.getLogger(__name__)

#: Builders of the supported torchaudio architectures (random weights).
TORCHAUDIO_MODELS: dict[str, Callable[[], nn.Module]] = {
    "wav2vec2_base": torchaudio.models.wav2vec2_base,
    "wav2vec2_large": torchaudio.models.wav2vec2_large,
    "hubert_base": torchaudio.models.hubert_base,
    "hubert_large": torchaudio.models.hubert_large,
    "wavlm_base": torchaudio.models.wavlm_base,
}
#: torchaudio.pipelines bundles with pretrained weights for each name.
BUNDLES: dict[str, str] = {
    "wav2vec2_base": "WAV2VEC2_BASE",
    "wav2vec2_large": "WAV2VEC2_LARGE",
    "hubert_base": "HUBERT_BASE",
    "hubert_large": "HUBERT_LARGE",
    "wavlm_base": "WAVLM_BASE",
}
#: Models whose torchaudio implementation fails when given lengths.
NO_LENGTHS = frozenset({"wavlm_base"})


def conv_lengths(lengths: Tensor, kernels: list[int], strides: list[int]) -> Tensor:
    """Frames (B,) after conv blocks with these kernels/strides: ``max(0, (n - k) // s + 1)`` each."""
    n = torch.as_tensor(lengths, dtype=torch.int64)
    for k, s in zip(kernels, strides):
        n = conv_out_lengths(n, k, s)
    return n


@dataclass
class DiscoveredLayers:
    """Layers of a wav2vec2-style model inside ``root``: conv blocks, transformer layers, kernels/strides."""

    prefix: str  # name of the Wav2Vec2Model inside the root module ("" for the root itself)
    conv: list[str]
    transformer: list[str]
    kernels: list[int]
    strides: list[int]

    def lengths_fn(self, layer: str) -> Callable[[Tensor], Tensor]:
        """Input samples (B,) -> valid frames (B,) of ``layer`` (a conv block or transformer layer)."""
        if layer in self.conv:
            depth = self.conv.index(layer) + 1
        elif layer in self.transformer:
            depth = len(self.conv)
        else:
            raise KeyError(f"no discovered layer {layer!r}")
        kernels, strides = self.kernels[:depth], self.strides[:depth]

        def fn(lengths: Tensor) -> Tensor:
            return conv_lengths(lengths, kernels, strides)

        return fn

    def probe_spec(self, include_cnn: bool = True, pooling: str = "mean") -> ProbeLayers:
        """Conv blocks (optional) then transformer layers, each with exact lengths."""
        names = (self.conv if include_cnn else []) + self.transformer
        return ProbeLayers(names, pooling, {n: {"lengths": self.lengths_fn(n)} for n in names})


def _is_hf_speech_encoder(mod: nn.Module) -> bool:
    """A Hugging Face wav2vec2-style model (wav2vec2, HuBERT, WavLM, Data2Vec-audio): conv feature
    encoder blocks ``feature_extractor.conv_layers`` and transformer ``encoder.layers``."""
    return (type(mod).__module__.startswith("transformers.models.")
            and hasattr(getattr(mod, "feature_extractor", None), "conv_layers")
            and hasattr(getattr(mod, "encoder", None), "layers"))


def _find_wav2vec2(root: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the first torchaudio Wav2Vec2Model or Hugging Face wav2vec2-style model inside
    root (root included)."""
    for name, mod in root.named_modules():
        if isinstance(mod, torchaudio.models.Wav2Vec2Model) or _is_hf_speech_encoder(mod):
            return name, mod
    return None


def _kernel(conv: nn.Module) -> tuple[int, int]:
    """(kernel, stride) of a conv block: torchaudio's ConvLayerBlock, or a Hugging Face block's ``.conv``."""
    conv = getattr(conv, "conv", conv)
    k, s = conv.kernel_size, conv.stride
    return int(k[0] if isinstance(k, tuple) else k), int(s[0] if isinstance(s, tuple) else s)


def discover(root: nn.Module) -> DiscoveredLayers:
    """Find the conv feature-extractor blocks and transformer layers of a wav2vec2-style model
    (torchaudio's, or Hugging Face's wav2vec2 / HuBERT / WavLM / Data2Vec-audio)."""
    found = _find_wav2vec2(root)
    if found is None:
        raise TypeError(f"{type(root).__name__} contains no torchaudio Wav2Vec2Model nor Hugging Face "
                        "wav2vec2-style model")
    prefix, w2v = found
    dot = f"{prefix}." if prefix else ""
    blocks = list(w2v.feature_extractor.conv_layers)
    conv = [f"{dot}feature_extractor.conv_layers.{i}" for i in range(len(blocks))]
    if _is_hf_speech_encoder(w2v):
        layers = [f"{dot}encoder.layers.{i}" for i in range(len(w2v.encoder.layers))]
    else:
        layers = [f"{dot}encoder.transformer.layers.{i}" for i in range(len(w2v.encoder.transformer.layers))]
    kernels, strides = (list(t) for t in zip(*(_kernel(b) for b in blocks)))
    return DiscoveredLayers(prefix, conv, layers, kernels, strides)


class DiscoveredEncoder(SpeechModel):
    """What a wrapped wav2vec2-style encoder (conv feature encoder, then transformer layers) knows of its
    layers from :func:`discover`: frames per layer and the probed layers. Subclasses set ``self.model``
    and call :meth:`discover_layers`, and define ``forward``."""

    def discover_layers(self) -> None:
        self.discovered = discover(self)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) after the conv feature encoder (about one per 20 ms)."""
        return conv_lengths(lengths, self.discovered.kernels, self.discovered.strides)

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one frame after the conv feature encoder (400 for wav2vec2)."""
        n = 1
        for k, s in zip(reversed(self.discovered.kernels), reversed(self.discovered.strides)):
            n = (n - 1) * s + k
        return n

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid frames (B,) of a conv block or transformer layer."""
        return self.discovered.lengths_fn(layer)(lengths)

    def probe_spec(self, include_cnn: bool = True) -> ProbeLayers:
        """Conv feature-encoder blocks and transformer layers, mean-pooled."""
        return self.discovered.probe_spec(include_cnn)


class TorchaudioSSL(DiscoveredEncoder):
    """A torchaudio wav2vec2/HuBERT/WavLM model on waveforms (B, samples) -> last layer (B, frames, D)."""

    def __init__(self, name: str, model: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.config = {"name": name}
        self.model = model
        self.discover_layers()
        # Group norm over time in the first conv block (the *_base models) and models run without
        # lengths see the zero padding (pytorch/audio#2242): their outputs depend on the batch.
        self.padding_invariant = name not in NO_LENGTHS and not any(isinstance(m, nn.GroupNorm) for m in model.modules())

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> last transformer layer (B, frames, D)."""
        lens = self.valid_lengths(waves, lengths)
        lens = None if lengths is None else lens
        if self.name in NO_LENGTHS and lens is not None:
            logger.debug("%s: running without lengths (torchaudio fails with them; pytorch/audio#3700)", self.name)
            lens = None
        out = self.model(waves, lens)
        return out[0] if isinstance(out, tuple) else out


def build_torchaudio(name: str, pretrained: bool = False, **kwargs: Any) -> TorchaudioSSL:
    """A supported torchaudio model by name; random weights unless ``pretrained`` (downloads a bundle)."""
    if name not in TORCHAUDIO_MODELS:
        raise ValueError(f"unknown torchaudio model {name!r}; choose from {sorted(TORCHAUDIO_MODELS)}")
    if pretrained:
        bundle = getattr(torchaudio.pipelines, BUNDLES[name])
        model = bundle.get_model()
    else:
        model = TORCHAUDIO_MODELS[name](**kwargs)
    return TorchaudioSSL(name, model.eval())
