"""Streaming, padding-aware statistical pooling of frame-level activations.

Statistics are kept per utterance on the activations' own device (CPU or CUDA) and merged exactly
across forward calls (Chan et al.'s parallel form of Welford's update, :mod:`neurohook.moments`), so
chunked or streaming inference gives the same result as one pass over the whole utterance. Frames
are never stored.

Conventions: a frame tensor is ``(B, T, *F)`` with time on axis 1 and the neuron axes ``F`` after
it; ``lengths`` ``(B,)`` counts the valid (unpadded) frames at the start of each item. Pooled
outputs flatten ``F`` in C order, so a ``(C, F)`` map gives unit ``c * F + f``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from neurohook.moments import DEFAULT_CHUNK_ELEMENTS, BatchMoments, _flat_frames, batch_moments, merge_moments
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


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is a known mode, else raise ValueError listing the modes."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    return pooling


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
        # NumPy views (count (rows,), mean and m2 (rows, width)) of CPU mean / std storage, for store_new_rows
        self._cpu_views: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

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

    def reserve(self, rows: int) -> None:
        """Grow storage (doubling) so that ``rows`` slots exist; nothing before the first :meth:`update`."""
        if self.feature_shape is None:
            return
        if self._state is None:
            self._state = self._empty(max(rows, 16))
        elif rows > self.capacity:
            cap = self.capacity
            extra = self._empty(max(rows, 2 * cap) - cap)
            old = self._state
            self._state = BatchMoments(
                **{
                    k: (None if getattr(old, k) is None else torch.cat([getattr(old, k), getattr(extra, k)]))
                    for k in ("count", "mean", "m2", "max", "min")
                }
            )
        else:
            return
        s = self._state
        self._cpu_views = None if s.count.device.type != "cpu" or s.max is not None or s.min is not None else (
            s.count.numpy(), s.mean.numpy().reshape(len(s.count), -1),
            None if s.m2 is None else s.m2.numpy().reshape(len(s.count), -1))

    def update(self, x: Tensor, lengths: Tensor | None, slots: Tensor) -> None:
        """Add frames x (B, T, *F) with valid lengths (B,) or None to rows ``slots`` (B,) int64, distinct."""
        if x.requires_grad:
            x = x.detach()
        if self.feature_shape is None:
            self.feature_shape = tuple(x.shape[2:])
            self.device = x.device
        elif x.shape[2:] != self.feature_shape:
            raise ValueError(
                f"neuron shape changed between calls: {self.feature_shape} then {tuple(x.shape[2:])}"
            )
        if self._store_new_rows(x, lengths, slots):
            return
        slots = slots.to(self.device)
        self.reserve(int(slots.max()) + 1 if slots.numel() else 0)
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

    def store_new_rows(self, frames: np.ndarray, count: np.ndarray | None, rows: np.ndarray, *,
                       time_last: bool = False) -> bool:
        """Write the statistics of rows not seen before straight into CPU storage by one compiled call, no
        tensor operation: a Recorder's common case (each utterance in one forward call), where each
        operation counts: right after a large layer the caches are cold and even a small one takes
        20-100 us (sre-cnn, benchmarks/bench_extract.py).

        Example::

            pool.reserve(n_rows)                                  # rows 0..n_rows-1 allocated
            pool.store_new_rows(conv_out.numpy(), count, rows, time_last=True)   # (B, D, T), (B,), (B,)

        ``frames`` float32 (B, T, F), (B, F, T) with ``time_last``, or (B, F) (one frame each); ``count``
        (B,) valid frames of each (None: all; clamped to [0, T]); ``rows`` (B,) int64. False, with nothing
        written, where this does not apply (before the first :meth:`update`; CUDA storage; max / min;
        frames of another width, dtype or strides; rows beyond the capacity, repeated or seen before):
        then :meth:`update` merges."""
        views = self._cpu_views
        return views is not None and _core.store_frame_moments(frames, count, rows, *views, time_last)

    def _store_new_rows(self, x: Tensor, lengths: Tensor | None, slots: Tensor) -> bool:
        """:meth:`store_new_rows` for :meth:`update`'s tensors (storage grown to the rows first)."""
        flat = _flat_frames(x)
        if (flat is None or not slots.is_cpu
                or (lengths is not None and (not lengths.is_cpu or lengths.is_floating_point()))):
            return False
        rows = slots.numpy()
        if len(rows):
            self.reserve(int(rows.max()) + 1)
        return self.store_new_rows(flat.numpy(), None if lengths is None else lengths.numpy(), rows)

    def counts(self, rows: int) -> Tensor:
        """Frames seen per row (rows,) int64 on CPU."""
        if self._state is None:
            return torch.zeros(rows, dtype=torch.int64)
        self.reserve(rows)
        return self._state.count[:rows].cpu()

    def result(self, rows: int) -> Tensor:
        """Pooled values (rows, S * width) float32 on CPU for slots ``0..rows-1``."""
        if self._state is None:
            raise RuntimeError("no activations were pooled")
        self.reserve(rows)
        s = self._state
        view = BatchMoments(
            **{k: (None if getattr(s, k) is None else getattr(s, k)[:rows]) for k in ("count", "mean", "m2", "max", "min")}
        )
        return finalize(view, self.pooling, unbiased=self.unbiased).to(device="cpu", dtype=torch.float32)
