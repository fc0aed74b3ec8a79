"""Manifests from standard corpus layouts: Kaldi data folders, LibriSpeech, VoxCeleb 1/2, Common Voice.

Each ``from_*`` function reads a corpus's listing and metadata files (never its audio) and returns
a :class:`~neurohook.data.Manifest`; :func:`write` saves it as every manifest is saved (atomically,
paths relative to its folder). Genders take the built-in corpus's labels, ``male``/``female``
(Common Voice also ``other``), empty where unknown. A problem in a corpus file raises
:class:`CorpusError` naming the file and line (the command line: one line, exit status 2).

Example::

    write(from_librispeech("LibriSpeech"), "librispeech.csv")   # neurohook extract --manifest librispeech.csv
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn, Union

from neurohook.data.manifest import Manifest, Record
from neurohook.errors import FileInputError

__all__ = ["CorpusError", "from_commonvoice", "from_kaldi", "from_librispeech", "from_voxceleb", "write"]

PathLike = Union[str, "os.PathLike[str]"]

# Gender values of every supported corpus (lower-cased) -> the built-in corpus's labels ("" = unknown).
_GENDERS = {"m": "male", "male": "male", "male_masculine": "male", "f": "female", "female": "female",
            "female_feminine": "female", "other": "other", "intersex": "other", "transgender": "other",
            "non-binary": "other", "do_not_wish_to_say": "", "": ""}
_MF = ("m", "f")
_COMMON_VOICE_GENDERS = tuple(g for g in _GENDERS if g not in _MF)
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]+)*")


class CorpusError(FileInputError, ValueError):
    """A corpus file that is missing or malformed; the message is ``"<file>: line <n>: <reason>"``."""


def _fail(path: Path, line: int, reason: str) -> NoReturn:
    raise CorpusError(path, f"line {line}: {reason}")


def _folder(root: PathLike, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise CorpusError(path, f"not a folder ({what})")
    return path


def _lines(path: Path, hint: str = "") -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 file; CorpusError when missing or not UTF-8."""
    try:
        f = open(path, "rb")
    except OSError as e:
        reason = "no such file" if isinstance(e, FileNotFoundError) else f"cannot be read ({e.strerror})"
        raise CorpusError(path, reason + (f" ({hint})" if hint else "")) from None
    with f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                _fail(path, n, "not UTF-8 text")
            if line.strip():
                yield n, line


def _gender(value: str, path: Path, line: int, allowed: tuple[str, ...]) -> str:
    """A corpus's gender value as the built-in corpus's label; CorpusError naming the line when unknown."""
    v = value.strip().lower()
    if v not in allowed:
        _fail(path, line, f"unknown gender {value!r} (expected one of: {', '.join(g for g in allowed if g)})")
    return _GENDERS[v]


def _manifest(records: list[Record], columns: list[str], where: Path, layout: str) -> Manifest:
    if not records:
        raise CorpusError(where, f"no utterances found (expected {layout})")
    return Manifest(records, columns)  # ids are unique: every converter refuses a duplicate first


# Kaldi data folders
def _kaldi_table(path: Path, fields: int, usage: str, hint: str = "",
                 unsupported: Mapping[int, str] | None = None) -> dict[str, tuple[int, list[str]]]:
    """``{key: (line, values)}`` of a Kaldi table of ``key value...`` lines.

    ``fields`` counts the values after the key; 0 takes the rest of the line as one value (perhaps
    empty). ``unsupported`` maps a field count to why such a line is refused.
    """
    table: dict[str, tuple[int, list[str]]] = {}
    for n, line in _lines(path, hint):
        if fields == 0:
            parts = line.strip().split(maxsplit=1)
            values = [parts[1].strip() if len(parts) > 1 else ""]
        else:
            parts = line.split()
            if len(parts) != fields + 1:
                wrong = f"{len(parts)} field(s), expected {fields + 1}: {usage}"
                _fail(path, n, (unsupported or {}).get(len(parts), wrong))
            values = parts[1:]
        key = parts[0]
        if key in table:
            _fail(path, n, f"duplicate id {key!r} (first on line {table[key][0]})")
        table[key] = (n, values)
    return table


def _kaldi_recordings(path: Path, base: Path, check_files: bool) -> dict[str, tuple[int, Path]]:
    """``{recording: (line, audio file)}`` of a wav.scp; piped commands and archives are refused."""
    out: dict[str, tuple[int, Path]] = {}
    usage = "<recording-id> <audio file>"
    for rec, (n, [spec]) in _kaldi_table(path, 0, usage, "a Kaldi data folder needs wav.scp and utt2spk").items():
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        if not spec:
            _fail(path, n, f"recording {rec!r} has no audio file ({usage})")
        if spec.endswith("|"):
            _fail(path, n, f"piped command {shown!r} is not supported: write the audio to files "
                           "(e.g. with sox or wav-copy) and list their paths")
        if spec == "-" or re.search(r"\.ark:\d+$", spec):
            _fail(path, n, f"archive or standard input {shown!r} is not supported: list plain audio files")
        file = Path(spec) if Path(spec).is_absolute() else base / spec
        if check_files and not file.is_file():
            _fail(path, n, f"no such audio file {file} (relative paths are resolved against {base}: "
                           "set the audio root)")
        out[rec] = (n, file)
    return out


def _kaldi_segments(path: Path, recordings: Mapping[str, tuple[int, Path]]
                    ) -> dict[str, tuple[int, Path, float | None, float | None]]:
    """``{utterance: (line, file, start, end)}`` of a segments file (end None: to the end of the file)."""
    out: dict[str, tuple[int, Path, float | None, float | None]] = {}
    channel = {5: "a channel field is not supported (neurohook mixes every channel down to mono)"}
    for utt, (n, [rec, s, e]) in _kaldi_table(path, 3, "<utterance-id> <recording-id> <start> <end>",
                                              unsupported=channel).items():
        if rec not in recordings:
            _fail(path, n, f"unknown recording {rec!r} (not in wav.scp)")
        try:
            start, end = float(s), float(e)
        except ValueError:
            _fail(path, n, f"start and end must be seconds, got {s!r} and {e!r}")
        if not (0 <= start < float("inf")) or (end != -1 and not start < end < float("inf")):
            _fail(path, n, f"empty or invalid segment [{s}, {e}] (end -1 means the end of the recording)")
        out[utt] = (n, recordings[rec][1], start, None if end == -1 else end)
    return out


def from_kaldi(data_dir: PathLike, *, audio_root: PathLike | None = None, check_files: bool = True) -> Manifest:
    """The utterances of a Kaldi data folder: wav.scp, utt2spk; optional segments, spk2gender, text.

    Example::

        manifest = from_kaldi("egs/mycorpus/s5/data/train", audio_root="egs/mycorpus/s5")

    With ``segments`` an utterance is a ``[start, end)`` part of a recording (the manifest's
    ``start``/``end``; end -1: to the end of the file). Columns: ``speaker``; ``gender`` (``m``/``f``
    -> ``male``/``female``, empty for speakers it lacks) with ``spk2gender``; ``text`` with ``text``.

    Args:
        audio_root: folder that relative wav.scp paths are resolved against; default: the current
            folder (Kaldi resolves them against the recipe folder its scripts run in).
        check_files: refuse a wav.scp line whose audio file does not exist (a wrong ``audio_root``).

    Raises:
        CorpusError: no wav.scp or utt2spk, a malformed line, a piped command, a duplicate or unknown id.
    """
    d = _folder(data_dir, "a Kaldi data folder with wav.scp and utt2spk")
    base = Path(audio_root).absolute() if audio_root is not None else Path.cwd()
    recordings = _kaldi_recordings(d / "wav.scp", base, check_files)
    source = d / "segments" if (d / "segments").exists() else d / "wav.scp"
    utts = (_kaldi_segments(source, recordings) if source.name == "segments"
            else {u: (n, file, None, None) for u, (n, file) in recordings.items()})
    per_utt = {"utt2spk": (1, "<utterance-id> <speaker-id>"), "text": (0, "<utterance-id> <transcript>")}
    tables: dict[str, dict[str, tuple[int, list[str]]]] = {}
    for name, (fields, usage) in per_utt.items():
        if name == "utt2spk" or (d / name).exists():
            tables[name] = table = _kaldi_table(d / name, fields, usage, "a Kaldi data folder needs utt2spk")
            for utt, (n, _) in table.items():
                if utt not in utts:
                    _fail(d / name, n, f"unknown utterance {utt!r} (not in {source.name})")
    speaker = {u: v[0] for u, (_, v) in tables["utt2spk"].items()}
    for utt, (n, *_) in utts.items():
        if utt not in speaker:
            _fail(source, n, f"utterance {utt!r} has no speaker in utt2spk")
    columns = [c for c, name in (("gender", "spk2gender"), ("text", "text")) if (d / name).exists()]
    genders = {s: _gender(g, d / "spk2gender", n, _MF) for s, (n, [g])
               in _kaldi_table(d / "spk2gender", 1, "<speaker-id> m|f").items()} if "gender" in columns else {}
    records: list[Record] = []
    for u, (_, file, start, end) in utts.items():
        labels = {"gender": genders.get(speaker[u], ""), "text": tables.get("text", {}).get(u, (0, [""]))[1][0]}
        records.append(Record(u, file, start, end, speaker=speaker[u], labels={c: labels[c] for c in columns}))
    return _manifest(records, columns, source, "one line per recording or segment")


# LibriSpeech
def _librispeech_speakers(path: Path) -> dict[str, tuple[int, str, str]]:
    """``{speaker: (line, gender, subset)}`` of SPEAKERS.TXT (``;`` starts a comment line)."""
    out: dict[str, tuple[int, str, str]] = {}
    for n, line in _lines(path):
        if line.lstrip().startswith(";"):
            continue
        cells = [c.strip() for c in line.split("|", 4)]  # a NAME may hold '|'
        if len(cells) != 5:
            _fail(path, n, f"{len(cells)} field(s), expected 5: ID | SEX | SUBSET | MINUTES | NAME")
        spk, sex, subset = cells[:3]
        if spk in out:
            _fail(path, n, f"duplicate speaker {spk!r} (first on line {out[spk][0]})")
        out[spk] = (n, _gender(sex, path, n, _MF), subset)
    return out


def _librispeech_texts(path: Path, chapter: Path) -> dict[str, str]:
    """``{utterance: text}`` of a chapter's ``<spk>-<chapter>.trans.txt`` ({} when there is none)."""
    if not path.is_file():
        return {}
    texts: dict[str, tuple[int, str]] = {}
    for n, line in _lines(path):
        utt, _, text = line.strip().partition(" ")
        if utt in texts:
            _fail(path, n, f"duplicate utterance {utt!r} (first on line {texts[utt][0]})")
        if not (chapter / f"{utt}.flac").is_file():
            _fail(path, n, f"utterance {utt!r} has no audio file {utt}.flac in {chapter}")
        texts[utt] = (n, text.strip())
    return {u: t for u, (_, t) in texts.items()}


def from_librispeech(root: PathLike) -> Manifest:
    """The utterances of a LibriSpeech folder: ``SPEAKERS.TXT`` and ``[<subset>/]<spk>/<chapter>/*.flac``.

    Example::

        manifest = from_librispeech("LibriSpeech")   # every subset; or "LibriSpeech/dev-clean": one

    Columns: ``speaker``, ``gender`` (SEX M/F -> male/female; empty when unlisted), ``subset`` (the
    audio's subset folder, else SPEAKERS.TXT's) and ``text`` (the chapter's .trans.txt, else empty).

    Raises:
        CorpusError: no SPEAKERS.TXT here or one up, a malformed line, a transcript without audio, no audio.
    """
    root = _folder(root, "a LibriSpeech folder with SPEAKERS.TXT")
    listing = next((d / "SPEAKERS.TXT" for d in (root, root.parent) if (d / "SPEAKERS.TXT").is_file()), None)
    if listing is None:
        raise CorpusError(root / "SPEAKERS.TXT", "no such file (looked in the folder and its parent)")
    speakers = _librispeech_speakers(listing)
    chapters = sorted({f.parent for pattern in ("*/*/*.flac", "*/*/*/*.flac") for f in root.glob(pattern)})
    records: dict[str, Record] = {}
    for chapter in chapters:
        spk, number = chapter.parent.name, chapter.name
        folder = chapter.parent.parent.name if chapter.parent.parent != root else ""  # <subset>/<spk>/<chapter>
        texts = _librispeech_texts(chapter / f"{spk}-{number}.trans.txt", chapter)
        for flac in sorted(chapter.glob("*.flac")):
            utt = flac.stem
            if not utt.startswith(f"{spk}-{number}-"):
                raise CorpusError(flac, f"not a LibriSpeech file name (expected {spk}-{number}-NNNN.flac)")
            if utt in records:
                raise CorpusError(flac, f"duplicate utterance {utt!r} (also {records[utt].path})")
            _, gender, subset = speakers.get(spk, (0, "", ""))
            labels = {"gender": gender, "subset": folder or subset, "text": texts.get(utt, "")}
            records[utt] = Record(utt, flac.absolute(), speaker=spk, labels=labels)
    return _manifest(list(records.values()), ["gender", "subset", "text"], root,
                     "<subset>/<speaker>/<chapter>/*.flac or <speaker>/<chapter>/*.flac")


# VoxCeleb
def _voxceleb_meta(root: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Speaker metadata of vox1_meta.csv / vox2_meta.csv (in ``root`` or its parent) and its columns."""
    wanted = {"gender": "gender", "nationality": "nationality", "subset": "set"}  # column: header (lower case)
    meta: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    first: dict[str, str] = {}
    for name in ("vox1_meta.csv", "vox2_meta.csv"):
        path = next((d / name for d in (root, root.parent) if (d / name).is_file()), None)
        if path is None:
            continue
        delimiter, header, ids = "", list[str](), list[int]()
        for n, line in _lines(path):
            line = line.rstrip(" \r")
            if not header:
                delimiter = "\t" if "\t" in line else ","
                header = [h.strip().lower() for h in line.split(delimiter)]
                ids = [i for i, h in enumerate(header) if h.startswith("voxceleb") and h.endswith("id")]
                if not ids or "gender" not in header:
                    _fail(path, n, f"expected a header with 'VoxCeleb ID' and 'Gender' columns, got {line!r}")
                columns += [c for c, h in wanted.items() if h in header and c not in columns]
                continue
            cells = [c.strip() for c in line.split(delimiter)]
            if len(cells) != len(header):
                _fail(path, n, f"{len(cells)} field(s), header has {len(header)}")
            spk = cells[ids[0]]
            if spk in meta:
                _fail(path, n, f"duplicate speaker {spk!r} (first on {first[spk]})")
            first[spk] = f"line {n} of {path.name}"
            meta[spk] = {c: cells[header.index(h)] for c, h in wanted.items() if h in header}
            meta[spk]["gender"] = _gender(meta[spk]["gender"], path, n, _MF)
    return meta, columns


def from_voxceleb(root: PathLike) -> Manifest:
    """The utterances of VoxCeleb 1 or 2: ``<id>/<video>/*.wav|*.m4a`` under ``root``, ``root/wav`` or ``root/aac``.

    Example::

        manifest = from_voxceleb("voxceleb1/dev")   # dev/wav/id10001/1zcIwhmdeo4/00001.wav; vox1_meta.csv

    Utterance ids are ``<id>/<video>/<clip>`` (``id10001/1zcIwhmdeo4/00001``). Columns: ``speaker``,
    ``video``; from vox1_meta.csv (tab-separated) or vox2_meta.csv (commas), in ``root`` or its parent:
    ``gender`` (m/f -> male/female), ``nationality`` (VoxCeleb 1), ``subset`` (Set); empty when unlisted.

    Raises:
        CorpusError: a malformed metadata line, a clip found twice (.wav and .m4a, wav/ and aac/), no audio.
    """
    root = _folder(root, "a VoxCeleb folder of <id>/<video>/*.wav")
    bases = [b for b in (root / "wav", root / "aac") if b.is_dir()] or [root]
    meta, columns = _voxceleb_meta(root)
    records: dict[str, Record] = {}
    for base in bases:
        for clip in sorted(base.glob("*/*/*")):
            if clip.suffix.lower() not in (".wav", ".m4a") or not clip.is_file():
                continue
            spk, video = clip.parent.parent.name, clip.parent.name
            utt = f"{spk}/{video}/{clip.stem}"
            if utt in records:
                raise CorpusError(clip, f"a second audio file of utterance {utt} (also {records[utt].path}): keep one")
            labels = {"video": video, **{c: meta.get(spk, {}).get(c, "") for c in columns}}
            records[utt] = Record(utt, clip.absolute(), speaker=spk, labels=labels)
    return _manifest(list(records.values()), ["video", *columns], root, "<id>/<video>/*.wav or *.m4a")


# Common Voice
def from_commonvoice(root: PathLike, *, language: str | None = None, check_files: bool = False) -> Manifest:
    """The validated utterances of a Common Voice language folder: ``validated.tsv`` and ``clips/``.

    Example::

        manifest = from_commonvoice("cv-corpus-16.1-2023-12-06/en")

    Utterance ids are clip names without ``.mp3`` (early releases' paths lack it: it is added).
    Columns: ``speaker`` (client_id), ``gender`` (male, female, other or empty; ``male_masculine``,
    ``female_feminine`` -> male, female; intersex, transgender, non-binary -> other;
    do_not_wish_to_say -> empty), ``age``, ``accent`` (accents, or accent), ``language``, ``text``.

    Args:
        language: the language of rows without a ``locale`` (older releases have no such column);
            default: the folder's name when it is a language code (``en``, ``zh-CN``).
        check_files: refuse a row whose clip does not exist (off: extraction reports missing clips).

    Raises:
        CorpusError: no validated.tsv, client_id or path column, a malformed row, a duplicate clip.
    """
    root = _folder(root, "a Common Voice language folder with validated.tsv and clips/")
    table = root / "validated.tsv"
    fallback = language or (root.name if _LANGUAGE_CODE.fullmatch(root.name) else None)
    header: list[str] = []
    accent: str | None = None
    first: dict[str, int] = {}
    records: list[Record] = []
    for n, line in _lines(table, "a Common Voice language folder has validated.tsv and clips/"):
        cells = line.split("\t")
        if not header:
            header = [h.strip() for h in cells]
            missing = [c for c in ("client_id", "path") if c not in header]
            if missing:
                _fail(table, n, f"no {' or '.join(missing)} column in the header {header}")
            accent = next((c for c in ("accents", "accent") if c in header), None)
            continue
        if len(cells) != len(header):
            _fail(table, n, f"{len(cells)} field(s), header has {len(header)}")
        row = dict(zip(header, cells))
        clip = row["path"].strip() or _fail(table, n, "empty path")
        clip = clip if Path(clip).suffix else clip + ".mp3"
        utt = Path(clip).stem
        if utt in first:
            _fail(table, n, f"duplicate clip {clip!r} (first on line {first[utt]})")
        first[utt] = n
        lang = row.get("locale", "").strip() or fallback
        if not lang:
            _fail(table, n, f"no locale, and the folder name {root.name!r} is not a language code: give the language")
        file = (root / "clips" / clip).absolute()
        if check_files and not file.is_file():
            _fail(table, n, f"no such clip {file}")
        labels = {"gender": _gender(row.get("gender", ""), table, n, _COMMON_VOICE_GENDERS),
                  "age": row.get("age", "").strip(), "accent": row[accent].strip() if accent else "",
                  "language": lang, "text": row.get("sentence", "").strip()}
        records.append(Record(utt, file, speaker=row["client_id"].strip() or None, labels=labels))
    return _manifest(records, ["gender", "age", "accent", "language", "text"], table, "a header and one row per clip")


def write(manifest: Manifest, path: PathLike) -> Path:
    """Write a converted manifest: CSV (JSON-lines for ``.jsonl``), atomically, paths relative to its folder.

    Example::

        write(from_voxceleb("voxceleb1/test"), "vox1-test.csv")    # read back with read_manifest

    Returns the path written (by :meth:`Manifest.write`, the writer of every manifest)."""
    return manifest.write(path)
