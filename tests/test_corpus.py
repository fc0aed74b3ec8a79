"""The built-in eSpeak corpus at the tiny size: coverage, label consistency, reproducibility, gender pitch."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from neurohook.corpus import CHANNELS, CORPUS_VERSION, ENGLISH_ACCENTS, LANGUAGES, build_corpus, plan_corpus  # noqa: E402
from neurohook.corpus.espeak import Synthesizer, data_path  # noqa: E402
from neurohook.data import read_manifest  # noqa: E402
from neurohook.errors import FolderConflictError  # noqa: E402

REQUIRED = ("utt_id", "path", "speaker", "gender", "language", "accent", "channel", "split")


def rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (wavs, sidecars, manifest), by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny corpus built with 1 process (explicit folder) and 2 processes (default cache folder)."""
    base = tmp_path_factory.mktemp("corpus")
    one = build_corpus(base / "one", size="tiny", seed=0, workers=1, progress=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
    try:
        two = build_corpus(None, size="tiny", seed=0, workers=2, progress=False)
    finally:
        mp.undo()
    return one, two


def test_default_folder_is_under_xdg_cache(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, two = built
    assert two.parent.parent.parent.parent.parent.name == "cache"
    assert two.parent.parent.name == f"v{CORPUS_VERSION}" and two.parent.name == "tiny-0" and two.name == "manifest.csv"


def test_every_language_gender_accent_channel_present(built: tuple[Path, Path]) -> None:
    man = read_manifest(built[0], required=REQUIRED)  # validates: files exist, ids unique
    assert set(man.labels("language")) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert set(man.filter(language=lang).labels("gender")) == {"male", "female"}, lang
    assert set(man.filter(language="en").labels("accent")) == set(ENGLISH_ACCENTS)
    assert set(man.labels("channel")) == set(CHANNELS)
    for r in man:
        info = sf.info(str(r.path))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert 1.0 <= info.frames / info.samplerate <= 6.0


def _voice_file_languages() -> dict[str, str]:
    """eSpeak voice file name (lower case) -> its declared 'language' code, read from the data files."""
    out = {}
    for p in (data_path() / "lang").rglob("*"):
        if p.is_file():
            m = re.search(r"^language\s+(\S+)", p.read_text(encoding="utf-8", errors="replace"), re.M)
            if m:
                out[p.name.lower()] = m.group(1).lower()
    return out


def _variant_gender(variant: str) -> str:
    text = (data_path() / "voices" / "!v" / variant).read_text(encoding="utf-8", errors="replace")
    return re.search(r"^gender\s+(\w+)", text, re.M).group(1)


def test_labels_consistent_with_voice(built: tuple[Path, Path]) -> None:
    declared = _voice_file_languages()
    per_speaker: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for r in rows(built[0]):
        accent, _, variant = r["voice"].partition("+")
        assert accent == r["accent"] and variant == r["variant"]
        assert _variant_gender(variant) == r["gender"], r["utt_id"]
        lang_code = declared[accent.lower()]  # e.g. "en-gb-scotland", "en-gb" (file "en"), "cmn"
        assert lang_code.split("-")[0] == r["language"], r["utt_id"]
        per_speaker[r["speaker"]].add((r["voice"], r["gender"], r["language"], r["accent"], r["split"], r["pitch"]))
    assert all(len(v) == 1 for v in per_speaker.values()), "a speaker must be one stable identity"


def test_reproducible_across_process_counts_and_resume(built: tuple[Path, Path], tmp_path: Path) -> None:
    one, two = built
    h1, h2 = hashes(one.parent), hashes(two.parent)
    assert len(h1) > 2 * 36 and h1 == h2
    # a crashed build: some utterances missing, a stale temporary file, no manifest; resume it
    copy = tmp_path / "resume"
    shutil.copytree(one.parent, copy)
    wavs = sorted(copy.rglob("*.wav"))
    for p in wavs[::5]:
        p.unlink()
    (copy / "manifest.csv").unlink()
    (wavs[1].parent / f".{wavs[1].name}.123.tmp").write_bytes(b"partial")
    build_corpus(copy, size="tiny", seed=0, workers=1, progress=False)
    assert hashes(copy) == h1


def test_other_seed_differs_and_mismatched_folder_refused(built: tuple[Path, Path]) -> None:
    a = plan_corpus("tiny", 0)
    b = plan_corpus("tiny", 1)
    assert [s.speaker.voice for s in a] != [s.speaker.voice for s in b] or [s.seed for s in a] != [s.seed for s in b]
    with pytest.raises(FolderConflictError, match=r"another corpus \(seed 0 \(asked: 1\)\)"):
        build_corpus(built[0].parent, size="tiny", seed=1, workers=1, progress=False)


def test_synthesizer_is_independent_of_history() -> None:
    with Synthesizer() as tts:
        a = tts.synth("en-us+f2", "three one four", rate=170, pitch=50, pitch_range=50, seed=5).samples
    with Synthesizer() as tts:
        tts.synth("ru+m3", "один два три", rate=150, pitch=40, pitch_range=60, seed=9)
        tts.synth("de+f3", "eins zwei", rate=190, pitch=60, pitch_range=20, seed=2)
    with Synthesizer() as tts:
        b = tts.synth("en-us+f2", "three one four", rate=170, pitch=50, pitch_range=50, seed=5).samples
    assert a.dtype == np.int16 and len(a) > 22050 * 0.5
    assert np.array_equal(a, b)


def f0_median(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation F0 (60-400 Hz) over loud, periodic 40 ms frames."""
    win, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = int(sr / 400), int(sr / 60)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    energy = (frames**2).mean(1)
    f0s = []
    for f in frames[energy > 0.1 * energy.max()]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[win - 1 :]
        if ac[0] <= 0:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            f0s.append(sr / lag)
    return float(np.median(f0s)) if f0s else float("nan")


def test_pitch_differs_by_gender_but_the_ranges_overlap(built: tuple[Path, Path]) -> None:
    root = built[0].parent
    f0 = {"male": [], "female": []}
    for r in rows(built[0]):
        x, sr = sf.read(str(root / r["path"]))
        f0[r["gender"]].append(f0_median(x, sr))
    male, female = np.array(f0["male"]), np.array(f0["female"])
    assert np.median(male) < 140 < np.median(female)
    assert male.max() > female.min()  # overlapping: no clean pitch shift separates them
    best = max(((male < t).sum() + (female >= t).sum()) / (len(male) + len(female)) for t in np.r_[male, female])
    assert 0.6 < best < 1.0


def test_every_recording_factor_is_in_the_manifest_within_its_range(built: tuple[Path, Path]) -> None:
    rs = rows(built[0])
    noises = {r["noise"] for r in rs}
    assert noises <= {"none", "white", "pink", "brown", "babble"} and len(noises) >= 3
    for r in rs:
        assert 0.9 < float(r["vtl"]) < 1.12 and 0.85 <= float(r["rate_scale"]) <= 1.15
        assert float(r["rt60"]) == 0 or 0.2 <= float(r["rt60"]) <= 0.9
        assert (r["snr_db"] == "") == (r["noise"] == "none") and (r["babble"] != "") == (r["noise"] == "babble")
        assert -38 <= float(r["level_db"]) <= -18 and float(r["band_lo"]) < float(r["band_hi"])
        x, _ = sf.read(str(built[0].parent / r["path"]))
        level = 20 * np.log10(np.sqrt(np.mean(x**2)))
        assert abs(level - float(r["level_db"])) < 1.5, r["utt_id"]  # the recorded level is the audio's
    assert any(r["channel"] == "telephone" and float(r["loss"]) > 0 for r in rs)


def test_each_factor_does_what_it_says():
    import torch
    from neurohook.corpus.channels import telephone
    from neurohook.corpus.variation import Conditions, _add_noise, room_response, vtl_warp

    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 500 * t)
    for factor in (40 / 36, 40 / 44):
        spec = torch.fft.rfft(vtl_warp(tone, factor)).abs()
        peak = float(spec.argmax()) * 16000 / (2 * (len(spec) - 1))
        assert peak == pytest.approx(500 * factor, rel=0.01)  # every frequency scaled by the factor
    h = room_response(0.5, g)
    decay = torch.flip(torch.cumsum(torch.flip(h**2, [0]), 0), [0])  # Schroeder integral
    db = 10 * torch.log10(decay / decay[0])
    t20 = float((db > -20).sum()) / 16000  # extrapolate from -20 dB, as T20
    assert 3 * t20 == pytest.approx(0.5, rel=0.15)
    cond = Conditions(1.0, 0.0, "pink", 10.0, -20.0, 20.0, 7900.0, 16, 0.0)
    noisy = _add_noise(tone, cond, [], g)
    snr = 10 * torch.log10(tone.pow(2).sum() / (noisy - tone).pow(2).sum())
    assert float(snr) == pytest.approx(10.0, abs=0.05)
    lost = telephone(tone, loss=0.3, generator=g)
    silent = (lost.reshape(-1, 320)[:, 60:260].abs().amax(dim=1) < 1e-2).float().mean()  # packet centres
    assert 0.15 < float(silent) < 0.45


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_the_split_column_holds_test_speakers_of_every_language_and_accent(size):
    specs = plan_corpus(size, 0)
    test = {s.speaker.speaker for s in specs if s.split == "test"}
    train = {s.speaker.speaker for s in specs if s.split == "train"}
    assert test and not test & train  # speaker-disjoint
    for lang in LANGUAGES:
        assert {s.speaker.speaker for s in specs if s.speaker.language == lang} & test, lang
    if size == "small":  # two speakers per English accent: one of each on the test side
        for accent in ENGLISH_ACCENTS:
            assert {s.speaker.speaker for s in specs if s.speaker.accent == accent} & test, accent
