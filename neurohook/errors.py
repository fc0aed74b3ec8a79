"""The errors neurohook raises for bad input: each names the file, line, flag or layer at fault.

Every class derives from :class:`UserInputError`, and so do :class:`neurohook.data.ManifestError`,
:class:`neurohook.data.AudioError`, :class:`neurohook.data.SplitError` and
:class:`neurohook.hooks.LayerNotFoundError`, defined beside the code that raises them. The command
line prints such an error as one line on stderr and exits with status 2 (``--debug`` shows the
traceback); anything else that escapes is a bug and surfaces as a traceback. Each class also derives
from the built-in exception that Python code would expect (``ValueError``, ``OSError``, ...), so
``except ValueError`` keeps working.

Example::

    from neurohook.errors import UserInputError
    try:
        feats = neurohook.Features.load("feats/features.npz")
    except UserInputError as e:        # FeaturesFileError: truncated, not a features file, ...
        print(e)                        # "feats/features.npz: not a readable features file (...)"
"""

from __future__ import annotations

import os
import tempfile
from typing import Union

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FolderConflictError",
    "FeaturesFileError",
    "FileInputError",
    "OutputError",
    "ResultsFileError",
    "TooShortError",
    "UserInputError",
]

PathLike = Union[str, "os.PathLike[str]"]


class UserInputError(Exception):
    """A problem with what the user gave (a file, a flag, a config value, the data), not a bug."""


class ConfigError(UserInputError, ValueError):
    """A bad flag, config-file value or environment variable; the message names it."""


class OutputError(UserInputError, OSError):
    """An output path that cannot be written (read-only folder, a file where a folder is needed, ...)."""


class FileInputError(UserInputError):
    """A file that cannot be used: ``path`` and ``reason`` make the message ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.path, self.reason))  # picklable across worker processes


class FeaturesFileError(FileInputError, ValueError):
    """A features file or shard that is truncated, damaged or not written by neurohook."""


class CheckpointError(FileInputError, ValueError):
    """A model checkpoint (.pt) that is truncated, damaged, unsafe or not a neurohook checkpoint."""


class ResultsFileError(FileInputError, ValueError):
    """A results.json that is not valid JSON or does not follow the results schema."""


class DataError(UserInputError, ValueError):
    """Labels, speakers or utterances that cannot support the requested analysis (too few, misaligned)."""


class TooShortError(DataError):
    """An utterance shorter than the model needs for at least one valid frame in every probed layer."""


class FolderConflictError(UserInputError):
    """An output folder holding another configuration's work: extraction shards of another model,
    layers, shard size or manifest; a corpus of another size or seed."""


def check_writable_dir(path: PathLike, what: str) -> None:
    """Raise :class:`OutputError` unless ``path`` is (or can be created as) a writable folder.

    ``what`` names the path for the message, e.g. ``"--out"``. Nothing is created.
    """
    p = os.path.abspath(os.fspath(path))
    probe = p
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        where = "is a file" if probe == p else f"lies under the file {probe}"
        raise OutputError(f"{what} {path}: {where}, not a folder")
    try:  # a real write: os.access says yes to root on read-only folders and mounts
        fd, tmp = tempfile.mkstemp(prefix=".neurohook-write-test.", dir=probe)
    except OSError as e:
        raise OutputError(f"{what} {path}: the folder {probe} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def check_writable_file(path: PathLike, what: str) -> None:
    """Raise :class:`OutputError` unless the file ``path`` can be written (its folder writable, not a folder)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise OutputError(f"{what} {path}: is a folder, not a file")
    check_writable_dir(os.path.dirname(os.path.abspath(p)), what)
