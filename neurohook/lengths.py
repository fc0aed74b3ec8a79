"""Length arithmetic of padded batches, in one place: valid lengths checked, masks, convolutions.

Every function takes and returns ``lengths`` (B,) int64: the valid (unpadded) steps of each item of
a batch padded at the end. :func:`conv_out_lengths` is the one formula for what a convolution or
pooling window does to them; the Recorder, the paper's CNN and the torchaudio adapters all use it.

Example::

    lengths = as_lengths([16000, 8000])                    # tensor([16000, 8000])
    frames = conv_out_lengths(lengths, kernel=400, stride=320)  # tensor([49, 24])
    mask = frame_mask(frames, 49)                          # (2, 49) bool, True at valid frames
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["as_lengths", "conv_out_lengths", "frame_mask", "full_lengths", "mask_lengths", "module_out_lengths"]


def as_lengths(lengths: Any, what: str = "lengths") -> Tensor:
    """Valid lengths (B,) as int64 on their device; ValueError for fractional or negative values.

    Floats are accepted only when they hold whole numbers (``20.0``); ``20.7`` is an error, not 20.
    """
    t = lengths if isinstance(lengths, Tensor) else torch.as_tensor(np.asarray(lengths))
    t = t.detach().reshape(-1)
    if t.is_floating_point():
        bad = t[t != torch.round(t)]
        if bad.numel():
            raise ValueError(f"{what} must be whole numbers of steps, got {bad[:3].tolist()}")
    elif t.dtype == torch.bool:
        raise ValueError(f"{what} must be integer counts, got a bool tensor (a mask? use padding_mask=)")
    t = t.to(torch.int64)
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{what} must be non-negative, got {t[t < 0][:3].tolist()}")
    return t


def conv_out_lengths(lengths: Tensor, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> Tensor:
    """Valid output steps (B,) of a convolution or pooling window: ``(n + 2p - d(k - 1) - 1) // s + 1``, >= 0."""
    span = lengths + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -torch.div(-span, stride, rounding_mode="floor") + 1
    else:
        out = torch.div(span, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)


def _pair(v: Any, i: int) -> Any:
    """Element i of a per-dimension argument (ints apply to every dimension)."""
    return v[i] if isinstance(v, (tuple, list)) else v


def module_out_lengths(module: nn.Module, lengths: Tensor, dim: int, t_out: int) -> Tensor:
    """Valid output steps (B,) of a torch conv/pool ``module`` along its spatial dim ``dim`` (at most t_out)."""
    kernel = _pair(module.kernel_size, dim)
    padding = getattr(module, "padding", 0)
    if padding == "same":
        return lengths.clamp(max=t_out)
    out = conv_out_lengths(lengths, kernel, _pair(module.stride, dim) or kernel,  # pools: stride None = kernel
                           0 if padding == "valid" else _pair(padding, dim), _pair(getattr(module, "dilation", 1), dim),
                           bool(getattr(module, "ceil_mode", False)))
    return out.clamp(max=t_out)


def mask_lengths(padding_mask: Tensor, batch: int, *, attention: bool = False) -> Tensor:
    """Valid steps (B,) of a padding mask (B, T) that is True at padded steps, all at the end.

    ``attention=True``: the mask is a Hugging Face ``attention_mask``, 1/True at valid steps instead.
    """
    what = "attention_mask" if attention else "padding_mask"
    if padding_mask.dim() != 2 or padding_mask.shape[0] != batch:
        raise ValueError(f"{what} must be (B={batch}, T), got {tuple(padding_mask.shape)}")
    pad = padding_mask.detach().to("cpu").bool()
    pad = ~pad if attention else pad
    lengths = (~pad).sum(dim=1)
    expected = torch.arange(pad.shape[1])[None, :] >= lengths[:, None]
    if not torch.equal(pad, expected) or bool((lengths == 0).any()):
        if attention:
            raise ValueError("attention_mask must be 1 at valid steps, all at the start of each row, with at least "
                             "one valid step")
        raise ValueError(
            "padding_mask must be True at padded steps, all at the end of each row, with at least one valid step "
            "(this one is not: is it a Hugging Face attention_mask, True/1 at valid steps? pass "
            "rec.batch(ids, attention_mask=mask))")
    return lengths


def batch_lengths(batch: int, lengths: Any = None, padding_mask: Tensor | None = None,
                  attention_mask: Tensor | None = None, padded_length: int | None = None) -> tuple[Tensor | None, int | None]:
    """Valid input steps (B,) int64 on the CPU of a batch of ``batch`` items, from at most one of ``lengths``,
    ``padding_mask`` (B, T) and ``attention_mask`` (B, T) (None: every step valid), and the padded length
    (``padded_length``, else a mask's T). ValueError for a second source or lengths that do not fit."""
    masks = [(m, a) for m, a in ((padding_mask, False), (attention_mask, True)) if m is not None]
    if len(masks) + (lengths is not None) > 1:
        raise ValueError("pass one of lengths, padding_mask and attention_mask")
    if masks:
        mask, attention = masks[0]
        lengths = mask_lengths(mask, batch, attention=attention)
        padded_length = mask.shape[1] if padded_length is None else padded_length
    if lengths is None:
        return None, padded_length
    lens = as_lengths(lengths).to("cpu")
    if lens.numel() != batch:
        raise ValueError(f"{lens.numel()} lengths for {batch} ids")
    if padded_length is not None and int(lens.max()) > padded_length:
        raise ValueError(f"a length {int(lens.max())} exceeds padded_length {padded_length}")
    return lens, padded_length


def full_lengths(waves: Tensor, lengths: Tensor | None) -> Tensor:
    """Valid samples (B,) int64: ``lengths`` checked against waves (B, T), or T for every item."""
    if waves.dim() != 2:
        raise ValueError(f"expected waveforms (B, samples), got shape {tuple(waves.shape)}")
    if lengths is None:
        return torch.full((waves.shape[0],), waves.shape[1], dtype=torch.int64, device=waves.device)
    lengths = as_lengths(lengths).to(waves.device)
    if lengths.numel() != waves.shape[0]:
        raise ValueError(f"{lengths.numel()} lengths for a batch of {waves.shape[0]} waveforms")
    if bool((lengths > waves.shape[1]).any()) or bool((lengths < 1).any()):
        raise ValueError(f"lengths must be in [1, {waves.shape[1]}], got {lengths.tolist()}")
    return lengths


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """(B, frames) bool, True at valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
