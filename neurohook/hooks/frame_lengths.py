"""Valid frames of each layer in one forward call, followed from the model input's valid lengths.

A table maps a padded time length to the valid lengths (B,) of tensors that long: it starts with the
model input's, and every conv / pool module on the way adds its output's (its kernel, stride, padding
and dilation applied to the valid lengths); a layer then looks up its own time length.

Example::

    table = {input_time_length(wave, lengths): lengths}   # wave (B, samples), lengths (B,)
    trace_lengths(conv, conv_input, conv_output, table)   # in the conv's forward hook
    table[conv_output.shape[-1]]                          # valid frames (B,) of the conv output
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neurohook.hooks.layouts import TIME_MODULES_1D
from neurohook.lengths import module_out_lengths

__all__ = ["input_time_length", "override_lengths", "scaled_lengths", "table_lengths", "trace_lengths"]


def input_time_length(x: Tensor, lengths: Tensor, time_axis: int | None = None) -> int:
    """Padded time length of a model input x: axis ``time_axis``, else axis 1 of a 2-D input, else the one
    axis whose size equals the longest of ``lengths`` (B,) (ValueError when none or several do)."""
    if time_axis is not None:
        return int(x.shape[time_axis])
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


def trace_lengths(module: nn.Module, x: Tensor, output: Tensor, table: dict[int, Tensor],
                  conv2d_layout: str = "BCFT") -> None:
    """Add the valid lengths of a conv / pool ``module``'s output to ``table`` where its input's are known.

    1-D modules work on the last axis; 2-D ones on the time axis of ``conv2d_layout`` ("BCFT": the
    last) and, failing that, on the other spatial axis.
    """
    if isinstance(module, TIME_MODULES_1D):
        axes = [(-1, 0)]
    else:
        pref = [(-1, 1), (-2, 0)]
        axes = pref if conv2d_layout == "BCFT" else pref[::-1]
    for axis, dim in axes:
        t_in = int(x.shape[axis])
        if t_in in table:
            t_out = int(output.shape[axis])
            with torch.no_grad():
                table[t_out] = module_out_lengths(module, table[t_in], dim, t_out)
            return


def scaled_lengths(table: dict[int, Tensor], frames: int) -> Tensor:
    """Valid frames (B,) of a tensor ``frames`` long that no exact arithmetic reached: the input's valid
    lengths (the table's first entry) scaled by frames / padded length, at least 1 where the input has any."""
    t0, lens0 = next(iter(table.items()))
    scaled = torch.round(lens0.to(torch.float64) * frames / max(t0, 1)).to(torch.int64)
    return torch.where(lens0 > 0, scaled.clamp(min=1), scaled).clamp(max=frames)


def override_lengths(fn: Callable[[Tensor], Any], lengths: Tensor) -> tuple[Tensor, int, int, np.ndarray | None]:
    """A layer's valid frames from its ``lengths`` override ``fn`` for valid input steps (B,), found once
    per forward: (frames (B,) int64, their min, their max, the same as a NumPy array or None off the CPU)."""
    n = torch.as_tensor(fn(lengths)).to(torch.int64)
    lo, hi = (int(n.min()), int(n.max())) if n.numel() else (0, 0)
    return n, lo, hi, n.numpy() if n.is_cpu else None


def table_lengths(table: dict[int, Tensor] | None, frames: int, layer: str, warned: set[str]) -> Tensor:
    """Valid frames (B,) of ``layer``'s output ``frames`` long: the table's entry where the length
    arithmetic reached it, else the input's lengths scaled (a RuntimeWarning once per layer in ``warned``)."""
    if table is None:
        raise ValueError(
            f"layer {layer!r}: the padded input length is unknown (the model's forward was not "
            "called); pass rec.batch(padded_length=...)"
        )
    if frames in table:
        return table[frames].clamp(max=frames)
    if layer not in warned:
        warned.add(layer)
        warnings.warn(
            f"neurohook: no exact length arithmetic reaches layer {layer!r} ({frames} frames); "
            f"scaling input lengths proportionally (pass overrides={{{layer!r}: {{'lengths': fn}}}})",
            RuntimeWarning,
            stacklevel=5,
        )
    return scaled_lengths(table, frames)
