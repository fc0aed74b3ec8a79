"""neurohook: layer-wise and neuron-level probing of pretrained speech models.

``import neurohook`` stays light: the compiled ranking core is imported eagerly (it needs only
numpy), everything that needs torch is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from neurohook import ranking

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {}

__all__ = ["ranking", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurohook' has no attribute {name!r}")
