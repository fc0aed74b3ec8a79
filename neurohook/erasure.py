"""Concept erasure: LEACE (Belrose et al., NeurIPS 2023) fitted on utterance features, applied offline
(:meth:`LeaceEraser.transform`) or to a layer's frames in the running model (:class:`Erasure`).

LEACE is the affine map r(x) = x - Σ^{1/2} P Σ^{-1/2} (x - μ), with Σ the covariance of X, Σ^{-1/2}
its (pseudo-)inverse square root and P the orthogonal projection onto the column space of
Σ^{-1/2} Σ_XZ (Σ_XZ: the cross-covariance of X with the one-hot concept Z). After it the
cross-covariance of r(X) with Z is zero, so no linear classifier does better than a constant on the
training distribution, and among maps with that property it moves X least in the mean-squared
(Σ-whitened) sense. P has rank at most C - 1 for C classes, so the map is kept low-rank:
r(x) = x - ((x - μ) B) Aᵀ with A = Σ^{1/2} U, B = Σ^{-1/2} U (d x rank).

In the running model: the map is affine, so erasing every frame of a layer erases its pooled mean
exactly (the mean of r(x_t) is r(mean x_t)). Fit the eraser on the layer's *mean* columns. The pooled
std of erased frames is the std of a linear map of the frames, not r(std): std and stats pooling of
an erased layer are not erased features in that sense.

Example::

    eraser = fit_eraser(feats.values[:, feats.columns("fc1")], gender, method="leace")
    X_erased = eraser.transform(X)                        # gender no longer linearly decodable
    with Erasure(model, "fc1", eraser):
        emb = model.embed(wave, lengths)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neurohook.hooks.edit import Edits
from neurohook.hooks.layouts import OutputSelector

__all__ = ["Erasure", "LeaceEraser", "fit_eraser", "random_eraser"]


@dataclass
class LeaceEraser:
    """x -> x - ((x - mean) @ B) @ A.T: the fitted affine eraser (float64 arrays)."""

    mean: np.ndarray  # (d,)
    A: np.ndarray  # (d, r)
    B: np.ndarray  # (d, r)

    @property
    def rank(self) -> int:
        """Dimensions removed."""
        return int(self.A.shape[1])

    def transform(self, X: Any) -> np.ndarray:
        """Erased copy of X (N, d), in X's float dtype."""
        X = np.asarray(X)
        out = X - ((X - self.mean) @ self.B) @ self.A.T
        return out.astype(X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64)

    def apply(self, x: Tensor) -> Tensor:
        """Erased x (..., d) for a torch tensor (any device / dtype; computed in float32 or wider)."""
        dt = torch.promote_types(x.dtype, torch.float32)
        mean, A, B = (torch.as_tensor(v, dtype=dt, device=x.device) for v in (self.mean, self.A, self.B))
        z = x.to(dt)
        return (z - ((z - mean) @ B) @ A.T).to(x.dtype)


def _sqrt_and_inverse_sqrt(cov: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Σ^{1/2} and the pseudo-inverse Σ^{-1/2} of a symmetric PSD matrix (eigenvalues below tol * max dropped)."""
    lam, V = np.linalg.eigh(cov)
    keep = lam > tol * max(float(lam.max()), 1e-300)
    V, lam = V[:, keep], lam[keep]
    return (V * np.sqrt(lam)) @ V.T, (V / np.sqrt(lam)) @ V.T


def fit_eraser(X: Any, y: Any, method: str = "leace", tol: float = 1e-10) -> LeaceEraser:
    """Fit an eraser of the concept ``y`` (N,) from features X (N, d).

    Example: ``fit_eraser(X, gender).transform(X)`` leaves no linear gender signal in X.
    """
    if method != "leace":
        raise ValueError(f"method must be 'leace', got {method!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (N, d) with one label per row; got X {X.shape} and y {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("y holds one class: there is no concept to erase")
    mean = X.mean(axis=0)
    Xc = X - mean
    Z = np.eye(len(classes))[codes]
    Zc = Z - Z.mean(axis=0)
    cov = Xc.T @ Xc / len(X)
    cross = Xc.T @ Zc / len(X)  # (d, C)
    root, inv_root = _sqrt_and_inverse_sqrt(cov, tol)
    U, s, _ = np.linalg.svd(inv_root @ cross, full_matrices=False)
    U = U[:, s > tol * max(float(s.max()), 1e-300)]  # orthonormal basis of the whitened cross-covariance
    return _eraser(mean, root @ U, inv_root @ U, cov)


def _eraser(mean: np.ndarray, A: np.ndarray, B: np.ndarray, cov: np.ndarray, tol: float = 1e-10) -> LeaceEraser:
    """The eraser, with constant columns left exactly as they are: their rows of A and B are zero in
    exact arithmetic, and rounding residue there (~1e-16) would carry the erased direction into a
    column that a z-scoring probe blows up to unit variance."""
    var = np.diag(cov)
    constant = var <= tol * max(float(var.max()), 1e-300)
    A, B = A.copy(), B.copy()
    A[constant], B[constant] = 0.0, 0.0
    return LeaceEraser(mean, A, B)


def random_eraser(X: Any, rank: int, seed: int = 0) -> LeaceEraser:
    """An eraser of a random direction set of ``rank`` (the same whitened-projection form): the control
    for what erasing any ``rank`` dimensions costs."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    cov = np.cov(X, rowvar=False, bias=True)
    root, inv_root = _sqrt_and_inverse_sqrt(cov, 1e-10)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((X.shape[1], rank)))
    return _eraser(mean, root @ q, inv_root @ q, cov)


class Erasure:
    """Apply an eraser to every frame of one layer while the model runs; removed on exit.

    Example::

        with Erasure(model, "encoder.layers.5", eraser):
            out = model(wave, lengths)

    Args:
        model: any ``nn.Module``.
        layer: the layer's name (as the Recorder names it).
        eraser: a :class:`LeaceEraser` fitted on that layer's mean-pooled units (d = units per frame).
        output, layout, conv2d_layout: as the Recorder's (which part of the output; the layer's layout).
    """

    def __init__(self, model: nn.Module, layer: str, eraser: LeaceEraser, *, output: OutputSelector = None,
                 layout: str | None = None, conv2d_layout: str = "BCFT") -> None:
        self.layer, self.eraser = layer, eraser
        layouts: Mapping[str, str] | None = None if layout is None else {layer: layout}
        self._edits = Edits(model, {layer: self._edit}, output=output, layout=layouts, conv2d_layout=conv2d_layout)

    def _edit(self, frames: Tensor) -> Tensor:
        d = len(self.eraser.mean)
        flat = frames.flatten(2) if frames.dim() > 3 else frames
        if flat.shape[-1] != d:
            raise ValueError(f"layer {self.layer!r}: {flat.shape[-1]} units per frame, the eraser was fitted on {d}")
        return self.eraser.apply(flat).view(frames.shape)

    def __enter__(self) -> "Erasure":
        self._edits.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._edits.remove()
