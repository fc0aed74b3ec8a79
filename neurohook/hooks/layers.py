"""Which modules a Recorder hooks: exact names, glob patterns (``*`` one dotted component, ``**`` any
depth) or module objects, with close matches named when nothing matches.

Example::

    find_layers(model, "encoder.transformer.layers.*")   # [("encoder.transformer.layers.0", module), ...]
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Union

from torch import nn

from neurohook.errors import UserInputError

__all__ = ["LayerNotFoundError", "LayerRef", "find_layers", "matches"]

LayerRef = Union[str, nn.Module]


class LayerNotFoundError(UserInputError, LookupError):
    """A layer name or pattern selects no module; the message lists close matches."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _match(parts: Sequence[str], name: Sequence[str], trailing: bool = True) -> bool:
    """Glob match of dotted components: ``*`` one component, ``**`` zero or more (one or more at the end)."""
    if not parts:
        return not name
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # trailing ** needs at least one component
            return len(name) >= 1
        return any(_match(rest, name[i:]) for i in range(len(name) + 1))
    return bool(name) and fnmatch.fnmatchcase(name[0], head) and _match(rest, name[1:])


def _is_pattern(s: str) -> bool:
    """Whether ``s`` contains glob characters."""
    return any(c in s for c in "*?[")


def matches(key: str, name: str) -> bool:
    """Whether an override key (an exact layer name or a glob pattern) selects layer ``name``."""
    return name == key or (_is_pattern(key) and _match(key.split("."), name.split(".")))


def _close_matches(query: str, names: Sequence[str]) -> list[str]:
    """Up to 5 names resembling ``query`` (difflib), for error messages."""
    plain = query.replace("**", "").replace("*", "")
    found = difflib.get_close_matches(query, names, n=5, cutoff=0.5)
    found += [n for n in difflib.get_close_matches(plain, names, n=5, cutoff=0.5) if n not in found]
    return found[:5]


def find_layers(model: nn.Module, layers: LayerRef | Iterable[LayerRef]) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs selected by exact names, glob patterns or module objects, deduplicated.

    Patterns match ``named_modules()`` names component-wise: ``*`` matches one dotted component,
    ``**`` any number (so ``"encoder.transformer.layers.*"`` gives the layers, not their children).
    """
    model = _unwrap(model)
    named = {name: mod for name, mod in model.named_modules() if name}
    names = list(named)
    by_id = {id(mod): name for name, mod in named.items()}
    refs: list[LayerRef] = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not refs:
        raise ValueError("no layers given")
    chosen: dict[str, nn.Module] = {}
    for ref in refs:
        if isinstance(ref, nn.Module):
            if id(ref) not in by_id:
                raise ValueError(f"module {type(ref).__name__} is not a submodule of the model")
            chosen.setdefault(by_id[id(ref)], ref)
            continue
        if not isinstance(ref, str):
            raise TypeError(f"layers must be names, patterns or modules, got {type(ref).__name__}")
        if not _is_pattern(ref):
            if ref not in named:
                hint = _close_matches(ref, names)
                raise LayerNotFoundError(f"no layer named {ref!r}" + (f"; close matches: {hint}" if hint else ""))
            chosen.setdefault(ref, named[ref])
            continue
        parts = ref.split(".")
        hits = [n for n in names if _match(parts, n.split("."))]
        if not hits:
            hint = _close_matches(ref, names)
            raise LayerNotFoundError(f"pattern {ref!r} matches no layer" + (f"; close matches: {hint}" if hint else ""))
        for n in hits:
            chosen.setdefault(n, named[n])
    return list(chosen.items())
