"""neurohook: layer-wise and neuron-level probing of pretrained speech models.

``import neurohook`` stays light: every submodule, the compiled ranking core included, is imported
on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "Recorder": "neurohook.hooks",
    "split_rnn": "neurohook.hooks.rnn",
    "Features": "neurohook.features",
    "LayerSpan": "neurohook.features",
    "LinearProbe": "neurohook.probe",
    "analyze": "neurohook.analysis",
    "Ablation": "neurohook.ablate",
    "Erasure": "neurohook.erasure",
}
# submodules reachable as attributes, e.g. neurohook.verification.eer
_SUBMODULES = {"ranking", "errors", "hooks", "lengths", "pooling", "features", "shards", "zscore", "probe", "analysis",
               "ablation", "control", "results", "codec", "paper", "study", "verification", "models", "data", "corpus",
               "report", "extract", "provenance", "ablate", "intervene", "erasure"}

__all__ = ["__version__", *_LAZY, *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"neurohook.{name}")
    raise AttributeError(f"module 'neurohook' has no attribute {name!r}")
