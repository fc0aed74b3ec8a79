"""Weights inside installed PyPI wheels, found without importing their packages and read without running code.

* :func:`wheel_file` — a file of an installed distribution (``importlib.metadata``), or
  :class:`WeightsNotFoundError` with the install hint.
* :func:`read_archive` — the object in a torch zip archive (``torch.save`` or TorchScript) through a
  restricted unpickler: tensors and builtin containers only, classes under given prefixes as inert
  :class:`Inert` state holders; any other global is refused. :func:`read_torchscript_tensors` walks
  a TorchScript archive's tensors by dotted name.

Example::

    path = wheel_file("silero-vad", ("silero_vad", "data", "silero_vad.jit"), "pip install --no-deps silero-vad",
                      "silero-vad: the pretrained VAD")
    tensors = read_torchscript_tensors(path)
"""

from __future__ import annotations

import collections
import importlib.metadata
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neurohook.errors import UserInputError

__all__ = ["Inert", "WeightsNotFoundError", "read_archive", "read_torchscript_tensors", "wheel_file"]


class WeightsNotFoundError(UserInputError, FileNotFoundError):
    """The PyPI wheel that holds a pretrained model's weights is not installed (or lacks the file)."""


def wheel_file(dist_name: str, parts: tuple[str, ...], hint: str, what: str) -> Path:
    """Path of file ``parts`` (package-relative, e.g. ("silero_vad", "data", "x.jit")) in an installed wheel.

    The package is not imported; a missing wheel or file raises :class:`WeightsNotFoundError` with ``hint``.
    """
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotFoundError(f"{what} needs the PyPI wheel {dist_name!r}; install it with `{hint}`") from None
    for f in dist.files or []:
        if tuple(f.parts[-len(parts):]) == parts:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise WeightsNotFoundError(f"{dist_name} {dist.version} is installed but {'/'.join(parts)} is missing; reinstall with `{hint}`")



# ------------------------------------------------------------- archives read without running code
class Inert:
    """Stands for any class the archive names (TorchScript modules, omegaconf configs): only its state is kept."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class _Dict(dict):  # type: ignore[type-arg]
    """A dict that takes attributes (pickled OrderedDicts carry ``_metadata``)."""


_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
           "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
           "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}
_CONTAINERS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Dict, ("collections", "defaultdict"): collections.defaultdict,
    ("__builtin__", "dict"): _Dict, ("builtins", "dict"): _Dict, ("__builtin__", "list"): list,
    ("builtins", "list"): list, ("__builtin__", "long"): int, ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list, ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list}


def _rebuild_tensor(flat: Tensor, offset: int, size: Any, stride: Any, *_rest: Any) -> Tensor:
    return flat.as_strided(tuple(size), tuple(stride), offset).clone()


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only tensors, builtin containers and, for classes under ``inert`` prefixes, :class:`Inert` objects."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, inert: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.inert = archive, prefix, inert

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(self.inert) or f"{module}.{name}" in self.inert:
            return Inert
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        if (module, name) in _CONTAINERS:
            return _CONTAINERS[module, name]
        raise pickle.UnpicklingError(f"{self.prefix}: refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Tensor:
        _kind, storage, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        dtype = _DTYPES[storage]
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def read_archive(path: str | Path, inert: tuple[str, ...]) -> Any:
    """The object in a torch zip archive (``torch.save`` or TorchScript), classes under ``inert`` as :class:`Inert`.

    Nothing is compiled or run: no TorchScript code, no class from the archive; other globals are refused.
    """
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        return _RestrictedUnpickler(archive.read(pkl), archive, pkl[: -len("/data.pkl")], inert).load()


def read_torchscript_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor attribute of a TorchScript archive by dotted name (e.g. ``_model.encoder.0.reparam_conv.weight``)."""

    def walk(obj: Any, prefix: str, out: dict[str, Tensor]) -> dict[str, Tensor]:
        for k, v in vars(obj).items():
            if isinstance(v, Tensor):
                out[prefix + k] = v
            elif isinstance(v, Inert):
                walk(v, f"{prefix}{k}.", out)
        return out

    return walk(read_archive(path, ("__torch__.",)), "", {})
