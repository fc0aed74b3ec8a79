"""Streaming, padding-aware statistical pooling of frame-level activations.

Statistics are kept per utterance on the activations' own device (CPU or CUDA) and merged exactly
across forward calls (Chan et al.'s parallel form of Welford's update), so chunked or streaming
inference gives the same result as one pass over the whole utterance. Frames are never stored.

Conventions: a frame tensor is ``(B, T, *F)`` with time on axis 1 and the neuron axes ``F`` after
it; ``lengths`` ``(B,)`` counts the valid (unpadded) frames at the start of each item. Pooled
outputs flatten ``F`` in C order, so a ``(C, F)`` map gives unit ``c * F + f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import torch
from torch import Tensor

from neurohook.ranking import _core  # the checked import of the compiled core

__all__ = [
    "POOLINGS",
    "STATISTICS",
    "RunningPool",
    "BatchMoments",
    "batch_moments",
    "merge_moments",
    "pool_frames",
]

#: Pooling modes accepted by :class:`RunningPool`; ``"none"`` is the pass-through of (B, D) outputs.
POOLINGS: tuple[str, ...] = ("mean", "std", "stats", "max", "min", "none")

#: Statistics each pooling mode produces, in output order (each block has the layer's width).
STATISTICS: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "std": ("std",),
    "stats": ("mean", "std"),
    "max": ("max",),
    "min": ("min",),
    "none": ("value",),
}

#: Largest number of activation elements reduced at once (bounds transient memory: 16 MB of float32
#: deviations). 4 M rather than 1 M: a (8, 400, 1000) conv output pools in 1.9 instead of 4.1 ms, and the
#: recorder's extra peak on wav2vec2-base stays 0 B at 120 s (benchmarks/bench_pooling.py).
DEFAULT_CHUNK_ELEMENTS: int = 1 << 22


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is a known mode, else raise ValueError listing the modes."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    return pooling


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


def _compiled_moments(x: Tensor, count: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and M2 (B, prod(F)) float64 of CPU float32 frames x (B, T, *F), the first ``count`` (B,) int64
    frames of each item, by the compiled kernel (``neurohook._core.frame_moments``: each value read once
    from memory, the corrected two-pass algorithm per unit, float32 sums over blocks of 128 frames added
    in float64), or None where it does not apply (another device or dtype; neither time nor the
    flattened units at unit stride). On sre-cnn's conv outputs (B, C, T) it replaces six tensor passes
    (benchmarks/bench_extract.py). One thread: a layer's output is pooled right after the layer ran,
    while torch's own threads still spin, and a second kernel thread gained nothing there (2.5 ms for a
    (8, 1000, 397) conv output with 1 or 2 threads; the same data read by torch's sum and sum of
    squares: 2.6 ms)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    try:
        flat = (x.detach() if x.requires_grad else x).view(x.shape[0], x.shape[1], -1)  # units flattened, never copied
    except RuntimeError:
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


def finalize(m: BatchMoments, pooling: str, *, unbiased: bool = False) -> Tensor:
    """Pooled values (B, S * prod(F)) from moments; S = number of statistics of ``pooling``."""
    blocks: list[Tensor] = []
    for stat in STATISTICS[pooling]:
        if stat in ("mean", "value"):
            blocks.append(m.mean)
        elif stat == "std":
            shape = (m.count.shape[0],) + (1,) * (m.m2.dim() - 1)
            dof = (m.count - 1 if unbiased else m.count).clamp(min=1).to(m.m2.dtype).reshape(shape)
            var = (m.m2 / dof).clamp(min=0.0)
            if unbiased:  # one frame: no spread to estimate; report 0 rather than NaN
                var = torch.where(m.count.reshape(shape) > 1, var, torch.zeros_like(var))
            blocks.append(var.sqrt())
        else:
            blocks.append(getattr(m, stat))
    return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)


def pool_frames(
    x: Tensor,
    lengths: Tensor | None = None,
    pooling: str = "mean",
    *,
    unbiased: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One-shot pooling of frames x (B, T, *F) with valid lengths (B,) -> (B, S * prod(F))."""
    check_pooling(pooling)
    if pooling == "none":
        raise ValueError("pooling 'none' is for (B, D) utterance-level outputs, not frames")
    m = batch_moments(
        x,
        lengths,
        need_mean=pooling in ("mean", "std", "stats"),
        need_m2=pooling in ("std", "stats"),
        need_max=pooling == "max",
        need_min=pooling == "min",
        dtype=dtype,
    )
    return finalize(m, pooling, unbiased=unbiased)


class RunningPool:
    """Running per-utterance statistics of one layer, kept on the device of the first activations.

    Rows are addressed by integer slots (the caller maps utterance ids to slots). Example::

        pool = RunningPool("stats")
        pool.update(frames, lengths, slots)        # frames (B, T, D), lengths (B,), slots (B,)
        values = pool.result(n_rows)               # (n_rows, 2 * D) float32 on CPU
    """

    def __init__(
        self,
        pooling: str = "mean",
        *,
        unbiased: bool = False,
        dtype: torch.dtype = torch.float32,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        """Create an empty pool; ``dtype`` (float32 or float64) is the accumulation precision."""
        self.pooling = check_pooling(pooling)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"accumulation dtype must be torch.float32 or torch.float64, got {dtype}")
        self.unbiased = unbiased
        self.dtype = dtype
        self.chunk_elements = chunk_elements
        self.feature_shape: tuple[int, ...] | None = None
        self.device: torch.device | None = None
        self._state: BatchMoments | None = None

    @property
    def statistics(self) -> tuple[str, ...]:
        """Names of the statistic blocks in output order."""
        return STATISTICS[self.pooling]

    @property
    def width(self) -> int:
        """Neurons per statistic block (prod of the feature shape); 0 before the first update."""
        return 0 if self.feature_shape is None else math.prod(self.feature_shape)

    @property
    def capacity(self) -> int:
        """Number of slots currently allocated."""
        return 0 if self._state is None else int(self._state.count.shape[0])

    def _needs(self) -> dict[str, bool]:
        """Which moments this pooling mode keeps."""
        p = self.pooling
        return {
            "need_mean": p in ("mean", "std", "stats", "none"),
            "need_m2": p in ("std", "stats"),
            "need_max": p == "max",
            "need_min": p == "min",
        }

    def _empty(self, rows: int) -> BatchMoments:
        """Initial (identity) moments for ``rows`` slots."""
        assert self.feature_shape is not None and self.device is not None
        shape = (rows,) + self.feature_shape
        needs = self._needs()
        opts = {"dtype": self.dtype, "device": self.device}
        return BatchMoments(
            count=torch.zeros(rows, dtype=torch.int64, device=self.device),
            mean=torch.zeros(shape, **opts) if needs["need_mean"] else None,
            m2=torch.zeros(shape, **opts) if needs["need_m2"] else None,
            max=torch.full(shape, -math.inf, **opts) if needs["need_max"] else None,
            min=torch.full(shape, math.inf, **opts) if needs["need_min"] else None,
        )

    def _reserve(self, rows: int) -> None:
        """Grow storage (doubling) so that ``rows`` slots exist."""
        if self._state is None:
            self._state = self._empty(max(rows, 16))
            return
        cap = self.capacity
        if rows <= cap:
            return
        extra = self._empty(max(rows, 2 * cap) - cap)
        old = self._state
        self._state = BatchMoments(
            **{
                k: (None if getattr(old, k) is None else torch.cat([getattr(old, k), getattr(extra, k)]))
                for k in ("count", "mean", "m2", "max", "min")
            }
        )

    def update(self, x: Tensor, lengths: Tensor | None, slots: Tensor) -> None:
        """Add frames x (B, T, *F) with valid lengths (B,) or None to rows ``slots`` (B,) int64, distinct."""
        x = x.detach()
        if self.feature_shape is None:
            self.feature_shape = tuple(x.shape[2:])
            self.device = x.device
        elif tuple(x.shape[2:]) != self.feature_shape:
            raise ValueError(
                f"neuron shape changed between calls: {self.feature_shape} then {tuple(x.shape[2:])}"
            )
        if self._store_new_rows(x, lengths, slots):
            return
        slots = slots.to(self.device)
        self._reserve(int(slots.max()) + 1 if slots.numel() else 0)
        part = batch_moments(x, lengths, dtype=self.dtype, chunk_elements=self.chunk_elements, **self._needs())
        if x.device != self.device:  # e.g. DataParallel replicas: merge on the storage device
            part = BatchMoments(
                **{
                    k: (None if getattr(part, k) is None else getattr(part, k).to(self.device))
                    for k in ("count", "mean", "m2", "max", "min")
                }
            )
        state = self._state
        assert state is not None
        old = BatchMoments(
            **{k: (None if getattr(state, k) is None else getattr(state, k).index_select(0, slots))
               for k in ("count", "mean", "m2", "max", "min")}
        )
        new = merge_moments(old, part)  # exact also for rows not seen before (the identity's count is 0)
        for k in ("count", "mean", "m2", "max", "min"):
            if getattr(state, k) is not None:
                getattr(state, k).index_copy_(0, slots, getattr(new, k))

    def _store_new_rows(self, x: Tensor, lengths: Tensor | None, slots: Tensor) -> bool:
        """Write the statistics of rows not seen before straight into CPU storage, by the compiled kernel
        and a few NumPy operations, no tensor temporaries: a Recorder's common case (each utterance in one
        forward call). Each operation counts here: right after a large layer the caches are cold and
        even a small one takes 50-100 us (sre-cnn, benchmarks/bench_extract.py). False where it does not
        apply (CUDA; max / min; rows seen before, as in chunked streaming; frames the kernel does not
        take): then :meth:`update` merges."""
        if (self.device.type != "cpu" or slots.device.type != "cpu" or self.pooling in ("max", "min")
                or not slots.numel() or (lengths is not None and lengths.device.type != "cpu")):
            return False
        rows = slots.numpy()
        self._reserve(int(rows.max()) + 1)
        state = self._state
        assert state is not None
        counts = state.count.numpy()
        if counts[rows].any():
            return False
        frames = x.shape[1]
        if lengths is None:
            count = np.full(len(rows), frames, dtype=np.int64)
        else:  # clamped to [0, frames] by ufuncs (np.clip's Python layer costs more here)
            count = np.minimum(np.maximum(lengths.numpy().astype(np.int64, copy=False), 0), frames)
        moments = _compiled_moments(x, count)
        if moments is None:
            return False
        counts[rows] = count
        for stored, value in ((state.mean, moments[0]), (state.m2, moments[1])):
            if stored is not None:
                stored.numpy().reshape(len(counts), -1)[rows] = value
        return True

    def counts(self, rows: int) -> Tensor:
        """Frames seen per row (rows,) int64 on CPU."""
        if self._state is None:
            return torch.zeros(rows, dtype=torch.int64)
        self._reserve(rows)
        return self._state.count[:rows].cpu()

    def result(self, rows: int) -> Tensor:
        """Pooled values (rows, S * width) float32 on CPU for slots ``0..rows-1``."""
        if self._state is None:
            raise RuntimeError("no activations were pooled")
        self._reserve(rows)
        s = self._state
        view = BatchMoments(
            **{k: (None if getattr(s, k) is None else getattr(s, k)[:rows]) for k in ("count", "mean", "m2", "max", "min")}
        )
        return finalize(view, self.pooling, unbiased=self.unbiased).to(device="cpu", dtype=torch.float32)
