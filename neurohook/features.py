"""Utterance-level features: pooled neuron values plus the map from columns to layers and units.

A :class:`Features` holds ``values`` (N x D float32, one row per utterance), the utterance ``ids``
in row order, and per column the layer, unit and statistic it came from. Files are written
atomically (temporary file + ``os.replace``) in a format that never unpickles: safetensors
(``.safetensors``) or NumPy ``.npz`` loaded with ``allow_pickle=False``, with JSON metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Union, runtime_checkable

import numpy as np
from neurohook.atomic import atomic_open
from neurohook.codec import decode, encode
from neurohook.errors import FeaturesFileError
from neurohook.zscore import mean_std

__all__ = ["FeatureSource", "Features", "LayerSpan", "UtteranceId", "normalize_id", "read_provenance"]

UtteranceId = Union[str, int]
_FORMAT_VERSION = 1
_META_KEY = "neurohook_features"
_PROVENANCE_KEY = "neurohook_provenance"


@dataclass(frozen=True)
class LayerSpan:
    """A contiguous run of columns ``start:end`` holding units of layer ``name`` pooled by ``pooling``."""

    name: str
    start: int
    end: int
    pooling: str
    statistics: tuple[str, ...] = ("mean",)
    unit_shape: tuple[int, ...] = ()
    layout: str = ""  # the output layout the Recorder read (e.g. "BDT"); "" when unknown (older files)

    @property
    def width(self) -> int:
        """Number of columns in the span."""
        return self.end - self.start

    @property
    def units(self) -> int:
        """Units per frame (flat over ``unit_shape``): the width over the statistics."""
        return self.width // max(1, len(self.statistics))


@runtime_checkable
class FeatureSource(Protocol):
    """Utterance-level features as analyses read them: :class:`Features` (in memory) and
    :class:`neurohook.shards.ShardedFeatures` (memory-mapped shards) both provide this.

    Example::

        def width_of(feats: FeatureSource, layer: str) -> int:
            return len(feats.columns(layer))
    """

    ids: list[UtteranceId]  # (N,) utterance ids, in row order
    layers: tuple[LayerSpan, ...]  # column spans, in column order

    @property
    def shape(self) -> tuple[int, int]:
        """(N utterances, D neurons)."""

    @property
    def layer_names(self) -> list[str]:
        """Distinct layer names in column order."""

    def columns(self, layer: str) -> np.ndarray:
        """Column indices (k,) of one layer."""

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Values (len(index), D) float32 of the given rows."""

    def column_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and population standard deviation (D,) of every column, float64."""


class Features:
    """Pooled activations of N utterances: ``values`` (N, D) float32, ``ids`` (N,), layer map.

    Example::

        feats = rec.features()
        x = feats.values                        # (N, D) float32
        layer, unit, stat = feats.unit(123)     # provenance of column 123
        feats.select_layers(["encoder.transformer.layers.3"]).save("l3.safetensors")
    """

    def __init__(
        self,
        values: np.ndarray,
        ids: Sequence[UtteranceId],
        layers: Sequence[LayerSpan],
        unit_layer: np.ndarray | None = None,
        unit_index: np.ndarray | None = None,
        unit_stat: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        """Build from values (N, D), ids (N,) and spans; per-column provenance defaults from spans."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"values must be 2-D (N, D), got shape {values.shape}")
        self.values: np.ndarray = values
        self.ids: list[UtteranceId] = [normalize_id(u) for u in ids]
        if len(self.ids) != values.shape[0]:
            raise ValueError(f"{len(self.ids)} ids for {values.shape[0]} rows")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("utterance ids must be unique")
        self.layers: tuple[LayerSpan, ...] = tuple(layers)
        if unit_layer is None:
            unit_layer, unit_index, unit_stat = _units_from_spans(self.layers)
        self.unit_layer: np.ndarray = np.asarray(unit_layer, dtype=np.int64)
        self.unit_index: np.ndarray = np.asarray(unit_index, dtype=np.int64)
        self.unit_stat: np.ndarray = np.asarray(unit_stat, dtype=str)
        if not (len(self.unit_layer) == len(self.unit_index) == len(self.unit_stat) == values.shape[1]):
            raise ValueError("per-column provenance must have one entry per column")

    # ----------------------------------------------------------------------------- inspection
    @property
    def shape(self) -> tuple[int, int]:
        """(N utterances, D neurons)."""
        return self.values.shape  # type: ignore[return-value]

    def __len__(self) -> int:
        """Number of utterances N."""
        return self.values.shape[0]

    def __repr__(self) -> str:
        """Short summary: size and layer names."""
        names = list(dict.fromkeys(s.name for s in self.layers))
        return f"Features(n={len(self)}, neurons={self.values.shape[1]}, layers={names})"

    @property
    def layer_names(self) -> list[str]:
        """Distinct layer names in column order."""
        return list(dict.fromkeys(s.name for s in self.layers))

    def unit(self, column: int) -> tuple[str, int, str]:
        """(layer name, unit index within the layer, statistic) of column ``column``."""
        if not -self.values.shape[1] <= column < self.values.shape[1]:
            raise IndexError(f"column {column} out of range for {self.values.shape[1]} neurons")
        span = self.layers[int(self.unit_layer[column])]
        return span.name, int(self.unit_index[column]), str(self.unit_stat[column])

    def columns(self, layer: str) -> np.ndarray:
        """Column indices (k,) belonging to ``layer``."""
        spans = [i for i, s in enumerate(self.layers) if s.name == layer]
        if not spans:
            raise KeyError(f"no layer {layer!r}; layers are {self.layer_names}")
        return np.flatnonzero(np.isin(self.unit_layer, spans))

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Values (len(index), D) float32 of the given rows."""
        return self.values[np.asarray(index, dtype=np.int64)]

    def column_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and population standard deviation (D,) of every column, float64 (no float64 copy
        of the values)."""
        return mean_std(self)

    # ------------------------------------------------------------------------------ selection
    def select_layers(self, names: str | Sequence[str]) -> Features:
        """Features restricted to the named layers' columns, in the order given."""
        names = [names] if isinstance(names, str) else list(names)
        cols = np.concatenate([self.columns(n) for n in names]) if names else np.zeros(0, np.int64)
        return self.select_neurons(cols)

    def select_neurons(self, columns: Sequence[int] | np.ndarray) -> Features:
        """Features with only ``columns`` (k,), in that order; layer spans become runs of one layer."""
        cols = np.asarray(columns, dtype=np.int64).reshape(-1)
        if cols.size and (cols.min() < 0 or cols.max() >= self.values.shape[1]):
            raise IndexError(f"neuron indices must lie in [0, {self.values.shape[1]})")
        unit_layer = self.unit_layer[cols]
        spans: list[LayerSpan] = []
        new_layer = np.empty_like(unit_layer)
        start = 0
        for end in range(1, len(cols) + 1):
            if end == len(cols) or unit_layer[end] != unit_layer[start]:
                old = self.layers[int(unit_layer[start])]
                spans.append(
                    LayerSpan(old.name, start, end, old.pooling, old.statistics, old.unit_shape, old.layout)
                )
                new_layer[start:end] = len(spans) - 1
                start = end
        return Features(
            self.values[:, cols], self.ids, spans, new_layer, self.unit_index[cols], self.unit_stat[cols]
        )

    def select_ids(self, ids: Sequence[UtteranceId]) -> Features:
        """Features with only the rows of ``ids``, in that order."""
        where = {u: i for i, u in enumerate(self.ids)}
        missing = [u for u in ids if u not in where]
        if missing:
            raise KeyError(f"unknown utterance ids: {missing[:5]}")
        rows = [where[u] for u in ids]
        return Features(self.values[rows], ids, self.layers, self.unit_layer, self.unit_index, self.unit_stat)

    @staticmethod
    def concat(shards: Sequence[Features]) -> Features:
        """Stack shards with identical layer maps row-wise; ids must stay unique."""
        if not shards:
            raise ValueError("concat needs at least one shard")
        first = shards[0]
        for i, s in enumerate(shards[1:], start=1):
            if (
                s.layers != first.layers
                or not np.array_equal(s.unit_index, first.unit_index)
                or not np.array_equal(s.unit_stat, first.unit_stat)
                or not np.array_equal(s.unit_layer, first.unit_layer)
            ):
                raise ValueError(f"shard {i} has a different layer map from shard 0")
        ids = [u for s in shards for u in s.ids]
        return Features(
            np.concatenate([s.values for s in shards]),
            ids,
            first.layers,
            first.unit_layer,
            first.unit_index,
            first.unit_stat,
        )

    # ------------------------------------------------------------------------------------ I/O
    def _metadata(self) -> str:
        """JSON metadata: version, ids and layer spans."""
        return json.dumps(
            {
                "version": _FORMAT_VERSION,
                "ids": self.ids,
                "layers": [encode(span) for span in self.layers],
                "unit_stat_names": sorted(set(self.unit_stat.tolist())),
            }
        )

    def _arrays(self, dtype: str = "float32") -> dict[str, np.ndarray]:
        """Numeric arrays written to disk (statistics coded as indices into the metadata list)."""
        names = sorted(set(self.unit_stat.tolist()))
        code = {n: i for i, n in enumerate(names)}
        return {
            "values": _stored(self.values, dtype),
            "unit_layer": self.unit_layer.astype(np.int64),
            "unit_index": self.unit_index.astype(np.int64),
            "unit_stat": np.array([code[s] for s in self.unit_stat.tolist()], dtype=np.int64),
        }

    def save(self, path: str | os.PathLike[str], *, provenance: Mapping[str, Any] | None = None,
             dtype: str = "float32") -> Path:
        """Write atomically to ``path`` (.safetensors or .npz) and return it.

        ``provenance``: JSON-able facts of what produced the rows (see :mod:`neurohook.provenance`),
        stored in the header and read back by :func:`read_provenance` without loading the values.
        ``dtype="float16"`` stores the values in half precision (half the disk and page-cache
        traffic; relative rounding error <= 2^-11); they are read back as float32. A value beyond
        float16's range (65504) raises ValueError naming its column.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".safetensors", ".npz"):
            raise ValueError(f"unsupported features file suffix {path.suffix!r}; use .safetensors or .npz")
        meta = {_META_KEY: self._metadata()}
        if provenance is not None:
            meta[_PROVENANCE_KEY] = json.dumps(provenance)
        with atomic_open(path, "wb", sync=True) as fh:
            if suffix == ".npz":
                text = {k: np.frombuffer(v.encode("utf-8"), dtype=np.uint8) for k, v in meta.items()}
                np.savez(fh, **self._arrays(dtype), **text)
            else:
                from safetensors.numpy import save as st_save

                fh.write(st_save(self._arrays(dtype), metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Features:
        """Read features written by :meth:`save` (no pickle involved).

        Raises :class:`~neurohook.errors.FeaturesFileError` naming the file when it is missing,
        truncated, damaged, or not a neurohook features file.
        """
        path = Path(path)
        meta, arrays = _read(path, ("values", "unit_layer", "unit_index", "unit_stat"))
        try:
            info = json.loads(meta[_META_KEY])
            if info.get("version") != _FORMAT_VERSION:
                raise FeaturesFileError(path, f"unsupported features format version {info.get('version')!r}")
            layers = [decode(LayerSpan, d) for d in info["layers"]]
            names = info["unit_stat_names"]
            stats = np.array([names[i] for i in arrays["unit_stat"].tolist()], dtype=str)
            return cls(arrays["values"], info["ids"], layers, arrays["unit_layer"], arrays["unit_index"], stats)
        except FeaturesFileError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise FeaturesFileError(path, f"damaged features metadata ({type(e).__name__}: {e})") from None


#: Storage precisions of feature values (statistics are always accumulated in float32 or float64).
STORAGE_DTYPES = ("float32", "float16")


def _stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as stored on disk in ``dtype`` (one of STORAGE_DTYPES)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return np.ascontiguousarray(values)
    big = np.abs(values) > np.finfo(np.float16).max
    if big.any():
        col = int(np.argwhere(big)[0][1])
        raise ValueError(f"column {col} holds {float(np.abs(values[:, col]).max()):.4g}, beyond float16's range "
                         "(65504): store these features as float32")
    return np.ascontiguousarray(values, dtype=np.float16)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance stored by ``Features.save(..., provenance=)``, or None; reads only the header.

    Raises :class:`~neurohook.errors.FeaturesFileError` when the file cannot be read.
    """
    path = Path(path)
    meta, _ = _read(path, ())
    text = meta.get(_PROVENANCE_KEY)
    if text is None:
        return None
    try:
        out = json.loads(text)
    except ValueError as e:
        raise FeaturesFileError(path, f"damaged provenance metadata ({e})") from None
    if not isinstance(out, dict):
        raise FeaturesFileError(path, "damaged provenance metadata (not a JSON object)")
    return out


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged .npz / .safetensors file raises (UnicodeDecodeError is a ValueError)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, SafetensorError)


def _read(path: Path, names: Sequence[str]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata strings, the named arrays) of a features file; FeaturesFileError for anything unreadable."""
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".npz"):
        raise FeaturesFileError(path, f"unsupported features file suffix {path.suffix!r}; use .safetensors or .npz")
    if not path.is_file():
        raise FeaturesFileError(path, "no such file")
    errors = _read_errors()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = {k: z[k].tobytes().decode("utf-8") for k in (_META_KEY, _PROVENANCE_KEY) if k in z.files}
                arrays = {k: z[k] for k in names}
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata() or {})
                arrays = {k: f.get_tensor(k) for k in names}
    except errors as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise FeaturesFileError(path, f"not a readable features file ({type(e).__name__}{': ' + reason if reason else ''})") from None
    if _META_KEY not in meta:
        raise FeaturesFileError(path, "not a neurohook features file (no metadata)")
    return meta, arrays


def normalize_id(u: object) -> UtteranceId:
    """An utterance id as a JSON-safe str or int (NumPy/torch integers become int)."""
    if isinstance(u, (str, int)) and not isinstance(u, bool):
        return u
    if isinstance(u, np.integer):
        return int(u)
    if hasattr(u, "item") and getattr(u, "ndim", None) == 0:
        return normalize_id(u.item())
    raise TypeError(f"utterance ids must be str or int, got {type(u).__name__}: {u!r}")


def _units_from_spans(spans: Sequence[LayerSpan]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (layer index, unit index, statistic) for contiguous spans of stat blocks."""
    layer_idx: list[np.ndarray] = []
    unit_idx: list[np.ndarray] = []
    stat: list[np.ndarray] = []
    expected = 0
    for i, s in enumerate(spans):
        if s.start != expected:
            raise ValueError(f"layer spans must be contiguous; {s.name!r} starts at {s.start}, expected {expected}")
        n_stat = max(1, len(s.statistics))
        if s.width % n_stat:
            raise ValueError(f"layer {s.name!r}: width {s.width} not divisible by {n_stat} statistics")
        per = s.width // n_stat
        layer_idx.append(np.full(s.width, i, dtype=np.int64))
        unit_idx.append(np.tile(np.arange(per, dtype=np.int64), n_stat))
        stat.append(np.repeat(np.array(list(s.statistics) or ["value"], dtype=str), per))
        expected = s.end
    if not spans:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=str)
    return np.concatenate(layer_idx), np.concatenate(unit_idx), np.concatenate(stat)
