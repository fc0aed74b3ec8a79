"""Candidate layers of any model from one dry run: names, classes, output shapes, layouts, parameters.

Example::

    print(neurohook.models.describe(model, (wave, lengths)))          # a table, one row per module
    print(neurohook.models.describe(hf_model, {"input_values": wave, "attention_mask": mask}))
    [i.name for i in neurohook.models.describe(model, wave) if i.layout == "BTD"]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LayerInfo", "LayerTable", "describe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerInfo:
    """One module seen in a dry run: name, class, output shape(s), the layout the Recorder would infer
    for it ("" when it cannot: pass ``overrides={name: {"layout": ...}}``) and parameter count."""

    name: str
    type: str
    output_shape: tuple[Any, ...]
    params: int
    layout: str = ""

    def __str__(self) -> str:
        return f"{self.name:<44} {self.type:<30} {_shape_text(self.output_shape):<26} {self.layout or '?':<6} {self.params:>11,}"


class LayerTable(list):
    """The :class:`LayerInfo` rows of :func:`describe`; ``str()`` / ``print`` gives an aligned table."""

    def __str__(self) -> str:
        head = f"{'layer':<44} {'type':<30} {'output shape':<26} {'layout':<6} {'parameters':>11}"
        return "\n".join([head, "-" * len(head), *map(str, self)])


def _shape_text(shape: Any) -> str:
    return str(shape).replace(" ", "")


def _shapes(out: Any) -> Any:
    """Shapes of the tensors in a module output (nested tuples/lists/dicts/model outputs)."""
    if isinstance(out, Tensor):
        return tuple(out.shape)
    if isinstance(out, nn.utils.rnn.PackedSequence):
        return ("packed", tuple(out.data.shape))
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, Mapping):
        return tuple((k, _shapes(v)) for k, v in out.items())
    return (type(out).__name__,)


def _layout(module: nn.Module, out: Any) -> str:
    """The layout the Recorder would infer for the tensor it reads of ``out``."""
    from neurohook.hooks.layouts import infer_layout, select_output

    try:
        y = select_output(out, None, "?")
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return ""
    if not isinstance(y, Tensor):
        return "packed" if isinstance(y, nn.utils.rnn.PackedSequence) else ""
    return infer_layout(module, y.dim()) or ""


def describe(model: nn.Module, example_input: Tensor | tuple[Any, ...] | Mapping[str, Any], *,
             leaves: bool = False) -> LayerTable:
    """Candidate layers of ``model`` with output shapes from one dry run (no grad, eval mode restored).

    ``example_input`` is the input tensor, a tuple of positional arguments (e.g. ``(wave, lengths)``)
    or a dict of keyword arguments (``{"input_values": wave, "attention_mask": mask}``);
    ``leaves=True`` also lists modules without children (activations, norms, ...).
    """
    if isinstance(example_input, Mapping):
        args, kwargs = (), dict(example_input)
    else:
        args, kwargs = (example_input if isinstance(example_input, tuple) else (example_input,)), {}
    seen: dict[str, LayerInfo] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue
        is_leaf = not any(True for _ in mod.children())
        if is_leaf and not leaves and not isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.RNNBase, nn.MultiheadAttention)):
            continue

        def hook(m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
            if name not in seen:
                seen[name] = LayerInfo(name, type(m).__name__, _shapes(out), sum(p.numel() for p in m.parameters()),
                                       _layout(m, out))

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    infos = LayerTable(seen[n] for n, _ in model.named_modules() if n in seen)
    logger.info("describe: %d of %d modules ran", len(infos), sum(1 for _ in model.named_modules()) - 1)
    return infos
