"""How each chosen layer is recorded (pooling, output selection, layout, lengths) and per-layer overrides.

Example::

    specs = layer_specs(find_layers(model, "conv*"), "mean")
    apply_overrides(specs, {"conv1": {"pooling": "stats", "layout": "BDT"}})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from neurohook.hooks.layers import LayerNotFoundError, _close_matches, matches
from neurohook.hooks.layouts import LAYOUTS, OutputSelector
from neurohook.pooling import check_pooling

__all__ = ["OVERRIDE_KEYS", "LayerSpec", "apply_overrides", "layer_specs"]

#: Options an override may set for the layers it selects.
OVERRIDE_KEYS = frozenset({"pooling", "output", "layout", "lengths"})


@dataclass
class LayerSpec:
    """How one chosen layer is recorded (None: the output's first tensor; the layout inferred; lengths traced)."""

    name: str
    module: nn.Module
    pooling: str
    output: OutputSelector = None
    layout: str | None = None
    lengths_fn: Callable[[Tensor], Tensor] | None = None


def layer_specs(layers: Sequence[tuple[str, nn.Module]], pooling: str, output: OutputSelector = None,
                layout: str | None = None) -> list[LayerSpec]:
    """One :class:`LayerSpec` per (name, module) pair, all with the same options."""
    return [LayerSpec(name, module, pooling, output, layout) for name, module in layers]


def apply_overrides(specs: Sequence[LayerSpec], overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Set per-layer options in place; every key (a name or glob pattern) must select at least one layer."""
    names = [s.name for s in specs]
    for key, opts in overrides.items():
        unknown = set(opts) - OVERRIDE_KEYS
        if unknown:
            raise ValueError(f"override {key!r}: unknown options {sorted(unknown)}; use {sorted(OVERRIDE_KEYS)}")
        hits = [s for s in specs if matches(key, s.name)]
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
