"""Many ablation variants of one batch in one forward, sharing the computation before each variant's
first edited layer (:class:`Branches`).

The model gets the batch once. The trunk (no edit) runs as usual; at the first layer whose output a
variant edits, the trunk's rows are copied for that variant and its units replaced, and from there on
the batch holds one block of rows per variant that has branched, beside the trunk. A variant that
edits only late layers thus costs only the layers after them: an ablation curve over one layer's
neurons costs about one plain pass plus (variants x) the layers above it. Variants that edit nothing
stay on the trunk.

This needs every tensor that meets the edited layers' outputs downstream to be derived from them or
broadcastable over the blocks (one utterance per forward: the model's own (1,) lengths or masks
broadcast). Where a model does something else (a parallel branch, packed sequences) the row counts
disagree and :class:`BranchError` (or the model's own shape error) says so;
:func:`neurohook.intervene.ablation_curve` then replicates the input instead, and it checks on its
first batch that both ways give the same outputs.

Example::

    with Branches(model, feats, masks=masks) as br:   # masks {layer: (R, units) bool}, from unit_masks
        br.start(batch=1)
        out = model(wave, lengths)                    # (blocks x batch, C)
        per_variant = br.split(out)                   # R tensors (batch, C)
"""

from __future__ import annotations

import torch
from torch import Tensor

from neurohook.ablate import Ablation, replace_units

__all__ = ["BranchError", "Branches"]


class BranchError(RuntimeError):
    """A model's forward does not fit prefix sharing (rows of an edited layer or output do not match)."""


class Branches(Ablation):
    """:class:`neurohook.Ablation` of R variants (``masks`` rows) that fork from the unedited trunk at
    their first edited layer; the model gets one copy of the batch. Arguments as :class:`Ablation`'s
    (``masks`` required); call :meth:`start` before each forward and :meth:`split` on its output."""

    _grows = True

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("masks") is None:
            raise ValueError("Branches needs masks={layer: (R, units) bool}")
        super().__init__(*args, **kwargs)
        self.R = next(iter(self.masks.values())).shape[0] if self.masks else 0
        self.start(1)

    def start(self, batch: int) -> None:
        """Before each forward: the model gets ``batch`` rows (one copy of the batch), all on the trunk."""
        self.blocks: list[int] = [-1]  # the variant of each block of rows; -1: the trunk
        self.batch = int(batch)

    def split(self, out: Tensor) -> list[Tensor]:
        """Each variant's rows (batch, ...) of a forward's output (blocks x batch, ...)."""
        if out.shape[0] != len(self.blocks) * self.batch:
            raise BranchError(f"the output has {out.shape[0]} rows, the branches {len(self.blocks)} x {self.batch}")
        view = out.unflatten(0, (len(self.blocks), self.batch))
        where = {v: i for i, v in enumerate(self.blocks)}
        return [view[where.get(r, where[-1])] for r in range(self.R)]

    def _edit(self, layer: str):
        def edit(frames: Tensor) -> Tensor:
            mask = self.masks[layer]
            G, B = len(self.blocks), self.batch
            if frames.shape[0] != G * B:
                raise BranchError(f"layer {layer!r} got {frames.shape[0]} rows, the branches hold {G} x {B}: its "
                                  "input is not (only) the output of the edited layers before it")
            if frames[0, 0].numel() != mask.shape[1]:
                raise ValueError(f"layer {layer!r}: output has {frames[0, 0].numel()} units per frame, the "
                                 f"features {mask.shape[1]}; were the features recorded from this model and layer?")
            view = frames.unflatten(0, (G, B))  # (blocks, B, T, *F)
            branched = set(self.blocks)
            new = [r for r in torch.nonzero(mask.any(dim=1)).flatten().tolist() if r not in branched]
            if new:
                trunk = self.blocks.index(-1)
                view = torch.cat([view, view[trunk : trunk + 1].expand(len(new), *view.shape[1:])])
                self.blocks += new
            rows = torch.zeros((len(self.blocks), mask.shape[1]), dtype=torch.bool)
            own = [i for i, v in enumerate(self.blocks) if v >= 0]
            rows[own] = mask[[self.blocks[i] for i in own]]
            return replace_units(view, rows, self.values[layer]).flatten(0, 1)
        return edit
