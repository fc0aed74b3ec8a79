"""Features larger than memory: the extraction shards, read lazily from memory-mapped files.

``neurohook extract`` writes its shards as safetensors files (``<out>/shards/shard-00000.safetensors``).
:class:`ShardedFeatures` opens them without loading the values: rows are read on demand and
column statistics are streamed, so :class:`neurohook.LinearProbe` and :func:`neurohook.probe.fit_probes`
can train from them in mini-batches, e.g.::

    feats = ShardedFeatures.open("feats/sre")         # the extract output folder
    probe = neurohook.LinearProbe().fit(feats, labels) # labels (N,) in feats.ids order
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurohook.codec import decode
from neurohook.errors import FeaturesFileError
from neurohook.features import _META_KEY, Features, LayerSpan, _read_errors
from neurohook.zscore import streamed_stats, take

__all__ = ["ShardedFeatures", "SHARD_PATTERN"]

SHARD_PATTERN = "shard-*.safetensors"

#: How much of the shards reads may map before the mappings' pages are released (madvise MADV_DONTNEED).
#: The pages stay in the OS page cache (the next pass reads them from memory, not disk) but leave this
#: process's resident set, which then holds its own arrays plus about this much of the shards at most.
RELEASE_BYTES = 1 << 30

#: What reading one row may map: the kernel maps a page-cache folio whole on a fault, up to 2 MiB on
#: x86-64 Linux with large folios (here, reading one 16 KB row mapped 2.1 MB of the shard).
FOLIO_BYTES = 2 << 20


class ShardedFeatures:
    """Rows (N, D) spread over safetensors shards with one layer map; ``ids``, ``layers`` as in Features."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """Open the shards (in the given order); the values stay on disk, memory-mapped."""
        from safetensors import safe_open

        if not paths:
            raise ValueError("ShardedFeatures needs at least one shard file")
        self.paths = [Path(p) for p in paths]
        self._files, metas = [], []
        for path in self.paths:
            try:
                f = safe_open(str(path), framework="numpy")
                meta = json.loads((f.metadata() or {})[_META_KEY])
            except _read_errors() as e:
                raise FeaturesFileError(path, f"not a readable features shard ({type(e).__name__}: {e})") from None
            self._files.append(f)
            metas.append(meta)
        for path, meta in zip(self.paths[1:], metas[1:]):
            if meta.get("layers") != metas[0].get("layers"):
                raise FeaturesFileError(path, f"a different layer map from {self.paths[0]}")
        self._values, self._maps = zip(*(_mapped_values(path) for path in self.paths))
        self._unreleased = 0  # bytes the reads since the last release may have mapped
        sizes = [len(v) for v in self._values]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.ids = [u for meta in metas for u in meta["ids"]]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("utterance ids repeat across shards")
        width = int(self._values[0].shape[1])
        self.shape: tuple[int, int] = (int(self._offsets[-1]), width)
        first = self._files[0]
        names = metas[0]["unit_stat_names"]
        self._header = Features(  # the layer map, with no rows
            np.zeros((0, width), np.float32), [],
            [decode(LayerSpan, d) for d in metas[0]["layers"]],
            first.get_tensor("unit_layer"), first.get_tensor("unit_index"),
            np.array([names[i] for i in first.get_tensor("unit_stat").tolist()], dtype=str))
        self.layers = self._header.layers

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> "ShardedFeatures":
        """The shards of an extract output folder (``<folder>/shards``) or of a folder of shards."""
        folder = Path(folder)
        paths = sorted((folder / "shards").glob(SHARD_PATTERN)) or sorted(folder.glob(SHARD_PATTERN))
        if not paths:
            raise FileNotFoundError(f"no shard ({SHARD_PATTERN}) in {folder} or {folder / 'shards'}")
        return cls(paths)

    def __len__(self) -> int:
        """Number of utterances N."""
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedFeatures(n={len(self)}, neurons={self.shape[1]}, shards={len(self.paths)})"

    @property
    def layer_names(self) -> list[str]:
        """Distinct layer names in column order."""
        return self._header.layer_names

    def columns(self, layer: str) -> np.ndarray:
        """Column indices (k,) belonging to ``layer``."""
        return self._header.columns(layer)

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Values (len(index), D) float32 of the given rows, read from the shards."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} utterances")
        shard = np.searchsorted(self._offsets, index, side="right") - 1
        out = np.empty((len(index), self.shape[1]), dtype=np.float32)
        cuts = (np.flatnonzero(np.diff(shard)) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, len(index)]) if index.size else ():  # runs of rows in one shard
            values, local = self._values[shard[a]], index[a:b] - self._offsets[shard[a]]
            if values.dtype == np.float32:  # straight from the mapped pages into the output
                take(values, local, out=out[a:b])
            else:
                out[a:b] = values[local]
            self._read((b - a) * (values.shape[1] * values.itemsize + FOLIO_BYTES))
        return out

    def chunks(self, rows: int = 512):
        """(start, values (n, D) float32) blocks in row order, at most ``rows`` rows each (read-only
        views of the mapped shards where they are stored in float32)."""
        for s, values in enumerate(self._values):
            for a in range(0, len(values), rows):
                block = values[a : a + rows]
                self._read(block.nbytes + FOLIO_BYTES)
                yield int(self._offsets[s]) + a, np.asarray(block, dtype=np.float32)

    def _read(self, nbytes: int) -> None:
        """Count what reads may have mapped; past :data:`RELEASE_BYTES`, release every shard's mapped
        pages from this process (views handed out stay valid: a page read again is mapped again)."""
        self._unreleased += nbytes
        if self._unreleased > RELEASE_BYTES and hasattr(mmap, "MADV_DONTNEED"):
            for m in self._maps:
                if m is not None:
                    m.madvise(mmap.MADV_DONTNEED)
            self._unreleased = 0

    def column_stats(self, rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and population std (D,) of every column, streamed over the shards in float64."""
        return streamed_stats(((np.arange(a, a + len(b)), b) for a, b in self.chunks(rows)), self.ids, self.shape[1])

    def load(self) -> Features:
        """All rows in memory, as Features."""
        return Features.concat([Features.load(p) for p in self.paths])


def _mapped_values(path: Path) -> tuple[np.ndarray, mmap.mmap | None]:
    """The "values" tensor (n, D) of a safetensors shard as a read-only view of a memory map, and the map
    (None for no rows): a safetensors file is an 8-byte little-endian header length, a JSON header giving
    each tensor's dtype, shape and byte range, then the data. Rows are then copied once, straight into the
    reader's output."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(size))["values"]
        dtype = {"F32": np.float32, "F16": np.float16}.get(entry["dtype"])
        if dtype is None or len(entry["shape"]) != 2:
            raise FeaturesFileError(path, f"values of dtype {entry['dtype']} and shape {entry['shape']}; expected (n, D) F32 or F16")
        shape = tuple(int(v) for v in entry["shape"])
        if shape[0] == 0:
            return np.zeros(shape, dtype), None
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    values = np.frombuffer(mapped, dtype=dtype, count=shape[0] * shape[1], offset=8 + size + int(entry["data_offsets"][0]))
    return values.reshape(shape), mapped
