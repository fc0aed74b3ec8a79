"""Layouts of a layer's output and which tensor of it to pool.

A layout names the axes of the output (see :mod:`neurohook.hooks`); :func:`infer_layout` knows
torch's recurrent, transformer, convolution and normalisation modules, torchaudio's wav2vec2
components and Hugging Face speech encoders' layers (wav2vec2, HuBERT, WavLM, Data2Vec-audio,
Whisper's encoder: conv blocks (B, C, T), projections and encoder layers (B, T, D)), and :func:`to_frames` views any layout as frames (B, T, *F).

Example::

    infer_layout(nn.Conv1d(40, 64, 5), ndim=3)     # "BDT"
    to_frames(x, "BDT").shape                      # (B, T, 64)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Union

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from neurohook.hooks.rnn import StackedRNN

__all__ = ["LAYOUTS", "OutputSelector", "TIME_MODULES_1D", "TIME_MODULES_2D", "default_selector", "from_frames",
           "infer_layout", "select_output", "to_frames"]

#: Accepted output layouts (see the module docstring for what the neurons are).
LAYOUTS: tuple[str, ...] = ("BTD", "TBD", "BDT", "BCFT", "BCTF", "BD")

OutputSelector = Union[None, int, str, Callable[[Any], Any]]

# torchaudio wav2vec2/HuBERT/WavLM components whose output layout is known (matched by class name
# inside torchaudio.models so that torchaudio is never imported here).
_TORCHAUDIO_LAYOUTS: dict[str, str] = {
    "ConvLayerBlock": "BDT",
    "FeatureExtractor": "BTD",
    "FeatureProjection": "BTD",
    "ConvolutionalPositionalEmbedding": "BTD",
    "SelfAttention": "BTD",
    "WavLMSelfAttention": "BTD",
    "FeedForward": "BTD",
    "EncoderLayer": "BTD",
    "Transformer": "BTD",
    "Encoder": "BTD",
    "Wav2Vec2Model": "BTD",
    "HuBERTPretrainModel": "BTD",
    "ConformerLayer": "TBD",
}

# Hugging Face speech encoders (``transformers.models.*``), by class-name suffix: their feature-encoder
# conv blocks give (B, C, T); feature projections, positional convolutions and encoder layers (B, T, D),
# alone or first in a tuple. transformers is never imported here.
_HF_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("ConvLayer", "BDT"), ("FeatureEncoder", "BDT"), ("FeatureExtractor", "BDT"),
    ("FeatureProjection", "BTD"), ("PositionalConvEmbedding", "BTD"), ("EncoderLayer", "BTD"),
    ("EncoderLayerStableLayerNorm", "BTD"), ("Encoder", "BTD"), ("EncoderStableLayerNorm", "BTD"),
    ("Attention", "BTD"), ("FeedForward", "BTD"),
)

TIME_MODULES_1D = (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d)
TIME_MODULES_2D = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def infer_layout(module: nn.Module, ndim: int, conv2d_layout: str = "BCFT") -> str | None:
    """Output layout implied by the module type and output rank, or None when ambiguous."""
    if ndim == 2:
        return "BD"
    if isinstance(module, StackedRNN):
        return ("BTD" if module.batch_first else "TBD") if ndim == 3 else None
    if isinstance(module, nn.RNNBase):
        return ("BTD" if module.batch_first else "TBD") if ndim == 3 else None
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return ("BTD" if module.self_attn.batch_first else "TBD") if ndim == 3 else None
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        return infer_layout(module.layers[0], ndim, conv2d_layout)
    if isinstance(module, (nn.Transformer, nn.MultiheadAttention)):
        return ("BTD" if module.batch_first else "TBD") if ndim == 3 else None
    if isinstance(module, (*TIME_MODULES_1D, nn.BatchNorm1d, nn.InstanceNorm1d)) and ndim == 3:
        return "BDT"
    if isinstance(module, (*TIME_MODULES_2D, nn.BatchNorm2d, nn.InstanceNorm2d)) and ndim == 4:
        return conv2d_layout
    cls = type(module)
    if cls.__module__.startswith("torchaudio.models") and cls.__name__ in _TORCHAUDIO_LAYOUTS:
        layout = _TORCHAUDIO_LAYOUTS[cls.__name__]
        return layout if len(layout) == ndim else None
    if cls.__module__.startswith("transformers.models."):
        for suffix, layout in _HF_SUFFIXES:
            if cls.__name__.endswith(suffix) and len(layout) == ndim:
                return layout
    return None


#: Axes of each layout's output in frames order (B, T, *F); "BD" (no time axis) gets one frame.
_FRAME_AXES: dict[str, tuple[int, ...]] = {"BTD": (0, 1, 2), "TBD": (1, 0, 2), "BDT": (0, 2, 1),
                                           "BCFT": (0, 3, 1, 2), "BCTF": (0, 2, 1, 3)}


def _frame_axes(layout: str) -> tuple[int, ...]:
    if layout not in _FRAME_AXES:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return _FRAME_AXES[layout]


def to_frames(x: Tensor, layout: str) -> Tensor:
    """View x in ``layout`` as frames (B, T, *F) (time on axis 1)."""
    return x.unsqueeze(1) if layout == "BD" else x.permute(_frame_axes(layout))


def from_frames(frames: Tensor, layout: str) -> Tensor:
    """The inverse of :func:`to_frames`: frames (B, T, *F) viewed back in ``layout``."""
    if layout == "BD":
        return frames.squeeze(1)
    axes = _frame_axes(layout)
    return frames.permute(tuple(sorted(range(len(axes)), key=axes.__getitem__)))


def default_selector(out: Any) -> int | str | None:
    """Where the default selection (``output=None``) finds the tensor in a non-tensor output: 0 of a
    tuple / list, the key or field name of the first tensor of a dict / dataclass; None when there is none."""
    if isinstance(out, (tuple, list)):
        return 0 if len(out) else None
    if isinstance(out, Mapping):
        return next((k for k, v in out.items() if isinstance(v, (Tensor, PackedSequence))), None)
    if is_dataclass(out):
        return next((f.name for f in fields(out) if isinstance(getattr(out, f.name), (Tensor, PackedSequence))), None)
    return None


def _first_tensor_field(out: Any) -> Any:
    """Default selection: the tensor itself, else the part :func:`default_selector` names (None: nothing)."""
    if isinstance(out, (Tensor, PackedSequence)):
        return out
    key = default_selector(out)
    if key is None:
        return None
    return out[key] if isinstance(key, int) or isinstance(out, Mapping) else getattr(out, key)


def select_output(out: Any, selector: OutputSelector, layer: str) -> Tensor | PackedSequence:
    """The tensor to pool from a module output (see :class:`Recorder` ``output=``)."""
    if selector is None:
        picked = _first_tensor_field(out)
    elif callable(selector):
        picked = selector(out)
    elif isinstance(selector, int):
        picked = out[selector]
    elif isinstance(selector, str):
        picked = out[selector] if isinstance(out, Mapping) else getattr(out, selector)
    else:
        raise TypeError(f"layer {layer!r}: output selector must be None, int, str or callable")
    if not isinstance(picked, (Tensor, PackedSequence)):
        raise TypeError(
            f"layer {layer!r}: selected output is {type(picked).__name__}, not a tensor "
            f"(module returned {type(out).__name__}); set output= for this layer"
        )
    return picked
