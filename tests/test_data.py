"""Data layer: manifest validation, audio loading, front-ends, batching, splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from neurohook.data import (
    AudioError,
    BucketBatchSampler,
    Manifest,
    ManifestError,
    Record,
    SplitError,
    energy_vad,
    load_audio,
    make_frontend,
    make_loader,
    read_manifest,
    speaker_disjoint_split,
)


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """(T, C) sines, channel c at amplitude 0.5 / (c + 1)."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 / (c + 1) * np.sin(2 * np.pi * freq * t) for c in range(channels)], axis=1)


# ---------------------------------------------------------------- manifests


def test_manifest_reports_every_problem_at_once(tmp_path: Path) -> None:
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, np.zeros(1600), 16000)
    lines = [
        "u1,a.wav,,,s1,male",
        "u2,b.wav,0.1,0.5,s1,male",
        "u1,c.wav,,,s2,female",  # duplicate id (line 4)
        "u3,gone.wav,,,s2,female",  # missing file (line 5)
        "u4,gone2.wav,,,s3,robot",  # missing file + unknown label (line 6)
        "u5,a.wav,0.5,0.2,s3,alien",  # end before start + unknown label (line 7)
        "u6,a.wav,x,,s3,male",  # bad number (line 8)
    ]
    m = write_csv(tmp_path / "m.csv", "utt_id,path,start,end,speaker,gender", lines)
    with pytest.raises(ManifestError) as err:
        read_manifest(m, label_values={"gender": {"male", "female"}})
    probs = {(p.kind, p.column): p for p in err.value.problems}
    assert probs[("duplicate utt_id", "utt_id")].count == 1
    assert probs[("duplicate utt_id", "utt_id")].lines == (4,)
    assert probs[("missing file", "path")].count == 2
    assert probs[("missing file", "path")].lines == (5, 6)
    assert probs[("unknown label value", "gender")].count == 2
    assert probs[("unknown label value", "gender")].examples == ("'robot'", "'alien'")
    assert probs[("end not after start", "end")].lines == (7,)
    assert probs[("not a finite number", "start")].lines == (8,)
    text = str(err.value)
    assert "5 problem(s)" in text and "line 5" in text and "gone.wav" in text


def test_manifest_missing_columns_and_first_rows_shown(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "utt_id,file", [f"u{i},x{i}.wav" for i in range(9)])
    with pytest.raises(ManifestError) as err:
        read_manifest(m, required=["speaker"])
    kinds = {(p.kind, p.column) for p in err.value.problems}
    assert kinds == {("missing column", "path"), ("missing column", "speaker")}
    m2 = write_csv(tmp_path / "m2.csv", "utt_id,path", [f"u{i},x{i}.wav" for i in range(9)])
    with pytest.raises(ManifestError) as err2:
        read_manifest(m2)
    (p,) = err2.value.problems
    assert p.count == 9 and p.lines == (2, 3, 4, 5, 6)  # count of all, first five rows shown


def test_manifest_jsonl_roundtrip(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.flac", np.zeros(800), 8000)
    rows = [
        {"utt_id": "x", "path": "audio/a.flac", "speaker": "s", "lang": "de"},
        {"utt_id": "y", "path": "audio/a.flac", "start": 0.0, "end": 0.05, "lang": "fr", "split": "test"},
    ]
    src = tmp_path / "m.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    man = read_manifest(src)
    assert man.ids == ["x", "y"] and man.labels("lang") == ["de", "fr"]
    assert man["y"].end == 0.05 and man["y"].split == "test" and man["x"].speaker == "s"
    assert man["x"].path == tmp_path / "audio" / "a.flac"
    for name in ("out.csv", "out.jsonl"):
        again = read_manifest(man.write(tmp_path / "sub" / ".." / name))
        assert [(r.utt_id, r.path.resolve(), r.start, r.end, r.speaker, r.split, dict(r.labels)) for r in again] == [
            (r.utt_id, r.path.resolve(), r.start, r.end, r.speaker, r.split, dict(r.labels)) for r in man
        ]


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_load_mono_resampled(tmp_path: Path, fmt: str, rate: int, channels: int) -> None:
    data = tone(rate, 0.5, 440.0, channels)
    path = tmp_path / f"x.{fmt}"
    sf.write(path, data, rate, subtype="PCM_16")
    native, r = load_audio(path, mono=False)
    assert r == rate and native.shape == (channels, len(data))
    assert np.abs(native.numpy() - data.T).max() <= 1.5 / 32768  # only 16-bit quantisation
    wave, r16 = load_audio(path, sample_rate=16000)
    assert r16 == 16000 and wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(len(wave) - 8000) <= 1
    t = np.arange(len(wave)) / 16000
    expect = np.mean([0.5 / (c + 1) for c in range(channels)]) * np.sin(2 * np.pi * 440 * t)
    mid = slice(400, len(wave) - 400)  # away from the resampler's edge effects
    assert np.abs(wave.numpy()[mid] - expect[mid]).max() < 2e-3


def test_load_segment(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(-0.5, 0.5, (32000, 2))
    sf.write(tmp_path / "s.wav", data, 16000, subtype="FLOAT")
    seg, _ = load_audio(tmp_path / "s.wav", start=0.25, end=1.5)
    np.testing.assert_allclose(seg.numpy(), data[4000:24000].mean(1), atol=1e-6)
    with pytest.raises(AudioError, match="outside the file"):
        load_audio(tmp_path / "s.wav", start=1.0, end=3.0)


def truncated_copy(src: Path, dst: Path) -> Path:
    b = src.read_bytes()
    dst.write_bytes(b[: len(b) // 2])
    return dst


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_truncated_file_raises(tmp_path: Path, fmt: str) -> None:
    good = tmp_path / f"good.{fmt}"
    sf.write(good, tone(16000, 1.0, channels=2), 16000, subtype="PCM_16")
    bad = truncated_copy(good, tmp_path / f"bad.{fmt}")
    with pytest.raises(AudioError) as err:
        load_audio(bad)
    assert str(bad) in str(err.value)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match="unreadable"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_energy_vad_trims_silence() -> None:
    sr = 16000
    x = torch.zeros(sr * 2)
    x[8000:24000] = 0.3 * torch.sin(torch.arange(16000) * 2 * np.pi * 200 / sr)
    x += 1e-4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    s, e = energy_vad(x, sr, margin_ms=0)
    assert abs(s - 8000) <= 400 and abs(e - 24000) <= 400
    assert energy_vad(torch.zeros(sr), sr) == (0, sr)


# ---------------------------------------------------------------- front-ends


def test_frontends_match_torchaudio() -> None:
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(3, 16000, generator=g) * 0.1
    lengths = torch.tensor([16000, 12345, 4000])
    waves[1, 12345:] = 0
    waves[2, 4000:] = 0
    mfcc = torchaudio.transforms.MFCC(
        sample_rate=16000, n_mfcc=40, melkwargs={"n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": 40}
    )
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80)
    refs = {
        "mfcc": lambda w: mfcc(w).T,
        "logmel": lambda w: torch.log(mel(w) + 1e-6).T,
        "kaldi_fbank": lambda w: torchaudio.compliance.kaldi.fbank(w[None], num_mel_bins=80, dither=0.0),
        "kaldi_mfcc": lambda w: torchaudio.compliance.kaldi.mfcc(w[None], num_ceps=40, num_mel_bins=40, dither=0.0),
        "waveform": lambda w: w[:, None],
    }
    for name, ref in refs.items():
        feats, fl = make_frontend(name)(waves, lengths)
        assert feats.shape[0] == 3 and fl.dtype == torch.int64, name
        for b in range(3):
            one = ref(waves[b, : int(lengths[b])])
            assert int(fl[b]) == one.shape[0], name
            torch.testing.assert_close(feats[b, : one.shape[0]], one, rtol=1e-4, atol=1e-4, msg=name)
            assert feats[b, one.shape[0] :].abs().sum() == 0, name
    feats, fl = make_frontend("mfcc")(waves[:1], lengths[:1])
    assert feats.shape == (1, 101, 40) and int(fl[0]) == 101  # 40 coefficients, 10 ms hop (paper A.1)
    with pytest.raises(ValueError, match="unknown front-end"):
        make_frontend("spectrogramz")


# ---------------------------------------------------------------- batching


def make_manifest(tmp_path: Path, n: int = 10, bad: int | None = None) -> tuple[Manifest, dict[str, np.ndarray]]:
    """n files of distinct lengths at 8 or 16 kHz (one truncated when ``bad`` is set)."""
    rng = np.random.default_rng(1)
    recs, truth = [], {}
    for i in range(n):
        rate = 16000 if i % 2 else 8000
        data = rng.uniform(-0.5, 0.5, int(rate * (0.2 + 0.1 * ((i * 7) % n))))
        path = tmp_path / f"u{i}.wav"
        sf.write(path, data, rate, subtype="FLOAT")
        if i == bad:
            truncated_copy(path, path)
        truth[f"u{i}"] = load_audio(path, sample_rate=16000)[0].numpy() if i != bad else None
        recs.append(Record(utt_id=f"u{i}", path=path, speaker=f"s{i % 3}", labels={"c": "ab"[i % 2]}))
    return Manifest(recs), truth


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_pads_and_returns_lengths(tmp_path: Path, workers: int) -> None:
    man, truth = make_manifest(tmp_path)
    loader = make_loader(man, batch_size=3, num_workers=workers)
    seen = []
    for ids, waves, lengths in loader:
        assert waves.shape == (len(ids), int(lengths.max())) and lengths.dtype == torch.int64
        for b, u in enumerate(ids):
            n = int(lengths[b])
            assert n == len(truth[u])
            np.testing.assert_array_equal(waves[b, :n].numpy(), truth[u])
            assert waves[b, n:].abs().sum() == 0
        seen += ids
    assert sorted(seen) == sorted(truth) and loader.skipped == 0


def test_bucketing_groups_similar_lengths() -> None:
    durs = [5.0, 1.0, 3.0, 1.1, 5.1, 3.1]
    batches = list(BucketBatchSampler(durs, 2))
    assert sorted(map(sorted, batches)) == [[0, 4], [1, 3], [2, 5]]
    shuffled = list(BucketBatchSampler(durs, 2, shuffle=True, seed=3))
    assert sorted(map(sorted, shuffled)) == [[0, 4], [1, 3], [2, 5]]
    capped = list(BucketBatchSampler(durs, 10, max_batch_seconds=6.5))
    assert all(len(b) * max(durs[i] for i in b) <= 6.5 or len(b) == 1 for b in capped)
    assert sorted(i for b in capped for i in b) == list(range(6))


def test_loader_skips_or_raises_on_corrupt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    man, truth = make_manifest(tmp_path, bad=4)
    loader = make_loader(man, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="neurohook.data.audio"):
        ids = [u for batch_ids, _, _ in loader for u in batch_ids]
    assert "u4" not in ids and len(ids) == 9
    assert loader.skipped == 1 and loader.failures[0][0] == "u4" and "truncated" in loader.failures[0][1]
    assert "skipped 1 unreadable" in caplog.text
    with pytest.raises(AudioError, match="u4.wav"):
        for _ in make_loader(man, batch_size=4, on_error="raise", num_workers=2):
            pass


# ---------------------------------------------------------------- splits


def split_manifest(n_spk: int = 8, per: int = 6) -> Manifest:
    recs = []
    for s in range(n_spk):
        for j in range(per + s % 3):  # unequal counts per speaker
            recs.append(
                Record(
                    utt_id=f"s{s}-{j}",
                    path=Path(f"s{s}-{j}.wav"),
                    speaker=f"s{s}",
                    labels={"gender": "mf"[s % 2], "channel": "xyz"[j % 3]},
                )
            )
    return Manifest(recs)


@pytest.mark.parametrize("label", ["gender", "channel"])
def test_speaker_disjoint_balanced_split(label: str) -> None:
    man = split_manifest()
    sp = speaker_disjoint_split(man, label, test_fraction=0.25, seed=0)
    spk = lambda ids: {man[u].speaker for u in ids}  # noqa: E731
    assert spk(sp.train).isdisjoint(spk(sp.test))
    for side in (sp.train, sp.test):
        counts = {}
        for u in side:
            counts[man[u].label(label)] = counts.get(man[u].label(label), 0) + 1
        assert set(counts) == set(man.labels(label)) and len(set(counts.values())) == 1  # balanced
    again = speaker_disjoint_split(man, label, test_fraction=0.25, seed=0)
    assert again == sp
    assert speaker_disjoint_split(man, label, test_fraction=0.25, seed=1) != sp
    marked = man.with_split(sp.assignment())
    assert set(marked.labels("split")) == {"train", "test"} and len(marked) == len(sp.train) + len(sp.test)


def test_split_refuses_class_with_one_speaker() -> None:
    man = split_manifest(n_spk=3)  # gender f: speaker s1 only
    with pytest.raises(SplitError, match="'f'"):
        speaker_disjoint_split(man, "gender")


def test_seed_streams_are_reproducible_and_independent():
    from neurohook.data.splits import seed_streams

    a, b = seed_streams(0), seed_streams(1)
    assert seed_streams(0) == a and a != b
    assert len(set(a)) == len(a)  # no two purposes of one seed share a stream
    draws = [np.random.default_rng(s).permutation(50) for s in a]
    assert all(not np.array_equal(draws[0], d) for d in draws[1:])


def test_one_rule_picks_every_test_side():
    from neurohook.data.splits import pick_test_groups

    rng = np.random.default_rng(0)
    test = pick_test_groups({"a": ["s1", "s2"], "b": ["s3"], "c": [f"t{i}" for i in range(10)]}, 0.25, rng)
    assert len(test & {"s1", "s2"}) == 1 and "s3" not in test and len(test & {f"t{i}" for i in range(10)}) == 2
    assert pick_test_groups({"a": ["x", "y", "z"]}, 0.1, rng, minimum=2) <= {"x", "y", "z"}
    assert len(pick_test_groups({"a": ["x", "y", "z"]}, 0.1, rng, minimum=2)) == 2


def test_dev_folds_cover_every_row_once_speaker_disjoint_with_every_class_on_every_side(caplog):
    from neurohook.data.splits import train_dev_folds, train_dev_split

    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(13), 7)  # 13 speakers of 7 rows, one gender each; channels mixed
    gender = np.where(speakers < 5, "f", "m")
    channel = np.array(["a", "b", "c"])[np.where(rng.random(len(speakers)) < 0.7, speakers % 3, rng.integers(0, 3, len(speakers)))]
    for labels in (gender, channel):
        folds = train_dev_folds(labels, 3, seed=4, speakers=speakers)
        devs = np.concatenate([d for _, d in folds])
        assert len(folds) == 3 and sorted(devs.tolist()) == list(range(len(labels)))  # each row on dev once
        for fit, dev in folds:
            assert sorted(np.concatenate([fit, dev]).tolist()) == list(range(len(labels)))
            assert not set(speakers[fit]) & set(speakers[dev])
            assert set(labels[fit]) == set(labels[dev]) == set(labels)
        sizes = [len(d) for _, d in folds]
        assert max(sizes) - min(sizes) <= 7 * 2  # dealt round robin: folds differ by at most a speaker a stratum
        again = train_dev_folds(labels, 3, seed=4, speakers=speakers)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(train_dev_folds(gender, 3, seed=5, speakers=speakers), folds))
    # a class of 2 speakers: folds by utterance (stratified), logged; a class of 2 rows: the one dev split
    few = np.where(speakers < 2, "f", "m")
    with caplog.at_level("INFO", logger="neurohook.data.splits"):
        folds = train_dev_folds(few, 3, seed=0, speakers=speakers)
    assert "by utterance" in caplog.text and len(folds) == 3
    assert any(set(speakers[f]) & set(speakers[d]) for f, d in folds)
    assert all(set(few[d]) == {"f", "m"} for _, d in folds)
    two = np.array(["f", "f"] + ["m"] * 20)
    (only,) = train_dev_folds(two, 3, 0.25, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(only, train_dev_split(two, 0.25, 0)))
    assert len(train_dev_folds(gender, 1, 0.25, 4, speakers)) == 1
    with pytest.raises(ValueError, match="folds must be >= 1"):
        train_dev_folds(gender, 0)
