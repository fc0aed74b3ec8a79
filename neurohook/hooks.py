"""Record utterance-level (pooled) activations of chosen layers of any torch model while it runs.

:class:`Recorder` registers forward hooks that pool each chosen layer's frames on the fly (see
:mod:`neurohook.pooling`); no frame tensor outlives the hook. Valid frame counts are followed
through the model exactly: a forward pre-hook on the wrapped model reads the padded input length,
and every ``Conv1d``/``Conv2d``/pooling module maps the valid lengths through its kernel, stride,
padding and dilation (recurrent and transformer layers keep them). Each layer then looks up the
valid lengths of its own time length.

Layouts (``layout=``) name the axes of a layer's output; the neurons of a frame are:

- ``"BTD"`` / ``"TBD"`` / ``"BDT"``: the D features (``BDT`` is the Conv1d layout);
- ``"BCFT"`` / ``"BCTF"``: every (channel, frequency-bin) pair of a 2-D conv map, unit ``c * F + f``;
- ``"BD"``: an utterance-level output, passed through unchanged (pooling ``"none"``).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from neurohook.errors import UserInputError
from neurohook.features import Features, LayerSpan, UtteranceId, normalize_id
from neurohook.pooling import STATISTICS, RunningPool, as_lengths, check_pooling

__all__ = [
    "LAYOUTS",
    "LayerNotFoundError",
    "Recorder",
    "StackedRNN",
    "find_layers",
    "infer_layout",
    "split_rnn",
]

_LOG = logging.getLogger(__name__)

#: Accepted output layouts (see the module docstring for what the neurons are).
LAYOUTS: tuple[str, ...] = ("BTD", "TBD", "BDT", "BCFT", "BCTF", "BD")

OutputSelector = Union[None, int, str, Callable[[Any], Any]]
LayerRef = Union[str, nn.Module]

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

_TIME_MODULES_1D = (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d)
_TIME_MODULES_2D = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


# --------------------------------------------------------------------------- layer selection
class LayerNotFoundError(UserInputError, LookupError):
    """A layer name or pattern selects no module; the message lists close matches."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _match(parts: Sequence[str], name: Sequence[str], trailing: bool = True) -> bool:
    """Glob match of dotted components: ``*`` one component, ``**`` zero or more (one or more at the end)."""
    if not parts:
        return not name
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # trailing ** needs at least one component
            return len(name) >= 1
        return any(_match(rest, name[i:]) for i in range(len(name) + 1))
    return bool(name) and fnmatch.fnmatchcase(name[0], head) and _match(rest, name[1:])


def _is_pattern(s: str) -> bool:
    """Whether ``s`` contains glob characters."""
    return any(c in s for c in "*?[")


def _close_matches(query: str, names: Sequence[str]) -> list[str]:
    """Up to 5 names resembling ``query`` (difflib), for error messages."""
    plain = query.replace("**", "").replace("*", "")
    found = difflib.get_close_matches(query, names, n=5, cutoff=0.5)
    found += [n for n in difflib.get_close_matches(plain, names, n=5, cutoff=0.5) if n not in found]
    return found[:5]


def find_layers(model: nn.Module, layers: LayerRef | Iterable[LayerRef]) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs selected by exact names, glob patterns or module objects, deduplicated.

    Patterns match ``named_modules()`` names component-wise: ``*`` matches one dotted component,
    ``**`` any number (so ``"encoder.transformer.layers.*"`` gives the layers, not their children).
    """
    model = _unwrap(model)
    named = {name: mod for name, mod in model.named_modules() if name}
    names = list(named)
    by_id = {id(mod): name for name, mod in named.items()}
    refs: list[LayerRef] = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not refs:
        raise ValueError("no layers given")
    chosen: dict[str, nn.Module] = {}
    for ref in refs:
        if isinstance(ref, nn.Module):
            if id(ref) not in by_id:
                raise ValueError(f"module {type(ref).__name__} is not a submodule of the model")
            chosen.setdefault(by_id[id(ref)], ref)
            continue
        if not isinstance(ref, str):
            raise TypeError(f"layers must be names, patterns or modules, got {type(ref).__name__}")
        if not _is_pattern(ref):
            if ref not in named:
                hint = _close_matches(ref, names)
                raise LayerNotFoundError(f"no layer named {ref!r}" + (f"; close matches: {hint}" if hint else ""))
            chosen.setdefault(ref, named[ref])
            continue
        parts = ref.split(".")
        hits = [n for n in names if _match(parts, n.split("."))]
        if not hits:
            hint = _close_matches(ref, names)
            raise LayerNotFoundError(f"pattern {ref!r} matches no layer" + (f"; close matches: {hint}" if hint else ""))
        for n in hits:
            chosen.setdefault(n, named[n])
    return list(chosen.items())


# ------------------------------------------------------------------------------ layouts, outputs
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
    if isinstance(module, (*_TIME_MODULES_1D, nn.BatchNorm1d, nn.InstanceNorm1d)) and ndim == 3:
        return "BDT"
    if isinstance(module, (*_TIME_MODULES_2D, nn.BatchNorm2d, nn.InstanceNorm2d)) and ndim == 4:
        return conv2d_layout
    cls = type(module)
    if cls.__module__.startswith("torchaudio.models") and cls.__name__ in _TORCHAUDIO_LAYOUTS:
        layout = _TORCHAUDIO_LAYOUTS[cls.__name__]
        return layout if len(layout) == ndim else None
    return None


def _to_frames(x: Tensor, layout: str) -> Tensor:
    """View x in ``layout`` as frames (B, T, *F) (time on axis 1)."""
    if layout == "BTD":
        return x
    if layout == "TBD":
        return x.transpose(0, 1)
    if layout == "BDT":
        return x.transpose(1, 2)
    if layout == "BCFT":
        return x.permute(0, 3, 1, 2)
    if layout == "BCTF":
        return x.permute(0, 2, 1, 3)
    if layout == "BD":
        return x.unsqueeze(1)
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _first_tensor_field(out: Any) -> Any:
    """Default selection: the tensor itself, item 0 of a tuple/list, first tensor of a dict/dataclass."""
    if isinstance(out, (Tensor, PackedSequence)):
        return out
    if isinstance(out, (tuple, list)):
        return out[0] if len(out) else None
    if isinstance(out, Mapping):
        return next((v for v in out.values() if isinstance(v, (Tensor, PackedSequence))), None)
    if is_dataclass(out):
        values = (getattr(out, f.name) for f in fields(out))
        return next((v for v in values if isinstance(v, (Tensor, PackedSequence))), None)
    return None


def _select_output(out: Any, selector: OutputSelector, layer: str) -> Tensor | PackedSequence:
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


# ------------------------------------------------------------------------------ length arithmetic
def _pair(v: Any, i: int) -> Any:
    """Element i of a per-dimension argument (ints apply to every dimension)."""
    return v[i] if isinstance(v, (tuple, list)) else v


def _conv_lengths(module: nn.Module, lengths: Tensor, dim: int, t_in: int, t_out: int) -> Tensor:
    """Valid output frames (B,) of a conv/pool module from valid input frames, along spatial dim ``dim``."""
    kernel = _pair(module.kernel_size, dim)
    stride = _pair(module.stride, dim) or kernel  # pools: stride None means kernel
    dilation = _pair(getattr(module, "dilation", 1), dim)
    padding = getattr(module, "padding", 0)
    if padding == "same":
        return lengths.clamp(max=t_out)
    padding = 0 if padding == "valid" else _pair(padding, dim)
    span = lengths + 2 * padding - dilation * (kernel - 1) - 1
    if getattr(module, "ceil_mode", False):
        out = -torch.div(-span, stride, rounding_mode="floor") + 1
    else:
        out = torch.div(span, stride, rounding_mode="floor") + 1
    return out.clamp(min=0, max=t_out)


def _mask_lengths(padding_mask: Tensor, batch: int) -> Tensor:
    """Valid steps (B,) of a padding mask (B, T) that is True at padded steps, all at the end."""
    if padding_mask.dim() != 2 or padding_mask.shape[0] != batch:
        raise ValueError(f"padding_mask must be (B={batch}, T), got {tuple(padding_mask.shape)}")
    pad = padding_mask.detach().to("cpu").bool()
    lengths = (~pad).sum(dim=1)
    expected = torch.arange(pad.shape[1])[None, :] >= lengths[:, None]
    if not torch.equal(pad, expected) or bool((lengths == 0).any()):
        raise ValueError(
            "padding_mask must be True at padded steps, all at the end of each row, with at least one valid step "
            "(this one is not: is it a Hugging Face attention_mask, True/1 at valid steps? pass "
            "lengths=attention_mask.sum(1) or padding_mask=~attention_mask.bool())")
    return lengths


# --------------------------------------------------------------------------------- recorder state
@dataclass
class _LayerSpec:
    """How one chosen layer is recorded."""

    name: str
    module: nn.Module
    pooling: str
    output: OutputSelector = None
    layout: str | None = None
    lengths_fn: Callable[[Tensor], Tensor] | None = None


@dataclass
class _Batch:
    """The utterances of the current ``rec.batch`` block."""

    ids: list[UtteranceId]
    slots: list[int]
    lengths: Tensor | None  # (B,) int64 on CPU, in input time steps
    padded_length: int | None


@dataclass
class _Call:
    """Per-forward (per-thread) state: valid lengths by padded time length, batch slice."""

    table: dict[int, Tensor] | None
    input_lengths: Tensor | None
    offset: int = 0
    size: int = 0
    slot_cache: dict[torch.device, Tensor] = field(default_factory=dict)


_OVERRIDE_KEYS = frozenset({"pooling", "output", "layout", "lengths"})


class Recorder:
    """Pool chosen layers' activations per utterance while the model runs (forward hooks).

    Example::

        rec = Recorder(model, layers="encoder.transformer.layers.*", pooling="mean")
        with rec:
            for ids, wave, lengths in loader:
                with rec.batch(ids, lengths=lengths):   # lengths in input time steps
                    model(wave, lengths)
        feats = rec.features()                           # Features: .values (N, neurons), .ids

    Args:
        model: any ``nn.Module`` (DataParallel/DDP wrappers are unwrapped for layer names).
        layers: exact names, glob patterns (``*`` one dotted component, ``**`` any depth) or modules.
        pooling: ``"mean"``, ``"std"``, ``"stats"`` (mean then std), ``"max"`` or ``"min"``.
        output: which part of a module's output to pool: None (the tensor, item 0 of a tuple/list,
            the first tensor of a dict or dataclass), an index, a key/attribute name or a callable.
        layout: output layout for every layer (one of :data:`LAYOUTS`); None infers it per module.
        overrides: ``{name or pattern: {"pooling"|"output"|"layout"|"lengths": ...}}`` per layer;
            ``"lengths"`` is a callable mapping input valid lengths (B,) to this layer's frames.
        unbiased: divide the variance by n - 1 instead of n (std of one frame is 0 either way).
        dtype: accumulation precision, ``torch.float32`` or ``torch.float64``.
        input_time_axis: time axis of the model input (default: axis 1 of a 2-D input, otherwise the
            one axis whose size equals the longest length).
        conv2d_layout: ``"BCFT"`` or ``"BCTF"``, the layout assumed for 2-D convolutions and pools.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerRef | Iterable[LayerRef],
        pooling: str = "mean",
        *,
        output: OutputSelector = None,
        layout: str | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        unbiased: bool = False,
        dtype: torch.dtype = torch.float32,
        input_time_axis: int | None = None,
        conv2d_layout: str = "BCFT",
    ) -> None:
        """Select layers and validate options; hooks are registered on ``__enter__``."""
        check_pooling(pooling)
        if pooling == "none":
            raise ValueError("pooling 'none' is implied for (B, D) outputs; choose mean/std/stats/max/min")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        if conv2d_layout not in ("BCFT", "BCTF"):
            raise ValueError(f"conv2d_layout must be 'BCFT' or 'BCTF', got {conv2d_layout!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.model = model
        self._inner = _unwrap(model)
        self._dp_devices: list[int] = list(model.device_ids or []) if isinstance(model, nn.DataParallel) else []
        self.pooling = pooling
        self.unbiased = unbiased
        self.dtype = dtype
        self.input_time_axis = input_time_axis
        self.conv2d_layout = conv2d_layout
        self._specs = [
            _LayerSpec(name, module, pooling, output, layout) for name, module in find_layers(model, layers)
        ]
        self._apply_overrides(overrides or {})
        self._pools: dict[str, RunningPool] = {}
        self._slot_of: dict[UtteranceId, int] = {}
        self._ids: list[UtteranceId] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._batch: _Batch | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        #: Valid frame counts (B,) each layer used in the latest call (None: every frame valid).
        self.last_lengths: dict[str, Tensor | None] = {}

    # ------------------------------------------------------------------------- configuration
    def _apply_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        """Apply per-layer options; every key must select at least one recorded layer."""
        names = [s.name for s in self._specs]
        for key, opts in overrides.items():
            unknown = set(opts) - _OVERRIDE_KEYS
            if unknown:
                raise ValueError(f"override {key!r}: unknown options {sorted(unknown)}; use {sorted(_OVERRIDE_KEYS)}")
            hits = [s for s in self._specs if (s.name == key or (_is_pattern(key) and _match(key.split("."), s.name.split("."))))]
            if not hits:
                hint = _close_matches(key, names)
                raise LayerNotFoundError(f"override {key!r} matches no recorded layer" + (f"; close matches: {hint}" if hint else ""))
            for s in hits:
                if "pooling" in opts:
                    if check_pooling(opts["pooling"]) == "none":
                        raise ValueError(f"override {key!r}: pooling 'none' is implied for (B, D) outputs")
                    s.pooling = opts["pooling"]
                if "output" in opts:
                    s.output = opts["output"]
                if "layout" in opts:
                    if opts["layout"] not in LAYOUTS:
                        raise ValueError(f"override {key!r}: unknown layout {opts['layout']!r}; expected one of {LAYOUTS}")
                    s.layout = opts["layout"]
                if "lengths" in opts:
                    s.lengths_fn = opts["lengths"]

    @property
    def layer_names(self) -> list[str]:
        """Names of the recorded layers, in feature order."""
        return [s.name for s in self._specs]

    def layer_specs(self) -> list[dict[str, Any]]:
        """How each layer is recorded: ``{"name", "pooling", "layout", "output", "lengths"}`` (None: inferred)."""
        return [{"name": s.name, "pooling": s.pooling, "layout": s.layout, "output": s.output, "lengths": s.lengths_fn}
                for s in self._specs]

    @property
    def ids(self) -> list[UtteranceId]:
        """Utterance ids seen so far, in first-seen order (the rows of :meth:`features`)."""
        return list(self._ids)

    # ---------------------------------------------------------------------- hook registration
    def __enter__(self) -> Recorder:
        """Register the hooks."""
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        """Remove the hooks (also on exceptions and KeyboardInterrupt)."""
        self.remove()

    def attach(self) -> None:
        """Register the forward pre-hook, length tracers and layer hooks."""
        if self._handles:
            raise RuntimeError("recorder hooks are already attached")
        try:
            self._handles.append(self._inner.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            for module in self._inner.modules():
                if isinstance(module, (*_TIME_MODULES_1D, *_TIME_MODULES_2D)):
                    self._handles.append(module.register_forward_hook(self._trace_hook))
            for spec in self._specs:
                self._handles.append(spec.module.register_forward_hook(self._make_hook(spec)))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook this recorder registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        self._batch = None

    @property
    def attached(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    def reset(self) -> None:
        """Forget every pooled statistic and utterance id."""
        self._pools.clear()
        self._slot_of.clear()
        self._ids.clear()
        self.last_lengths.clear()

    # --------------------------------------------------------------------------------- batches
    @contextmanager
    def batch(
        self,
        ids: Sequence[UtteranceId],
        lengths: Sequence[int] | Tensor | np.ndarray | None = None,
        *,
        padding_mask: Tensor | None = None,
        padded_length: int | None = None,
    ) -> Iterator[None]:
        """Forward calls inside this block feed utterances ``ids`` (B,).

        ``lengths`` (B,) are valid input time steps, or ``padding_mask`` (B, T_in) is True at padded
        steps (padding at the end). Without either, every frame is valid. ``padded_length`` is the
        input's padded time length when it cannot be read from the model input.
        """
        if self._batch is not None:
            raise RuntimeError("rec.batch blocks cannot be nested")
        ids = [normalize_id(u) for u in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("utterance ids within one batch must be unique")
        if padding_mask is not None:
            if lengths is not None:
                raise ValueError("pass lengths or padding_mask, not both")
            lengths = _mask_lengths(padding_mask, len(ids))
            padded_length = padding_mask.shape[1] if padded_length is None else padded_length
        lens: Tensor | None = None
        if lengths is not None:
            lens = as_lengths(lengths).to("cpu")
            if lens.numel() != len(ids):
                raise ValueError(f"{lens.numel()} lengths for {len(ids)} ids")
            if padded_length is not None and int(lens.max()) > padded_length:
                raise ValueError(f"a length {int(lens.max())} exceeds padded_length {padded_length}")
        slots = []
        for u in ids:
            if u not in self._slot_of:
                self._slot_of[u] = len(self._ids)
                self._ids.append(u)
            slots.append(self._slot_of[u])
        self._batch = _Batch(ids, slots, lens, padded_length)
        table = {padded_length: lens} if (lens is not None and padded_length is not None) else None
        self._local.call = _Call(table, lens, 0, len(ids))
        try:
            yield
        finally:
            self._batch = None
            self._local.call = None

    def _require_batch(self, where: str) -> _Batch:
        """The active batch, or a RuntimeError explaining how to open one."""
        batch = self._batch
        if batch is None:
            raise RuntimeError(f"neurohook: {where} ran outside `with rec.batch(ids, lengths=...)`")
        return batch

    def _input_time_length(self, x: Tensor, lengths: Tensor) -> int:
        """Padded time length of the model input x."""
        if self.input_time_axis is not None:
            return int(x.shape[self.input_time_axis])
        if x.dim() == 2:
            return int(x.shape[1])
        longest = int(lengths.max()) if lengths.numel() else 0
        axes = [d for d in range(x.dim()) if x.shape[d] == longest]
        if len(axes) != 1:
            raise ValueError(
                f"cannot tell the time axis of the model input of shape {tuple(x.shape)} "
                f"(longest length {longest}); pass Recorder(input_time_axis=...) or rec.batch(padded_length=...)"
            )
        return longest

    # ----------------------------------------------------------------------------------- hooks
    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the wrapped model: start a call with the input's lengths table."""
        batch = self._require_batch("the model")
        x = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        offset, size = 0, len(batch.ids)
        if len(self._dp_devices) > 1 and x is not None and x.is_cuda:  # DataParallel replica
            chunk = math.ceil(len(batch.ids) / len(self._dp_devices))
            offset = self._dp_devices.index(x.device.index) * chunk
            size = min(chunk, len(batch.ids) - offset)
        lens = None if batch.lengths is None else batch.lengths[offset : offset + size]
        table = None
        if lens is not None:
            if batch.padded_length is not None:
                t0 = batch.padded_length
            elif x is None:
                raise ValueError("the model input has no tensor; pass rec.batch(padded_length=...)")
            else:
                t0 = self._input_time_length(x, lens)
            if lens.numel() and int(lens.max()) > t0:
                raise ValueError(f"a length {int(lens.max())} exceeds the padded input length {t0}")
            table = {t0: lens}
        self._local.call = _Call(table, lens, offset, size)

    def _trace_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Forward hook on conv/pool modules: map valid lengths through the module along time."""
        call: _Call | None = getattr(self._local, "call", None)
        if call is None or call.table is None or not args or not isinstance(args[0], Tensor):
            return
        if not isinstance(output, Tensor):
            return
        x = args[0]
        if isinstance(module, _TIME_MODULES_1D):
            axes = [(-1, 0)]
        else:  # 2-D: preferred time axis first, the other one as fallback
            pref = [(-1, 1), (-2, 0)]
            axes = pref if self.conv2d_layout == "BCFT" else pref[::-1]
        for axis, dim in axes:
            t_in = int(x.shape[axis])
            if t_in in call.table:
                t_out = int(output.shape[axis])
                with torch.no_grad():
                    call.table[t_out] = _conv_lengths(module, call.table[t_in], dim, t_in, t_out)
                return

    def _make_hook(self, spec: _LayerSpec) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        """The forward hook recording ``spec``."""

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            with torch.profiler.record_function(f"neurohook/{spec.name}"):
                with torch.inference_mode(False), torch.no_grad():
                    self._record(spec, output)

        return hook

    def _layer_lengths(self, spec: _LayerSpec, call: _Call, frames: int) -> Tensor:
        """Valid frames (B,) of a layer whose output has ``frames`` time steps."""
        assert call.input_lengths is not None
        if spec.lengths_fn is not None:
            return torch.as_tensor(spec.lengths_fn(call.input_lengths)).to(torch.int64).clamp(0, frames)
        if call.table is None:
            raise ValueError(
                f"layer {spec.name!r}: the padded input length is unknown (the model's forward was not "
                "called); pass rec.batch(padded_length=...)"
            )
        if frames in call.table:
            return call.table[frames].clamp(max=frames)
        t0, lens0 = next(iter(call.table.items()))
        if spec.name not in self._warned:
            self._warned.add(spec.name)
            warnings.warn(
                f"neurohook: no exact length arithmetic reaches layer {spec.name!r} ({frames} frames); "
                f"scaling input lengths proportionally (pass overrides={{{spec.name!r}: {{'lengths': fn}}}})",
                RuntimeWarning,
                stacklevel=4,
            )
        scaled = torch.round(lens0.to(torch.float64) * frames / max(t0, 1)).to(torch.int64)
        return torch.where(lens0 > 0, scaled.clamp(min=1), scaled).clamp(max=frames)

    def _record(self, spec: _LayerSpec, output: Any) -> None:
        """Pool one layer output into the running statistics."""
        batch = self._require_batch(f"layer {spec.name!r}")
        call: _Call | None = getattr(self._local, "call", None)
        if call is None:
            call = _Call(None, batch.lengths, 0, len(batch.ids))
        y = _select_output(output, spec.output, spec.name)
        exact: Tensor | None = None
        layout = spec.layout
        if isinstance(y, PackedSequence):
            y, exact = pad_packed_sequence(y, batch_first=True)
            layout = "BTD"
        if layout is None:
            layout = infer_layout(spec.module, y.dim(), self.conv2d_layout)
            if layout is None:
                raise ValueError(
                    f"cannot infer the layout of layer {spec.name!r} ({type(spec.module).__name__}) with output "
                    f"shape {tuple(y.shape)}; pass overrides={{{spec.name!r}: {{'layout': ...}}}} with one of {LAYOUTS}"
                )
        if y.dim() != len(layout):
            raise ValueError(f"layer {spec.name!r}: layout {layout!r} does not fit output shape {tuple(y.shape)}")
        frames = _to_frames(y.detach(), layout)
        if frames.shape[0] != call.size:
            raise ValueError(
                f"layer {spec.name!r}: output batch size {frames.shape[0]} (layout {layout}, shape "
                f"{tuple(y.shape)}) differs from the {call.size} ids of rec.batch"
            )
        if layout == "BD":
            lengths = None
        elif exact is not None:
            lengths = exact
        elif call.input_lengths is None:
            lengths = None
        else:
            lengths = self._layer_lengths(spec, call, frames.shape[1])
        self.last_lengths[spec.name] = None if lengths is None else lengths.cpu()
        slots = call.slot_cache.get(frames.device)
        if slots is None:
            chunk = batch.slots[call.offset : call.offset + call.size]
            slots = torch.tensor(chunk, dtype=torch.int64, device=frames.device)
            call.slot_cache[frames.device] = slots
        with self._lock:
            pool = self._pools.get(spec.name)
            if pool is None:
                pooling = "none" if layout == "BD" else spec.pooling
                pool = self._pools[spec.name] = RunningPool(pooling, unbiased=self.unbiased, dtype=self.dtype)
            pool.update(frames, None if lengths is None else lengths.to(frames.device), slots)

    # ---------------------------------------------------------------------------------- result
    def features(self) -> Features:
        """Pooled values of every utterance seen: Features with values (N, total neurons) float32."""
        n = len(self._ids)
        blocks: list[np.ndarray] = []
        spans: list[LayerSpan] = []
        start = 0
        for spec in self._specs:
            pool = self._pools.get(spec.name)
            if pool is None:
                raise RuntimeError(f"layer {spec.name!r} recorded nothing: was it called in the forward pass?")
            counts = pool.counts(n)
            empty = [self._ids[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
            if empty:
                raise ValueError(f"layer {spec.name!r} saw no valid frame of utterances {empty[:5]}")
            values = pool.result(n).numpy()
            spans.append(
                LayerSpan(spec.name, start, start + values.shape[1], pool.pooling, STATISTICS[pool.pooling], pool.feature_shape or ())
            )
            blocks.append(values)
            start += values.shape[1]
        values = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)
        return Features(values, self._ids, spans)


# ---------------------------------------------------------------------------------- split RNNs
class StackedRNN(nn.Module):
    """A multi-layer nn.LSTM/GRU/RNN as ``layers`` (ModuleList of one-layer RNNs sharing its parameters).

    Same call signature and outputs as the original: input (B, T, D) or (T, B, D) or PackedSequence,
    optional initial state (num_layers * directions, B, H); returns (output, h_n) or (output, (h_n, c_n)).
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        """Split ``rnn``; parameters are shared, not copied."""
        super().__init__()
        if not isinstance(rnn, (nn.LSTM, nn.GRU, nn.RNN)):
            raise TypeError(f"split_rnn needs nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
        self.mode = rnn.mode
        self.num_layers = rnn.num_layers
        self.batch_first = rnn.batch_first
        self.bidirectional = rnn.bidirectional
        self.dropout = float(rnn.dropout)
        dirs = 2 if rnn.bidirectional else 1
        out_size = (rnn.proj_size or rnn.hidden_size) if isinstance(rnn, nn.LSTM) else rnn.hidden_size
        ref = rnn.weight_ih_l0
        self.layers = nn.ModuleList()
        for k in range(rnn.num_layers):
            kw: dict[str, Any] = dict(
                input_size=rnn.input_size if k == 0 else out_size * dirs,
                hidden_size=rnn.hidden_size,
                num_layers=1,
                bias=rnn.bias,
                batch_first=rnn.batch_first,
                bidirectional=rnn.bidirectional,
                device=ref.device,
                dtype=ref.dtype,
            )
            if isinstance(rnn, nn.LSTM):
                layer: nn.RNNBase = nn.LSTM(proj_size=rnn.proj_size, **kw)
            elif isinstance(rnn, nn.GRU):
                layer = nn.GRU(**kw)
            else:
                layer = nn.RNN(nonlinearity=rnn.nonlinearity, **kw)
            for name in list(layer._flat_weights_names):
                setattr(layer, name, getattr(rnn, name.replace("_l0", f"_l{k}", 1)))
            self.layers.append(layer)

    def forward(self, x: Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """Run the layers in turn (dropout between layers in training, as the original)."""
        is_lstm = self.mode == "LSTM"
        dirs = 2 if self.bidirectional else 1
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k, layer in enumerate(self.layers):
            state = None
            if hx is not None:
                part = slice(k * dirs, (k + 1) * dirs)
                state = (hx[0][part], hx[1][part]) if is_lstm else hx[part]
            x, out_state = layer(x, state)
            if is_lstm:
                hs.append(out_state[0])
                cs.append(out_state[1])
            else:
                hs.append(out_state)
            if k < self.num_layers - 1 and self.dropout > 0 and self.training:
                if isinstance(x, PackedSequence):
                    x = PackedSequence(
                        nn.functional.dropout(x.data, self.dropout, True), x.batch_sizes, x.sorted_indices, x.unsorted_indices
                    )
                else:
                    x = nn.functional.dropout(x, self.dropout, True)
        h_n = torch.cat(hs, dim=0)
        return (x, (h_n, torch.cat(cs, dim=0))) if is_lstm else (x, h_n)


def split_rnn(rnn: nn.RNNBase) -> StackedRNN:
    """Per-layer view of a multi-layer RNN (same weights, outputs equal to the original within 1e-6)."""
    return StackedRNN(rnn)
