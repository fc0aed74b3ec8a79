"""neurohook: layer-wise and neuron-level probing of pretrained speech models.

The compiled ranking core lives in :mod:`neurohook.ranking`; the rest of the package is imported
lazily so that ``import neurohook`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from neurohook import ranking

__all__ = ["ranking", "__version__"]
