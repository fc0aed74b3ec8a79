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
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurohook.codec import decode
from neurohook.errors import FeaturesFileError
from neurohook.features import _META_KEY, Features, LayerSpan, _read_errors
from neurohook.zscore import streamed_stats

__all__ = ["ShardedFeatures", "SHARD_PATTERN"]

SHARD_PATTERN = "shard-*.safetensors"


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
        self._values = [f.get_slice("values") for f in self._files]
        sizes = [int(v.get_shape()[0]) for v in self._values]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.ids = [u for meta in metas for u in meta["ids"]]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("utterance ids repeat across shards")
        width = int(self._values[0].get_shape()[1])
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
        for s in np.unique(shard).tolist():
            every = np.flatnonzero(shard == s)
            for a in range(0, len(every), 64):  # 64 rows at a time: small reads beside the output
                mine = every[a : a + 64]
                local = index[mine] - self._offsets[s]
                lo, hi = int(local.min()), int(local.max()) + 1
                if hi - lo <= 4 * len(mine):  # the rows lie close together (a study's row blocks): one read
                    out[mine] = self._values[s][lo:hi][local - lo]
                else:
                    for i, r in zip(mine.tolist(), local.tolist()):
                        out[i] = self._values[s][r : r + 1][0]
        return out

    def chunks(self, rows: int = 512):
        """(start, values (n, D) float32) blocks in row order, at most ``rows`` rows each."""
        for s, values in enumerate(self._values):
            n = int(values.get_shape()[0])
            for a in range(0, n, rows):
                yield int(self._offsets[s]) + a, np.asarray(values[a : min(n, a + rows)], dtype=np.float32)

    def column_stats(self, rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and population std (D,) of every column, streamed over the shards in float64."""
        return streamed_stats(((np.arange(a, a + len(b)), b) for a, b in self.chunks(rows)), self.ids, self.shape[1])

    def load(self) -> Features:
        """All rows in memory, as Features."""
        return Features.concat([Features.load(p) for p in self.paths])
