"""Build the built-in corpus: synthesise, record under each utterance's conditions, write 16 kHz wavs and a manifest.

Each utterance is one unit of work with a fresh synthesiser and its own seeds, so the audio bytes
and labels depend only on (size, seed): not on the number of processes, their scheduling, or on
an earlier interrupted build. Files are written atomically (temporary file + ``os.replace``); an
utterance is done when its ``.json`` sidecar and then its ``.wav`` exist, so a crashed build
resumes where it stopped. The manifest (``manifest.csv``) is written last.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm.auto import tqdm

from neurohook.errors import ConfigError, FolderConflictError
from neurohook.atomic import atomic_write_bytes
from neurohook.corpus.espeak import ESPEAK_RATE, Synthesizer
from neurohook.corpus.variation import render
from neurohook.corpus.plan import SIZES, UtteranceSpec, plan_corpus
from neurohook.corpus.text import join_tokens, prompt_tokens
from neurohook.data.manifest import RESERVED_COLUMNS, Manifest, Record

__all__ = ["CORPUS_VERSION", "MANIFEST_COLUMNS", "SAMPLE_RATE", "build_corpus", "cache_dir", "default_corpus_dir"]

logger = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]

#: Bump when the audio or labels a (size, seed) gives would change.
CORPUS_VERSION = 3  # 2: the split column is stratified by language and accent at every size; 3: real-world variation
SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 1.0, 6.0
#: The manifest's columns, in file order (start and end stay empty: every file is one utterance);
#: from vtl on, every recording factor of :mod:`neurohook.corpus.variation`.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "utt_id", "path", "start", "end", "speaker", "split", "gender", "language", "accent", "channel",
    "voice", "variant", "pitch", "pitch_range", "rate", "kind", "text", "duration", "events",
    "vtl", "rate_scale", "rt60", "noise", "snr_db", "level_db", "band_lo", "band_hi", "bits", "loss", "babble",
)  # fmt: skip


def cache_dir() -> Path:
    """neurohook's cache folder: ``$XDG_CACHE_HOME/neurohook`` (default ``~/.cache/neurohook``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neurohook"


def default_corpus_dir(size: str, seed: int) -> Path:
    """Where :func:`build_corpus` puts a corpus by default: ``<cache>/corpus/v<version>/<size>-<seed>``.

    The corpus version is part of the path, so a newer neurohook builds its corpus beside an older one
    instead of refusing the old cache.
    """
    return cache_dir() / "corpus" / f"v{CORPUS_VERSION}" / f"{size}-{seed}"



def _speak(voice: str, text: str, rate: int, pitch: int, pitch_range: int, seed: int) -> Any:
    with Synthesizer() as tts:  # fresh per call: the output depends on nothing before it
        return tts.synth(voice, text, rate=rate, pitch=pitch, pitch_range=pitch_range, volume=100, seed=seed)


def _synthesise(spec: UtteranceSpec) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    """eSpeak samples (T,) int16 at 22050 Hz, events and text, with 1-6 s by adjusting the prompt length."""
    spk = spec.speaker
    tokens = prompt_tokens(spk.language, spec.kind, random.Random(spec.seed))
    n = spec.n_tokens
    for _ in range(8):
        text = join_tokens(spk.language, tokens[:n])
        out = _speak(spk.voice, text, spec.rate, spk.pitch, spk.pitch_range, spec.seed)
        if out.seconds > MAX_SECONDS and n > 1:
            n -= 1
        elif out.seconds < MIN_SECONDS and n < len(tokens):
            n += 1
        else:
            break
    events = [{"kind": e.kind, "start": round(e.sample / ESPEAK_RATE, 5), "label": e.label} for e in out.events]
    return out.samples, events, text


def _to_16k(samples: np.ndarray) -> torch.Tensor:
    return AF.resample(torch.from_numpy(samples.astype(np.float32) / 32768.0), ESPEAK_RATE, SAMPLE_RATE)


def _babble(spec: UtteranceSpec) -> list[torch.Tensor]:
    """The babble talkers' speech at 16 kHz (synthesised only when the utterance's noise is babble)."""
    if spec.conditions is None or spec.conditions.noise != "babble":
        return []
    out = []
    for i, (language, voice) in enumerate(spec.babble):
        rng = random.Random(spec.seed + i + 1)
        text = join_tokens(language, prompt_tokens(language, "words", rng)[:8])
        out.append(_to_16k(_speak(voice, text, 175, 50, 50, spec.seed + i + 1).samples))
    return out


def _render(spec: UtteranceSpec, samples: np.ndarray) -> np.ndarray:
    """22050 Hz int16 -> 16 kHz, vocal tract, room, noise, channel, level -> int16 (T,), 1-6 s."""
    x = _to_16k(samples)
    gen = torch.Generator().manual_seed(spec.seed)
    if spec.conditions is not None:
        x = render(x, spec.conditions, spec.channel, vtl=spec.speaker.vtl, babble=_babble(spec), generator=gen)
    lo, hi = int(MIN_SECONDS * SAMPLE_RATE), int(MAX_SECONDS * SAMPLE_RATE)
    if x.shape[0] > hi:
        x = x[:hi]
    elif x.shape[0] < lo:
        x = torch.nn.functional.pad(x, (0, lo - x.shape[0]))
    return np.round(x.numpy() * 32767.0).clip(-32768, 32767).astype(np.int16)


def _row(spec: UtteranceSpec, text: str, duration: float) -> dict[str, str]:
    spk = spec.speaker
    return {
        "utt_id": spec.utt_id,
        "path": spec.relpath,
        "speaker": spk.speaker,
        "gender": spk.gender,
        "language": spk.language,
        "accent": spk.accent,
        "channel": spec.channel,
        "split": spec.split,
        "voice": spk.voice,
        "variant": spk.variant,
        "pitch": str(spk.pitch),
        "pitch_range": str(spk.pitch_range),
        "rate": str(spec.rate),
        "kind": spec.kind,
        "text": text,
        "duration": f"{duration:.4f}",
        "events": spec.relpath[: -len(".wav")] + ".json",
        "vtl": f"{spk.vtl:.4g}",
        **(spec.conditions.row() if spec.conditions is not None else {}),
        "babble": " ".join(voice for _, voice in spec.babble) if spec.conditions and spec.conditions.noise == "babble" else "",
    }


def _make_one(args: tuple[str, UtteranceSpec]) -> dict[str, str]:
    """Make (or reuse) one utterance under ``root``; returns its manifest row."""
    root, spec = Path(args[0]), args[1]
    wav = root / spec.relpath
    side = wav.with_suffix(".json")
    if wav.is_file() and side.is_file():  # done by an earlier (possibly interrupted) build
        meta = json.loads(side.read_text(encoding="utf-8"))
        return _row(spec, meta["text"], meta["duration"])
    wav.parent.mkdir(parents=True, exist_ok=True)
    samples, events, text = _synthesise(spec)
    audio = _render(spec, samples)
    duration = len(audio) / SAMPLE_RATE
    meta = {"utt_id": spec.utt_id, "text": text, "duration": duration, "events": events}
    atomic_write_bytes(side, json.dumps(meta, ensure_ascii=False, indent=0).encode("utf-8"))
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    atomic_write_bytes(wav, buf.getvalue())  # written last: its presence marks the utterance done
    return _row(spec, text, duration)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _check_build_info(out: Path, size: str, seed: int) -> None:
    info = {"corpus_version": CORPUS_VERSION, "size": size, "seed": seed, "sample_rate": SAMPLE_RATE}
    path = out / "build.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = {"build.json": "unreadable"}
        if old != info:
            differ = ", ".join(f"{k} {old.get(k)!r} (asked: {v!r})" for k, v in info.items() if old.get(k) != v)
            raise FolderConflictError(f"{out}/: holds another corpus ({differ or old}); choose another --out or remove it")
        return
    atomic_write_bytes(path, json.dumps(info, indent=1).encode("utf-8"))


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """The corpus manifest, written by :meth:`neurohook.data.Manifest.write` (paths relative to it)."""
    labels = [c for c in MANIFEST_COLUMNS if c not in RESERVED_COLUMNS]
    records = [Record(r["utt_id"], path.parent / r["path"], speaker=r["speaker"], split=r["split"],
                      labels={c: r[c] for c in labels}) for r in rows]
    Manifest(records, labels).write(path)


def build_corpus(
    out_dir: PathLike | None = None,
    size: str = "small",
    seed: int = 0,
    workers: int | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Build (or finish, or reuse) the built-in corpus; returns the path of its ``manifest.csv``.

    ``out_dir`` defaults to ``$XDG_CACHE_HOME/neurohook/corpus/<size>-<seed>``; ``workers``
    (processes) defaults to the CPU count. The result is the same for any ``workers``.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown corpus size {size!r}; choose from {list(SIZES)}")
    out = Path(out_dir) if out_dir is not None else default_corpus_dir(size, seed)
    out.mkdir(parents=True, exist_ok=True)
    _check_build_info(out, size, seed)
    manifest = out / "manifest.csv"
    specs = plan_corpus(size, seed)
    if manifest.is_file() and all((out / s.relpath).is_file() for s in specs):
        logger.info("corpus %s already built (%d utterances)", out, len(specs))
        return manifest
    for stale in out.glob("audio/*/.*.tmp"):  # from an interrupted build
        stale.unlink(missing_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    t0 = time.perf_counter()
    jobs = [(str(out), s) for s in specs]
    bar = tqdm(total=len(specs), desc=f"corpus {size}", unit="utt", disable=not progress)
    rows: dict[str, dict[str, str]] = {}
    try:
        if workers == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # same arithmetic as in worker processes
            try:
                for job in jobs:
                    row = _make_one(job)
                    rows[row["utt_id"]] = row
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            with mp.get_context(method).Pool(workers, initializer=_init_worker) as pool:
                for row in pool.imap_unordered(_make_one, jobs, chunksize=4):
                    rows[row["utt_id"]] = row
                    bar.update()
    finally:
        bar.close()
    _write_manifest(manifest, [rows[s.utt_id] for s in specs])
    wall = time.perf_counter() - t0
    audio_s = sum(float(r["duration"]) for r in rows.values())
    logger.info(
        "built corpus %s: %d utterances, %.1f s of audio in %.1f s with %d process(es)",
        out, len(specs), audio_s, wall, workers,
    )  # fmt: skip
    return manifest
