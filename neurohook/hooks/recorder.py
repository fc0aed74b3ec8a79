"""The Recorder: forward hooks that pool chosen layers' frames per utterance while the model runs."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from neurohook.features import Features, LayerSpan, UtteranceId, normalize_id
from neurohook.hooks.frame_lengths import input_time_length, override_lengths, table_lengths, trace_lengths
from neurohook.hooks.layers import LayerRef, _unwrap, find_layers
from neurohook.hooks.layouts import (LAYOUTS, TIME_MODULES_1D, TIME_MODULES_2D, OutputSelector, infer_layout,
                                     select_output, to_frames)
from neurohook.hooks.specs import LayerSpec, apply_overrides, layer_specs
from neurohook.lengths import batch_lengths
from neurohook.pooling import STATISTICS, RunningPool, check_pooling

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

#: Layouts that the compiled path (Recorder._store_compiled) reads without a tensor operation.
_COMPILED_LAYOUTS = ("BDT", "BTD", "BD")

#: Whether a torch profiler is recording (any: torch.profiler, autograd's, one started from C++); where
#: torch lacks the query, always True (every hook call then opens a range, as before).
_profiler_enabled: Callable[[], bool] = getattr(torch._C._autograd, "_profiler_enabled", lambda: True)


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
    slot_cache: dict[torch.device | str, Tensor] = field(default_factory=dict)
    rows: np.ndarray | None = None  # (size,) int64 storage rows, for the compiled path
    # the overrides' (lengths, min, max, lengths as a NumPy array or None off the CPU)
    layer_lengths: dict[str, tuple[Tensor, int, int, np.ndarray | None]] = field(default_factory=dict)


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
        self._specs = layer_specs(find_layers(model, layers), pooling, output, layout)
        apply_overrides(self._specs, overrides or {})
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
        self._layouts: dict[str, str] = {}  # the layout each layer's output was read in

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
                if isinstance(module, (*TIME_MODULES_1D, *TIME_MODULES_2D)):
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
        attention_mask: Tensor | None = None,
        padded_length: int | None = None,
    ) -> Iterator[None]:
        """Forward calls inside this block feed utterances ``ids`` (B,).

        ``lengths`` (B,) are valid input time steps, or ``padding_mask`` (B, T_in) is True at padded
        steps (padding at the end; torchaudio's convention), or ``attention_mask`` (B, T_in) is 1 at
        valid steps (Hugging Face's). Without any, every frame is valid. ``padded_length`` is the
        input's padded time length when it cannot be read from the model input. The model may be
        called either way inside: ``model(wave, lengths)`` or ``model(wave, attention_mask=mask)``.
        """
        if self._batch is not None:
            raise RuntimeError("rec.batch blocks cannot be nested")
        ids = [normalize_id(u) for u in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("utterance ids within one batch must be unique")
        lens, padded_length = batch_lengths(len(ids), lengths, padding_mask, attention_mask, padded_length)
        slots = []
        for u in ids:
            if u not in self._slot_of:
                self._slot_of[u] = len(self._ids)
                self._ids.append(u)
            slots.append(self._slot_of[u])
        for pool in self._pools.values():  # here, not between the layers
            pool.reserve(len(self._ids))
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
                t0 = input_time_length(x, lens, self.input_time_axis)
            if lens.numel() and int(lens.max()) > t0:
                raise ValueError(f"a length {int(lens.max())} exceeds the padded input length {t0}")
            table = {t0: lens}
        call = _Call(table, lens, offset, size, rows=np.asarray(batch.slots[offset : offset + size], dtype=np.int64))
        if lens is not None:  # the overrides' lengths now, before the layers run: cheaper than between them
            with torch.no_grad():
                for s in self._specs:
                    if s.lengths_fn is not None:
                        call.layer_lengths[s.name] = override_lengths(s.lengths_fn, lens)
        self._local.call = call

    def _trace_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Forward hook on conv/pool modules: map valid lengths through the module along time."""
        call: _Call | None = getattr(self._local, "call", None)
        if call is None or call.table is None or not args or not isinstance(args[0], Tensor):
            return
        if not isinstance(output, Tensor):
            return
        trace_lengths(module, args[0], output, call.table, self.conv2d_layout)

    def _make_hook(self, spec: LayerSpec) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        """The forward hook recording ``spec``."""

        label = f"neurohook/{spec.name}"

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._store_compiled(spec, output):
                return
            # a profiler range only while a profiler records: entering and leaving one costs ~25 us a call
            with torch.profiler.record_function(label) if _profiler_enabled() else nullcontext():
                with torch.inference_mode(False), torch.no_grad():
                    self._record(spec, output)

        return hook

    def _store_compiled(self, spec: LayerSpec, output: Any) -> bool:
        """The common case by one compiled call and no tensor operation (RunningPool.store_new_rows): a
        CPU float32 tensor (or a tuple's first item, as ``output=None`` selects), not requiring grad, of a
        layer read before as (B, D, T), (B, T, D) or (B, D), whose valid lengths are known (a ``lengths``
        override's, found in range by the pre-hook, or the exact ones followed through the convolutions),
        into rows not seen before. Right after a large layer each operation costs 20-100 us
        (benchmarks/bench_extract.py), so the checks are attribute reads. False where :meth:`_record`
        must record, and check, the output."""
        call: _Call | None = getattr(self._local, "call", None)
        pool = self._pools.get(spec.name)
        layout = self._layouts.get(spec.name)
        if type(output) is tuple and output and spec.output is None:  # the default selection: item 0
            output = output[0]
        elif spec.output is not None:
            return False
        if (call is None or call.rows is None or pool is None or layout not in _COMPILED_LAYOUTS
                or type(output) is not Tensor or output.dtype != torch.float32 or output.requires_grad
                or not output.is_cpu or output.dim() != len(layout) or _profiler_enabled()):
            return False
        lengths, count = None, None
        if layout != "BD" and call.input_lengths is not None:
            frames = output.shape[layout.index("T")]
            if spec.lengths_fn is not None:
                known = call.layer_lengths.get(spec.name)
                if known is None or known[3] is None or known[1] < 0 or known[2] > frames:
                    return False
                lengths, count = known[0], known[3]
            else:  # followed through the convolutions: within [0, frames] by construction (trace_lengths)
                lengths = None if call.table is None else call.table.get(frames)
                if lengths is None or not lengths.is_cpu:
                    return False
                count = lengths.numpy()
        with self._lock:
            if not pool.store_new_rows(output.numpy(), count, call.rows, time_last=layout == "BDT"):
                return False
        self.last_lengths[spec.name] = lengths
        return True

    def _layer_lengths(self, spec: LayerSpec, call: _Call, frames: int) -> Tensor:
        """Valid frames (B,) of a layer whose output has ``frames`` time steps."""
        assert call.input_lengths is not None
        if spec.lengths_fn is None:
            return table_lengths(call.table, frames, spec.name, self._warned)
        n, lo, hi, _ = call.layer_lengths.get(spec.name) or override_lengths(spec.lengths_fn, call.input_lengths)
        return n if 0 <= lo and hi <= frames else n.clamp(0, frames)  # within [0, frames] already: as it is

    def _record(self, spec: LayerSpec, output: Any) -> None:
        """Pool one layer output into the running statistics."""
        batch = self._require_batch(f"layer {spec.name!r}")
        call: _Call | None = getattr(self._local, "call", None)
        if call is None:
            call = _Call(None, batch.lengths, 0, len(batch.ids))
        y = select_output(output, spec.output, spec.name)
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
        frames = to_frames(y.detach() if y.requires_grad else y, layout)
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
        if lengths is not None and not (lengths.is_cpu and frames.is_cpu) and lengths.device != frames.device:
            lengths = lengths.to(frames.device)
        self.last_lengths[spec.name] = lengths if lengths is None or lengths.is_cpu else lengths.cpu()
        self._layouts[spec.name] = "packed" if exact is not None else layout
        device = "cpu" if frames.is_cpu else frames.device
        slots = call.slot_cache.get(device)
        if slots is None:
            chunk = batch.slots[call.offset : call.offset + call.size]
            slots = call.slot_cache[device] = torch.tensor(chunk, dtype=torch.int64, device=device)
        with self._lock:
            pool = self._pools.get(spec.name)
            if pool is None:
                pooling = "none" if layout == "BD" else spec.pooling
                pool = self._pools[spec.name] = RunningPool(pooling, unbiased=self.unbiased, dtype=self.dtype)
            pool.update(frames, lengths, slots)

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
                LayerSpan(spec.name, start, start + values.shape[1], pool.pooling, STATISTICS[pool.pooling],
                          pool.feature_shape or (), self._layouts.get(spec.name, ""))
            )
            blocks.append(values)
            start += values.shape[1]
        values = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)
        return Features(values, self._ids, spans)
