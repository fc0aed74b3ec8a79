"""Neuron ablation inside the running model: the channels behind chosen Features columns, zeroed or
set to their mean on every frame (:class:`Ablation`).

A column of :class:`neurohook.Features` names one unit of one layer and one statistic
(``Features.unit(column) -> (layer, unit, stat)``); the mean and the std column of a unit (statistics
pooling) name the same unit, and a unit named twice is ablated once. The edit runs on the same tensor
of the layer's output that the Recorder pooled (same output selector and layout), through
:mod:`neurohook.hooks.edit`.

Example::

    feats = rec.features()                                         # a Recorder run over the same layers
    with neurohook.Ablation(model, feats, neurons=order[:50], mode="mean"):
        logits = model(wave, lengths)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neurohook.features import Features
from neurohook.hooks.edit import Edits
from neurohook.hooks.layouts import OutputSelector

__all__ = ["Ablation", "layer_means", "replace_units", "unit_masks", "units_of"]

MODES = ("zero", "mean")


def units_of(features: Features, neurons: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """``{layer: sorted distinct unit indices}`` behind Features columns ``neurons``.

    Units are flat indices over the layer's unit shape (``LayerSpan.unit_shape``, e.g. (C, F) of a
    2-D convolution). ValueError names a column that is not one of the features'.
    """
    cols = np.asarray(neurons, dtype=np.int64).reshape(-1)
    D = features.shape[1]
    bad = cols[(cols < 0) | (cols >= D)]
    if len(bad):
        raise ValueError(f"neuron column {int(bad[0])} is not a column of these features ({D} columns, layers "
                         f"{', '.join(features.layer_names)}); were they recorded from this model?")
    out: dict[str, set[int]] = {}
    for c in cols.tolist():
        layer, unit, _ = features.unit(c)
        out.setdefault(layer, set()).add(unit)
    return {layer: np.array(sorted(units), dtype=np.int64) for layer, units in out.items()}


def unit_masks(features: Features, variants: Sequence[Sequence[int] | np.ndarray]) -> dict[str, np.ndarray]:
    """``{layer: (R, units) bool}`` for R column sets: row r marks the units behind ``variants[r]``."""
    spans = {s.name: s for s in features.layers}
    masks: dict[str, np.ndarray] = {}
    for r, cols in enumerate(variants):
        for layer, units in units_of(features, cols).items():
            masks.setdefault(layer, np.zeros((len(variants), spans[layer].units), dtype=bool))[r, units] = True
    return masks


def layer_means(features: Features) -> dict[str, np.ndarray]:
    """Per layer, each unit's mean activation over the features' utterances (from its "mean" columns):
    the reference values of ``mode="mean"`` (the mean of utterance means)."""
    out = {}
    for span in features.layers:
        if "mean" not in span.statistics and span.pooling != "none":
            continue
        first = 0 if span.pooling == "none" else span.statistics.index("mean") * span.units
        cols = np.arange(span.start + first, span.start + first + span.units)
        out[span.name] = np.asarray(features.values[:, cols], dtype=np.float64).mean(axis=0)
    return out


class Ablation:
    """Replace chosen units of chosen layers on every frame while the model runs; removed on exit.

    Example::

        with Ablation(model, feats, neurons=top_k, mode="zero"):   # or mode="mean"
            out = model(wave, lengths)

    Args:
        model: the model the features were recorded from.
        features: :class:`Features` of a Recorder run over (at least) the layers of ``neurons``.
        neurons: Features column indices (what :mod:`neurohook.ranking` returns).
        mode: ``"zero"``, or ``"mean"``: each unit's mean over a reference set.
        means: ``{layer: (units,) values}`` for ``mode="mean"``; default :func:`layer_means` of ``features``.
        masks: ``{layer: (R, units) bool}``: the batch holds R replicas of one batch (replica r = rows
            r*B .. (r+1)*B - 1) and replica r ablates the units its row marks (``neurons`` is then
            ignored); :func:`neurohook.intervene.ablation_curve` uses this for many variants in one forward.
        output, layout, conv2d_layout: as the Recorder's (which part of each output; layouts by layer,
            default the layouts the Recorder read, stored in the features' spans).
    """

    _grows = False  # whether an edit may add rows (neurohook.branching.Branches)

    def __init__(self, model: nn.Module, features: Features, neurons: Sequence[int] | np.ndarray = (), *,
                 mode: str = "zero", means: Mapping[str, Any] | None = None, masks: Mapping[str, Any] | None = None,
                 output: OutputSelector = None, layout: Mapping[str, str] | None = None,
                 conv2d_layout: str = "BCFT") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        spans = {s.name: s for s in features.layers}
        if masks is None:
            masks = unit_masks(features, [neurons])
        unknown = [name for name in masks if name not in spans]
        if unknown:
            raise ValueError(f"layer {unknown[0]!r} is not a layer of these features ({', '.join(spans)})")
        if mode == "mean":
            means = layer_means(features) if means is None else means
            missing = [name for name in masks if name not in means]
            if missing:
                raise ValueError(f"mode='mean': no mean activation for layer {missing[0]!r} (its features hold no "
                                 "'mean' statistic); pass means={layer: values}")
        self.masks = {k: torch.as_tensor(np.asarray(v, dtype=bool)) for k, v in masks.items()}
        self.values = {k: torch.as_tensor(np.asarray(means[k], dtype=np.float32)) if mode == "mean" else None
                       for k in masks}
        recorded = {k: spans[k].layout for k in masks if spans[k].layout not in ("", "packed")}
        self._edits = Edits(model, {k: self._edit(k) for k in masks}, output=output,
                            layout={**recorded, **(layout or {})}, conv2d_layout=conv2d_layout, grow=self._grows)

    def __enter__(self) -> "Ablation":
        self._edits.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._edits.remove()

    def _edit(self, layer: str):
        def edit(frames: Tensor) -> Tensor:
            mask = self.masks[layer].to(frames.device)
            R, U = mask.shape
            F = frames.shape[2:]
            if int(np.prod(F)) != U:
                raise ValueError(f"layer {layer!r}: output has {int(np.prod(F))} units per frame, the features "
                                 f"{U}; were the features recorded from this model and layer?")
            if frames.shape[0] % R:
                raise ValueError(f"layer {layer!r}: batch {frames.shape[0]} is not a multiple of {R} replicas")
            view = frames.unflatten(0, (R, frames.shape[0] // R))  # (R, B, T, *F)
            return replace_units(view, mask, self.values[layer]).flatten(0, 1)
        return edit


def replace_units(view: Tensor, mask: Tensor, value: Tensor | None) -> Tensor:
    """``view`` (R, B, T, *F) with the units ``mask`` (R, prod(F)) marks in replica r set to ``value``
    (prod(F),) or zero; a new tensor."""
    F = view.shape[3:]
    keep = ~mask.to(view.device).view(mask.shape[0], 1, 1, *F)
    fill = torch.zeros((), dtype=view.dtype, device=view.device) if value is None else \
        value.to(view.device, view.dtype).view(1, 1, 1, *F)
    return torch.where(keep, view, fill)
