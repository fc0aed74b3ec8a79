"""Manifests: CSV or JSON-lines tables of utterances (path, utt_id, optional segment, speaker, split, labels).

A manifest row names one utterance: ``path`` (relative paths are resolved against the manifest's
folder, or ``root``), ``utt_id`` (unique), optional ``start``/``end`` in seconds (a segment of a
longer file), optional ``speaker`` and ``split``, and any number of label columns (gender,
language, dialect, channel, ...). :func:`read_manifest` validates the whole table and raises one
:class:`ManifestError` listing every problem with counts and the first offending rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union
from neurohook.errors import UserInputError
from neurohook.atomic import atomic_write_text

__all__ = [
    "RESERVED_COLUMNS",
    "Manifest",
    "ManifestError",
    "Problem",
    "Record",
    "atomic_write_text",
    "read_manifest",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Columns with a fixed meaning; every other column is a label column.
RESERVED_COLUMNS: tuple[str, ...] = ("utt_id", "path", "start", "end", "speaker", "split")
_REQUIRED = ("utt_id", "path")
_SHOW_ROWS = 5  # offending rows shown per problem


@dataclass(frozen=True)
class Record:
    """One utterance: a file (or a [start, end) segment of it, in seconds) with its labels."""

    utt_id: str
    path: Path
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    split: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, column: str) -> str:
        """The value of a label column (``speaker`` and ``split`` included)."""
        if column == "speaker" and self.speaker is not None:
            return self.speaker
        if column == "split" and self.split is not None:
            return self.split
        try:
            return self.labels[column]
        except KeyError:
            raise KeyError(f"utterance {self.utt_id!r} has no label column {column!r}") from None

    def to_row(self, root: Path | None = None) -> dict[str, str]:
        """The record as strings for writing (paths relative to ``root`` where possible)."""
        path = self.path
        if root is not None:
            try:
                path = Path(os.path.relpath(self.path, root))
            except ValueError:  # another drive on Windows
                pass
        row = {"utt_id": self.utt_id, "path": path.as_posix()}
        row["start"] = "" if self.start is None else repr(float(self.start))
        row["end"] = "" if self.end is None else repr(float(self.end))
        row["speaker"] = self.speaker or ""
        row["split"] = self.split or ""
        row.update(self.labels)
        return row


@dataclass(frozen=True)
class Problem:
    """One kind of validation problem: what, in which column, how many rows, and the first rows."""

    kind: str
    column: str | None
    count: int
    lines: tuple[int, ...]  # file line numbers (1-based) of the first offending rows
    examples: tuple[str, ...]
    detail: str = ""

    def __str__(self) -> str:
        where = f" in column {self.column!r}" if self.column else ""
        shown = ", ".join(f"line {n}: {e}" for n, e in zip(self.lines, self.examples))
        more = f" (first {len(self.lines)}: {shown})" if shown else ""
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.kind}{where}: {self.count} row(s){more}{detail}"


class ManifestError(UserInputError, ValueError):
    """A manifest failed validation; ``problems`` lists every problem found (not only the first)."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"manifest {source}: {len(self.problems)} problem(s)\n{lines}")


class _Collector:
    """Gathers offending rows per (kind, column) and builds :class:`Problem` objects."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str | None], list[tuple[int, str]]] = defaultdict(list)
        self._detail: dict[tuple[str, str | None], str] = {}

    def add(self, kind: str, column: str | None, line: int, example: str, detail: str = "") -> None:
        self._rows[(kind, column)].append((line, example))
        if detail:
            self._detail[(kind, column)] = detail

    def whole(self, kind: str, column: str | None, detail: str = "") -> None:
        """A problem of the table as a whole (no rows)."""
        self._rows.setdefault((kind, column), [])
        self._detail[(kind, column)] = detail

    def problems(self) -> list[Problem]:
        out = []
        for (kind, column), rows in self._rows.items():
            first = rows[:_SHOW_ROWS]
            out.append(
                Problem(
                    kind,
                    column,
                    len(rows),
                    tuple(n for n, _ in first),
                    tuple(e for _, e in first),
                    self._detail.get((kind, column), ""),
                )
            )
        return out


def _parse_time(value: Any) -> float | None:
    """A start/end cell as seconds, None when empty; ValueError when not a finite number."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    t = float(value)
    if not math.isfinite(t):
        raise ValueError(value)
    return t


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]], list[Problem]]:
    """Columns and (line number, row) pairs of a CSV or JSON-lines file, plus parse problems."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ManifestError(str(path), [Problem("not UTF-8 text", None, 1, (line,), (
            f"column {column}: byte {data[e.start:e.start + 1]!r}",), "save the manifest as UTF-8")]) from None
    problems = _Collector()
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        columns: list[str] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.add("invalid JSON", None, n, str(e))
                continue
            if not isinstance(obj, dict):
                problems.add("row is not a JSON object", None, n, type(obj).__name__)
                continue
            for k in obj:
                if k not in columns:
                    columns.append(k)
            rows.append((n, obj))
        return columns, rows, problems.problems()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], [], []
    header = [h.strip() for h in header]
    for c, k in Counter(header).items():
        if k > 1:
            problems.whole("duplicate column", c, f"appears {k} times in the header")
    for n, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            problems.add("wrong number of cells", None, n, f"{len(cells)} cells, header has {len(header)}")
            continue
        rows.append((n, dict(zip(header, cells))))
    return header, rows, problems.problems()


class Manifest:
    """A validated, ordered collection of :class:`Record` s with named label columns."""

    def __init__(self, records: Iterable[Record], label_columns: Sequence[str] | None = None) -> None:
        """Wrap records (ids must be unique); label columns default to the union of record labels."""
        self.records: list[Record] = list(records)
        ids = Counter(r.utt_id for r in self.records)
        dup = [u for u, k in ids.items() if k > 1]
        if dup:
            raise ValueError(f"duplicate utt_id(s) in manifest: {dup[:_SHOW_ROWS]} ({len(dup)} in all)")
        if label_columns is None:
            seen: dict[str, None] = {}
            for r in self.records:
                for k in r.labels:
                    seen.setdefault(k, None)
            label_columns = list(seen)
        self.label_columns: list[str] = list(label_columns)
        self._index = {r.utt_id: i for i, r in enumerate(self.records)}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, key: int | str) -> Record:
        """A record by position or by utt_id."""
        if isinstance(key, str):
            return self.records[self._index[key]]
        return self.records[key]

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._index

    def __repr__(self) -> str:
        return f"Manifest({len(self)} utterances, labels={self.label_columns})"

    @property
    def ids(self) -> list[str]:
        """Utterance ids in order."""
        return [r.utt_id for r in self.records]

    def labels(self, column: str) -> list[str]:
        """The values of one label column (or ``speaker``/``split``), one per utterance."""
        return [r.label(column) for r in self.records]

    def classes(self, column: str) -> list[str]:
        """Sorted distinct values of a label column."""
        return sorted(set(self.labels(column)))

    def filter(self, **equal: str | Collection[str]) -> Manifest:
        """Records whose columns equal the given value (or are in the given collection)."""

        def keep(r: Record) -> bool:
            for col, want in equal.items():
                v = r.label(col)
                if isinstance(want, str):
                    if v != want:
                        return False
                elif v not in want:
                    return False
            return True

        return Manifest([r for r in self.records if keep(r)], self.label_columns)

    def select(self, ids: Iterable[str]) -> Manifest:
        """The records with these ids, in that order."""
        ids = list(ids)
        missing = [u for u in ids if u not in self._index]
        if missing:
            raise KeyError(f"unknown utterance ids: {missing[:_SHOW_ROWS]} ({len(missing)} in all)")
        return Manifest([self[u] for u in ids], self.label_columns)

    def with_split(self, assignment: Mapping[str, str]) -> Manifest:
        """A copy whose ``split`` column is set from ``{utt_id: split}``; other rows are dropped."""
        return Manifest(
            [replace(r, split=assignment[r.utt_id]) for r in self.records if r.utt_id in assignment],
            self.label_columns,
        )

    def write(self, path: PathLike, *, relative: bool = True) -> Path:
        """Write atomically as CSV (or JSON-lines for .jsonl); paths relative to its folder."""
        path = Path(path)
        root = path.parent.resolve() if relative else None
        rows = [r.to_row(root) for r in self.records]
        columns = list(RESERVED_COLUMNS) + [c for c in self.label_columns if c not in RESERVED_COLUMNS]
        buf = io.StringIO(newline="")
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for row in rows:
                obj = {c: row.get(c, "") for c in columns if row.get(c, "") != ""}
                buf.write(json.dumps(obj, ensure_ascii=False) + "\n")
        else:
            w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
            w.writeheader()
            for row in rows:
                w.writerow({c: row.get(c, "") for c in columns})
        atomic_write_text(path, buf.getvalue())
        return path



def _record(line: int, row: Mapping[str, Any], columns: Sequence[str], label_cols: Sequence[str], base: Path,
            check_files: bool, label_values: Mapping[str, Collection[str]] | None, bad: _Collector) -> Record | None:
    """The Record of one manifest row, or None when the row has a problem (recorded in ``bad``)."""
    cells = {k: "" if v is None else str(v) for k, v in row.items()}
    utt_id = cells.get("utt_id", "").strip()
    rel = cells.get("path", "").strip()
    ok = True
    if "utt_id" in columns and not utt_id:
        bad.add("empty value", "utt_id", line, repr(cells.get("utt_id", "")))
        ok = False
    if "path" in columns and not rel:
        bad.add("empty value", "path", line, f"utt_id {utt_id!r}")
        ok = False
    start = end = None
    for col in ("start", "end"):
        try:
            t = _parse_time(cells.get(col))
        except ValueError:
            bad.add("not a finite number", col, line, repr(cells.get(col)))
            ok = False
            continue
        if t is not None and t < 0:
            bad.add("negative time", col, line, repr(cells.get(col)))
            ok = False
        if col == "start":
            start = t
        else:
            end = t
    if start is not None and end is not None and end <= start:
        bad.add("end not after start", "end", line, f"start {start}, end {end}")
        ok = False
    file = Path(rel) if Path(rel).is_absolute() else base / rel
    if check_files and rel and not file.is_file():
        bad.add("missing file", "path", line, str(file))
        ok = False
    labels = {c: cells.get(c, "") for c in label_cols}
    for col, allowed in (label_values or {}).items():
        if col in cells and cells[col] not in allowed:
            bad.add(
                "unknown label value", col, line, repr(cells[col]), f"allowed: {sorted(allowed)}"
            )
            ok = False
    if not (ok and utt_id and rel):
        return None
    return Record(utt_id=utt_id, path=file, start=start, end=end, speaker=cells.get("speaker") or None,
                  split=cells.get("split") or None, labels=labels)


def read_manifest(
    path: PathLike,
    *,
    root: PathLike | None = None,
    required: Sequence[str] = (),
    label_values: Mapping[str, Collection[str]] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Read and validate a CSV/JSON-lines manifest; raise :class:`ManifestError` listing all problems.

    ``required``: extra columns that must exist (e.g. ``["speaker", "gender"]``);
    ``label_values``: allowed values per label column (other values are reported);
    ``check_files``: report rows whose audio file does not exist.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    columns, rows, parse_problems = _read_rows(path)
    bad = _Collector()
    for col in [*_REQUIRED, *required, *(label_values or {})]:
        if col not in columns:
            bad.whole("missing column", col, f"columns present: {columns}")
    if not rows and not parse_problems:
        bad.whole("empty manifest", None, "no rows")
    label_cols = [c for c in columns if c not in RESERVED_COLUMNS]
    records: list[Record] = []
    first_line: dict[str, int] = {}
    dups: list[tuple[int, str]] = []
    for line, row in rows:
        utt_id = str(row.get("utt_id") or "").strip()
        if utt_id in first_line:
            dups.append((line, f"{utt_id!r} (first on line {first_line[utt_id]})"))
        elif utt_id:
            first_line[utt_id] = line
        record = _record(line, row, columns, label_cols, base, check_files, label_values, bad)
        if record is not None:
            records.append(record)
    for line, ex in dups:
        bad.add("duplicate utt_id", "utt_id", line, ex)
    problems = parse_problems + bad.problems()
    if problems:
        raise ManifestError(str(path), problems)
    return Manifest(records, label_cols)
