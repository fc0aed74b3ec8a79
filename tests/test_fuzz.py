"""Generated bad inputs (manifests, audio headers, flag values): each gets exit status 2 and one line
on stderr naming the input, with no traceback, and nothing is written."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from helpers import assert_one_line, cli, files_under, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("fuzz"), n=4)


def _manifests() -> list[tuple[str, bytes]]:
    """(name, bytes) of broken manifests, each broken in one way."""
    good = ["utt_id,path,speaker", "u00,u00.wav,s0", "u01,u01.wav,s1"]
    csv = lambda rows: ("\n".join(rows) + "\n").encode()  # noqa: E731
    rng = np.random.default_rng(0)
    cases = [
        ("no-path.csv", csv(["utt_id,speaker", "u00,s0"])),
        ("no-id.csv", csv(["path,speaker", "u00.wav,s0"])),
        ("extra-cell.csv", csv([*good, "u02,u02.wav,s2,oops"])),
        ("empty-id.csv", csv([*good, ",u02.wav,s2"])),
        ("duplicate-id.csv", csv([*good, "u00,u01.wav,s2"])),
        ("negative-start.csv", csv(["utt_id,path,start", "u00,u00.wav,-1"])),
        ("end-before-start.csv", csv(["utt_id,path,start,end", "u00,u00.wav,0.5,0.2"])),
        ("start-text.csv", csv(["utt_id,path,start", "u00,u00.wav,abc"])),
        ("start-nan.csv", csv(["utt_id,path,start", "u00,u00.wav,nan"])),
        ("missing-file.csv", csv([*good, "u02,no-such.wav,s2"])),
        ("empty.csv", b""),
        ("header-only.csv", csv(good[:1])),
        ("duplicate-column.csv", csv(["utt_id,path,path", "u00,u00.wav,u00.wav"])),
        ("bad.jsonl", b'{"utt_id": "u00", "path": "u00.wav"}\n{not json\n'),
        ("list-row.jsonl", b'["u00", "u00.wav"]\n'),
    ]
    for i in range(5):  # a byte that is not UTF-8 at a random place of a good manifest
        data = bytearray(csv(good))
        data.insert(int(rng.integers(0, len(data))), 0xFF)
        cases.append((f"not-utf8-{i}.csv", bytes(data)))
    return cases


@pytest.mark.parametrize("name, data", _manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_broken_manifests(corpus, tmp_path, capsys, name, data):
    path = corpus.parent / name
    path.write_bytes(data)
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", path, "--out", tmp_path / "out")
    assert_one_line(code, err, name)
    assert files_under(tmp_path / "out") == []


def _audio() -> list[tuple[str, bytes | None]]:
    """(name, bytes) of broken audio files (None: write a WAV of NaN samples)."""
    rng = np.random.default_rng(1)
    riff = lambda size, body: b"RIFF" + struct.pack("<I", size) + b"WAVE" + body  # noqa: E731
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    cases: list[tuple[str, bytes | None]] = [
        ("zero-bytes.wav", b""),
        ("text.wav", b"this is not audio\n"),
        ("no-data-chunk.wav", riff(36, fmt)),
        ("truncated-data.wav", riff(36 + 32000, fmt + b"data" + struct.pack("<I", 32000) + bytes(1000))),
        ("bad-fmt.wav", riff(36, b"fmt " + struct.pack("<I", 16) + bytes(8))),
        ("nan.wav", None),
    ]
    for i in range(4):
        cases.append((f"random-{i}.wav", bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8))))
    for i in range(2):  # a good header, then garbage where the format block belongs
        cases.append((f"garbled-{i}.wav", riff(100, bytes(rng.integers(0, 256, 60, dtype=np.uint8)))))
    return cases


@pytest.mark.parametrize("name, data", _audio(), ids=lambda v: v if isinstance(v, str) else "")
def test_broken_audio_under_on_error_raise(corpus, tmp_path, capsys, name, data):
    path = corpus.parent / name
    if data is None:
        sf.write(path, np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    else:
        path.write_bytes(data)
    manifest = corpus.parent / f"{name}.csv"
    manifest.write_text(f"utt_id,path\nu00,u00.wav\nbroken,{name}\n")
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", manifest, "--out", tmp_path / "out",
                    "--on-error", "raise")
    assert_one_line(code, err, name)
    assert files_under(tmp_path / "out") == []


FLAGS = [
    ("extract", "--batch-size", "0"), ("extract", "--batch-size", "-1"), ("extract", "--batch-size", "x"),
    ("extract", "--batch-size", "1.5"), ("extract", "--shard-size", "0"), ("extract", "--pooling", "median"),
    ("extract", "--device", "gpu7"), ("extract", "--size", "huge"), ("extract", "--on-error", "ignore"),
    ("extract", "--layers", "conv1", "nosuchlayer"), ("extract", "--model", "wav3vec"),
    ("analyze", "--seeds", "-3"), ("analyze", "--epochs", "0"), ("analyze", "--test-size", "0"),
    ("analyze", "--test-size", "nan"), ("analyze", "--lr", "0"), ("analyze", "--l2", "-0.1"),
    ("analyze", "--tasks", "no_such_column"),
]


@pytest.mark.parametrize("case", FLAGS, ids=" ".join)
def test_bad_flag_values(corpus, tmp_path, capsys, case):
    command, flag, *values = case
    out = tmp_path / "out"
    if command == "extract":
        base = ["extract", "--model", "sre-cnn", "--manifest", corpus, "--out", out]
    else:
        from neurohook.features import Features, LayerSpan

        ids = [f"u{i:02d}" for i in range(4)]
        Features(np.zeros((4, 4), np.float32), ids, [LayerSpan("L", 0, 4, "mean")]).save(tmp_path / "f.npz")
        base = ["analyze", "--features", tmp_path / "f.npz", "--manifest", corpus, "--tasks", "speaker",
                "--out", out / "r.json"]
    code, err = cli(capsys, *base, flag, *values)
    named = values[-1] if flag in ("--layers", "--model", "--tasks") else flag
    assert_one_line(code, err, named)
    assert files_under(out) == []

