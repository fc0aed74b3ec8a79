"""eSpeak NG through ctypes (library and data from the PyPI package ``espeakng-loader``).

Facts this module is built on: output is 22050 Hz int16; the library is not thread-safe (one
synthesiser per process); rate/pitch/range/volume persist between calls (all four are set for every
utterance); voices are file names with an optional ``+variant`` (``en-gb-scotland+f2``); and the
output depends on what the process synthesised before (echo buffers, flutter phase, a random
generator seeded from the clock). :class:`Synthesizer` therefore loads a fresh copy of the
library state for each unit of work (dlopen ... dlclose) and seeds eSpeak's random generator, so
the same request always gives the same samples, in any process, after any history.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ESPEAK_RATE", "Event", "EspeakError", "Synthesis", "Synthesizer", "data_path", "voice_exists"]

logger = logging.getLogger(__name__)

#: eSpeak NG's output sample rate.
ESPEAK_RATE = 22050

# espeak_AUDIO_OUTPUT / options / parameters / event types / flags (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EV_LIST_TERMINATED, _EV_WORD, _EV_PHONEME = 0, 1, 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1

_LOCK = threading.Lock()  # the library is not thread-safe: one synthesiser at a time per process


class EspeakError(RuntimeError):
    """eSpeak NG failed (library not found, unknown voice, synthesis error)."""


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union { int number; const char *name; char string[8]; }
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Event:
    """A word or phoneme boundary: kind ``"word"``/``"phoneme"``, start sample (22050 Hz), label."""

    kind: str
    sample: int
    label: str


@dataclass(frozen=True)
class Synthesis:
    """One utterance: samples (T,) int16 at 22050 Hz and its word/phoneme events."""

    samples: np.ndarray
    events: tuple[Event, ...]

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.samples) / ESPEAK_RATE


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency missing
        raise EspeakError("the built-in corpus needs eSpeak NG: pip install espeakng-loader") from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def data_path() -> Path:
    """The espeak-ng-data folder shipped with espeakng-loader."""
    return Path(_paths()[1])


def voice_exists(name: str) -> bool:
    """Whether a voice file name (without ``+variant``) exists in the shipped data."""
    root = data_path()
    base, _, variant = name.partition("+")
    if variant and not (root / "voices" / "!v" / variant).is_file():
        return False
    return any(p.is_file() and p.name.lower() == base.lower() for p in (root / "lang").rglob("*"))


def _dlclose(handle: int) -> None:
    import _ctypes

    if sys.platform == "win32":  # pragma: no cover
        _ctypes.FreeLibrary(handle)
    else:
        _ctypes.dlclose(handle)


def _mapped(lib_path: str) -> bool:
    """Whether the library is still mapped into this process (Linux only; False elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            real = os.path.realpath(lib_path)
            return any(real in line for line in f)
    except OSError:
        return False


class Synthesizer:
    """A fresh eSpeak NG instance for one unit of work; use as a context manager.

    Example::

        with Synthesizer() as tts:
            out = tts.synth("en-gb-scotland+f2", "one two three", rate=170, pitch=50, pitch_range=50, seed=1)
    """

    _warned_unload = False

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._callback = _CALLBACK(self._on_audio)

    def _on_audio(self, wav: ctypes._Pointer, n: int, events: ctypes._Pointer) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            e = events[i]
            if e.type in (_EV_WORD, _EV_PHONEME):
                self._events.append((e.type, e.sample, e.text_position, e.length, bytes(e.id)))
            i += 1
        return 0

    def __enter__(self) -> Synthesizer:
        _LOCK.acquire()
        try:
            lib_path, data = _paths()
            lib = ctypes.CDLL(lib_path)
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INIT_DONT_EXIT | _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA
            )
            if rate != ESPEAK_RATE:
                raise EspeakError(f"espeak_Initialize returned {rate}, expected {ESPEAK_RATE} (data: {data})")
            lib.espeak_SetSynthCallback(self._callback)
            self._lib = lib
            self._lib_path = lib_path
        except BaseException:
            _LOCK.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._lib is not None:
                self._lib.espeak_Terminate()
                _dlclose(self._lib._handle)
                self._lib = None
                if not Synthesizer._warned_unload and _mapped(self._lib_path):
                    Synthesizer._warned_unload = True
                    logger.warning("libespeak-ng stayed loaded after dlclose: synthesis may not be bit-reproducible")
        finally:
            _LOCK.release()

    def synth(
        self,
        voice: str,
        text: str,
        *,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        seed: int = 0,
    ) -> Synthesis:
        """Synthesise UTF-8 ``text`` with ``voice`` (file name + optional ``+variant``); all parameters set."""
        lib = self._lib
        if lib is None:
            raise EspeakError("Synthesizer used outside its 'with' block")
        self._chunks.clear()
        self._events.clear()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown eSpeak voice {voice!r} (use file names such as 'en-us', 'cmn', 'en+f2')")
        for param, value in ((_RATE, rate), (_VOLUME, volume), (_PITCH, pitch), (_RANGE, pitch_range)):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
        lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0 or lib.espeak_Synchronize() != 0:
            raise EspeakError(f"espeak_Synth failed (status {status}) for voice {voice!r}, text {text!r}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        events = []
        for kind, sample, pos, length, ident in self._events:
            if kind == _EV_WORD:
                label = text[max(pos - 1, 0) : max(pos - 1, 0) + length]
                events.append(Event("word", sample, label))
            else:
                events.append(Event("phoneme", sample, ident.split(b"\0")[0].decode("utf-8", "replace")))
        return Synthesis(samples.astype(np.int16, copy=False), tuple(events))
