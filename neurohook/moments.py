"""Per-item moments of frame activations over time: count, mean, M2 (summed squared deviations), max, min.

The arithmetic under :mod:`neurohook.pooling`: :func:`batch_moments` reduces a batch of frames
(B, T, *F) over each item's valid frames, by the compiled kernel on CPU float32 frames and by tensor
operations elsewhere (CUDA, half precision, other strides), both by the corrected two-pass algorithm;
:func:`merge_moments` merges two partial results exactly (Chan et al.'s parallel update), so chunked
or streaming inference gives the result of one pass.

Example::

    m = batch_moments(frames, lengths)            # frames (B, T, D), lengths (B,)
    m.mean.shape, m.m2.shape                       # (B, D), (B, D)
    both = merge_moments(m, batch_moments(more_frames, more_lengths))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurohook.ranking import _core  # the checked import of the compiled core

__all__ = ["BatchMoments", "batch_moments", "merge_moments"]

#: Largest number of activation elements reduced at once (bounds transient memory: 16 MB of float32
#: deviations). 4 M rather than 1 M: a (8, 400, 1000) conv output pools in 1.9 instead of 4.1 ms, and the
#: recorder's extra peak on wav2vec2-base stays 0 B at 120 s (benchmarks/bench_pooling.py).
DEFAULT_CHUNK_ELEMENTS: int = 1 << 22

@dataclass
class BatchMoments:
    """Per-item partial statistics: count (B,) int64; mean/m2/max/min (B, *F) or None."""

    count: Tensor
    mean: Tensor | None = None
    m2: Tensor | None = None
    max: Tensor | None = None
    min: Tensor | None = None


def _time_mask(lengths: Tensor, start: int, stop: int, n_feature_dims: int) -> Tensor:
    """Valid-frame mask (B, stop - start, 1, ..., 1) for frames ``start:stop``."""
    steps = torch.arange(start, stop, device=lengths.device)
    mask = steps[None, :] < lengths[:, None]
    return mask.reshape(mask.shape + (1,) * n_feature_dims)


def _chunk_moments(xc: Tensor, need_m2: bool, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Count (B,), mean and M2 over axis 1 of xc (B, n, *F), only where ``mask`` (B, n, 1, ...) holds,
    by the corrected two-pass algorithm (Chan, Golub & LeVeque 1983): deviations from the float32
    mean, their sum corrects the mean and M2. As accurate as Welford's update for offset data (mean
    1e4: relative error 1e-7), 4-5x faster than ``torch.var_mean`` on CPU (a (8, 350, 1000) conv
    output: 2.0 vs 9.2 ms). Items without a valid frame get count 0 (mean 0, M2 0)."""
    if mask is None:
        n = torch.full((xc.shape[0],), xc.shape[1], dtype=torch.int64, device=xc.device)
        mean = xc.mean(dim=1, keepdim=True)
    else:
        n = mask.reshape(mask.shape[0], -1).sum(dim=1)
        xc = torch.where(mask, xc, torch.zeros((), dtype=xc.dtype, device=xc.device))
        mean = xc.sum(dim=1, keepdim=True) / n.clamp(min=1).to(xc.dtype).reshape((-1,) + (1,) * (xc.dim() - 1))
    if not need_m2:
        return n, mean.squeeze(1), None
    dev = xc - mean
    if mask is not None:
        dev = dev.mul_(mask)
    shift = dev.sum(dim=1)
    size = n.clamp(min=1).to(xc.dtype).reshape((-1,) + (1,) * (shift.dim() - 1))
    m2 = (dev.square_().sum(dim=1) - shift.square() / size).clamp_(min=0.0)
    return n, mean.squeeze(1) + shift / size, m2


def _moments(x: Tensor, start: int, stop: int, step: int, dtype: torch.dtype, need_m2: bool,
             count: Tensor | None = None) -> BatchMoments:
    """Count, mean and M2 over frames [start, stop) of every item of x (B, T, *F), frames past
    ``count`` (B,) left out (None: all valid), ``step`` frames at a time: each chunk by the corrected
    two-pass algorithm (:func:`_chunk_moments`), the chunks merged exactly (:func:`merge_moments`)."""
    acc: BatchMoments | None = None
    for a in range(start, stop, step):
        b = min(stop, a + step)
        mask = None if count is None else _time_mask(count, a, b, x.dim() - 2)
        part = BatchMoments(*_chunk_moments(x[:, a:b].to(dtype), need_m2, mask))
        acc = part if acc is None else merge_moments(acc, part)  # the first chunk is the start (no merge)
    if acc is None:  # no frames: the identity
        shape = (x.shape[0],) + tuple(x.shape[2:])
        acc = BatchMoments(count=torch.zeros(x.shape[0], dtype=torch.int64, device=x.device),
                           mean=torch.zeros(shape, dtype=dtype, device=x.device),
                           m2=torch.zeros(shape, dtype=dtype, device=x.device) if need_m2 else None)
    return acc


def _flat_frames(x: Tensor) -> Tensor | None:
    """CPU float32 frames x (B, T, *F) viewed as (B, T, prod(F)), never copied; None where x is on
    another device or of another dtype, or its units cannot be flattened without a copy."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    try:
        return (x.detach() if x.requires_grad else x).view(x.shape[0], x.shape[1], -1)
    except RuntimeError:
        return None


def _compiled_moments(x: Tensor, count: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and M2 (B, prod(F)) float64 of CPU float32 frames x (B, T, *F), the first ``count`` (B,) int64
    frames of each item, by the compiled kernel (``neurohook._core.frame_moments``: each value read once
    from memory, the corrected two-pass algorithm per unit, float32 sums over blocks of 128 frames added
    in float64), or None where it does not apply (another device or dtype; neither time nor the
    flattened units at unit stride). On sre-cnn's conv outputs (B, C, T) it replaces six tensor passes
    (benchmarks/bench_extract.py). One thread: a layer's output is pooled right after the layer ran,
    while torch's own OpenMP threads still spin, and a second kernel thread gained nothing there (a
    (8, 1000, 400) conv output read right after the conv: 2.6-2.9 ms with 1 or 2 threads before the
    kernel prefetched the row ahead, 2.0-2.3 ms with it; torch's own sum and sum of squares of the
    same data took about as long, its per-item ``var_mean`` 4x longer)."""
    flat = _flat_frames(x)
    if flat is None:
        return None
    frames, units = flat.shape[1], flat.shape[2]
    if not (frames <= 1 or units <= 1 or 1 in flat.stride()[1:]):
        return None
    return _core.frame_moments(flat.numpy(), np.asarray(count, dtype=np.int64), 1)  # one thread: see above


def batch_moments(
    x: Tensor,
    lengths: Tensor | None,
    *,
    need_m2: bool = True,
    need_max: bool = False,
    need_min: bool = False,
    need_mean: bool = True,
    dtype: torch.dtype = torch.float32,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> BatchMoments:
    """Masked count/mean/M2/max/min over time of frames x (B, T, *F); lengths (B,) or None (all valid).

    Mean and M2 by the corrected two-pass algorithm, so large activation offsets (e.g. mean 1e4) keep
    full relative accuracy. CPU float32 frames go to the compiled kernel (:func:`_compiled_moments`:
    no transient copy). Elsewhere (CUDA, half precision, other strides) tensor operations
    (:func:`_chunk_moments`) reduce the frames every item has without a mask and mask only the frames
    past the shortest item's length, merged exactly, ``chunk_elements`` elements at a time (their
    deviations and any conversion to ``dtype`` are the only transient copies), so transient memory does
    not grow with T.
    """
    if x.dim() < 2:
        raise ValueError(f"expected frames of shape (B, T, *F), got {tuple(x.shape)}")
    batch, frames = x.shape[0], x.shape[1]
    feat_shape = tuple(x.shape[2:])
    n_feat = len(feat_shape)
    device = x.device
    if lengths is None:
        count = torch.full((batch,), frames, dtype=torch.int64, device=device)
    else:
        count = lengths.to(device=device, dtype=torch.int64).clamp(0, frames)
    per_frame = max(1, batch * math.prod(feat_shape))
    step = max(1, chunk_elements // per_frame)
    out = BatchMoments(count=count)
    compiled = None
    if (need_mean or need_m2) and not (need_max or need_min) and dtype in (torch.float32, torch.float64):
        compiled = _compiled_moments(x, count)
    if compiled is not None:
        shape = (batch,) + feat_shape
        out.mean = torch.from_numpy(compiled[0]).to(dtype).reshape(shape)
        out.m2 = torch.from_numpy(compiled[1]).to(dtype).reshape(shape) if need_m2 else None
        return out
    masked = lengths is not None and bool((count < frames).any())

    def chunk(start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        """Frames start:stop in dtype, and their mask (or None when every frame is valid)."""
        xc = x[:, start:stop].to(dtype)
        return xc, (_time_mask(count, start, stop, n_feat) if masked else None)

    if need_mean or need_m2:
        lo = int(count.min()) if masked else frames  # every item has frames [0, lo)
        # chunks of ``step`` frames bound the transient copies (deviations; conversion to dtype)
        acc = _moments(x, 0, lo, step, dtype, need_m2)
        hi = int(count.max()) if masked else frames
        if hi > lo:  # the longer items' frames [lo, count): masked, all items at once
            acc = merge_moments(acc, _moments(x, lo, hi, step, dtype, need_m2, count))
        out.mean, out.m2 = acc.mean, acc.m2
    for name, needed, fill, reduce in (
        ("max", need_max, -math.inf, torch.amax),
        ("min", need_min, math.inf, torch.amin),
    ):
        if not needed:
            continue
        best = torch.full((batch,) + feat_shape, fill, dtype=dtype, device=device)
        for start in range(0, frames, step):
            xc, mask = chunk(start, min(frames, start + step))
            if mask is not None:
                xc = torch.where(mask, xc, torch.full((), fill, dtype=dtype, device=device))
            best = torch.maximum(best, reduce(xc, dim=1)) if name == "max" else torch.minimum(
                best, reduce(xc, dim=1)
            )
        setattr(out, name, best)
    return out


def merge_moments(a: BatchMoments, b: BatchMoments) -> BatchMoments:
    """Exact merge of two partial results for the same items (Chan's parallel update)."""
    count = a.count + b.count
    out = BatchMoments(count=count)
    if a.mean is not None and b.mean is not None:
        dtype = a.mean.dtype
        shape = (count.shape[0],) + (1,) * (a.mean.dim() - 1)
        n_a = a.count.to(dtype).reshape(shape)
        n = count.to(dtype).reshape(shape)
        weight_b = torch.where(n > 0, b.count.to(dtype).reshape(shape) / n.clamp(min=1), 0.0)
        delta = b.mean - a.mean
        out.mean = a.mean + delta * weight_b
        if a.m2 is not None and b.m2 is not None:
            out.m2 = a.m2 + b.m2 + delta.square() * (n_a * weight_b)
    if a.max is not None and b.max is not None:
        out.max = torch.maximum(a.max, b.max)
    if a.min is not None and b.min is not None:
        out.min = torch.minimum(a.min, b.min)
    return out
