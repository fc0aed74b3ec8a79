"""Names shared by the verification modules."""

from __future__ import annotations

__all__ = ["ALL", "DEFAULT_PERCENTAGES"]

ALL = "ALL"
"""Name of the concatenation of all layers in every result."""

DEFAULT_PERCENTAGES: tuple[float, ...] = (1, 5, 10, 15, 20, 25, 50, 75)
"""Neuron percentages tried for the minimal set (the paper's section 3.3.2)."""

_CHUNK_BYTES = 32 * 2**20  # working memory of one scoring chunk
