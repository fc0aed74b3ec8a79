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
_LAZY = {
    "Recorder": "neurohook.hooks",
    "split_rnn": "neurohook.hooks",
    "Features": "neurohook.features",
    "LayerSpan": "neurohook.features",
    "LinearProbe": "neurohook.probe",
    "analyze": "neurohook.analysis",
}
# submodules reachable as attributes, e.g. neurohook.verification.eer
_SUBMODULES = {"hooks", "pooling", "features", "probe", "analysis", "ablation", "control", "verification", "models", "data", "corpus", "report", "extract", "shards"}

__all__ = ["ranking", "__version__", *_LAZY, *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"neurohook.{name}")
    raise AttributeError(f"module 'neurohook' has no attribute {name!r}")
