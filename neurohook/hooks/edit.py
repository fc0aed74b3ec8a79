"""Editing chosen layers' outputs in the running model: the shared machinery of :class:`neurohook.Ablation`
and :class:`neurohook.Erasure`.

A forward hook takes the same tensor of a module's output that the :class:`neurohook.Recorder` pools
(same ``output`` selector, same layout inference), views it as frames (B, T, *F), hands the frames to
an edit function and puts the result back into the output (tensor, tuple / list item, dict key or
dataclass field; PackedSequence data). Edits build new tensors (``torch.where``, matrix products),
never write into the module's own output, so they work under ``no_grad``, ``inference_mode`` and with
gradients. :class:`Edits` removes every hook on exit, also on exceptions.

Example::

    def silence(frames):                       # frames (B, T, F) -> same shape
        return frames * 0
    with Edits(model, {"encoder.layers.3": silence}):
        out = model(wave, lengths)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from neurohook.hooks.layers import find_layers
from neurohook.hooks.layouts import (LAYOUTS, OutputSelector, default_selector, from_frames, infer_layout,
                                     select_output, to_frames)

__all__ = ["Edits", "replace_output"]

FrameEdit = Callable[[Tensor], Tensor]  # frames (B, T, *F) -> frames of the same shape


def replace_output(out: Any, selector: OutputSelector, new: Any, layer: str) -> Any:
    """``out`` with the part ``selector`` picks (as :func:`select_output` does) replaced by ``new``."""
    if selector is None:
        if isinstance(out, (Tensor, PackedSequence)):
            return new
        selector = default_selector(out)
    if isinstance(selector, int) and isinstance(out, (tuple, list)):
        items = list(out)
        items[selector] = new
        return type(out)(items) if isinstance(out, list) or type(out) is tuple else type(out)(*items)
    if isinstance(selector, str) and isinstance(out, Mapping):
        edited = dict(out) if type(out) is dict else out.__class__(**{**out})
        edited[selector] = new
        return edited
    if isinstance(selector, str) and dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{selector: new})
    raise TypeError(f"layer {layer!r}: cannot put an edited tensor back into a {type(out).__name__} output "
                    f"with output selector {selector!r}; use an int, key or field name")


class Edits:
    """Forward hooks that edit the frames of chosen layers while the model runs; removed on exit.

    Example::

        with Edits(model, {"fc1": lambda f: f * 0}, layout={"fc1": "BD"}):
            logits = model(wave, lengths)

    Args:
        model: any ``nn.Module``.
        edits: ``{layer name: edit}``; an edit maps frames (B, T, *F) to frames of the same shape
            (or more rows, ``grow``).
        output: which part of each layer's output to edit (as the Recorder's ``output``).
        layout: ``{layer: layout}`` where it cannot be inferred (as the Recorder's overrides).
        conv2d_layout: the layout assumed for 2-D convolutions, as in the Recorder.
        grow: an edit may return more rows than it got (prefix sharing, :mod:`neurohook.branching`);
            packed sequences cannot grow.
    """

    def __init__(self, model: nn.Module, edits: Mapping[str, FrameEdit], *, output: OutputSelector = None,
                 layout: Mapping[str, str] | None = None, conv2d_layout: str = "BCFT", grow: bool = False) -> None:
        self.model, self.output, self.conv2d_layout, self.grow = model, output, conv2d_layout, grow
        self.layouts = dict(layout or {})
        self._modules = {name: find_layers(model, [name])[0][1] for name in edits}
        self._edits = dict(edits)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "Edits":
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            y = select_output(out, self.output, name)
            return replace_output(out, self.output, self._apply(name, module, y), name)
        return hook

    def _apply(self, name: str, module: nn.Module, y: Tensor | PackedSequence) -> Tensor | PackedSequence:
        """The edited tensor, in the layout it came in."""
        if isinstance(y, PackedSequence):  # packed rows are frames of one utterance-less batch
            if self.grow:
                raise RuntimeError(f"layer {name!r} outputs a PackedSequence: its batch cannot grow")
            data = self._edits[name](y.data[None])[0]
            return PackedSequence(data, y.batch_sizes, y.sorted_indices, y.unsorted_indices)
        layout = self.layouts.get(name) or infer_layout(module, y.dim(), self.conv2d_layout)
        if layout is None:
            raise ValueError(f"cannot infer the layout of layer {name!r} ({type(module).__name__}) with output shape "
                             f"{tuple(y.shape)}; pass layout={{{name!r}: ...}} with one of {LAYOUTS}")
        if y.dim() != len(layout):
            raise ValueError(f"layer {name!r}: layout {layout!r} does not fit output shape {tuple(y.shape)}")
        frames = to_frames(y, layout)
        edited = self._edits[name](frames)
        grown = self.grow and edited.shape[1:] == frames.shape[1:] and edited.shape[0] >= frames.shape[0]
        if edited.shape != frames.shape and not grown:
            raise ValueError(f"layer {name!r}: the edit returned shape {tuple(edited.shape)} for frames "
                             f"{tuple(frames.shape)}")
        return from_frames(edited, layout).contiguous()
