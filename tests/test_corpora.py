"""Converters from corpus layouts (Kaldi, LibriSpeech, VoxCeleb, Common Voice) to manifests, and their CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import assert_one_line, cli
from neurohook.cli import main
from neurohook.data import load_record, read_manifest
from neurohook.data.corpora import CorpusError, from_commonvoice, from_kaldi, from_librispeech, from_voxceleb, write

RATE = 16000


def audio(path: Path, seconds: float = 1.0) -> Path:
    """A real (wav or flac) noise file of ``seconds``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (np.random.default_rng(0).standard_normal(int(RATE * seconds)) * 0.1).astype(np.float32), RATE)
    return path


def dummy(path: Path) -> Path:
    """An mp3/m4a stand-in: the converters never decode audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really audio")
    return path


def files(root: Path, contents: dict[str, str]) -> Path:
    for name, text in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def where(path: Path, line: int | None = None) -> str:
    """The start of a CorpusError message: the file, and the line."""
    return re.escape(str(path) + (f": line {line}: " if line is not None else ": "))


def stdout_of(capsys, *args: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().out


def roundtrip(manifest, out: Path):
    """The manifest written by :func:`write` and read back (audio must exist)."""
    back = read_manifest(write(manifest, out))
    assert back.ids == manifest.ids
    assert [r.path.resolve() for r in back] == [r.path.resolve() for r in manifest]
    assert [(r.start, r.end, r.speaker, dict(r.labels)) for r in back] == \
        [(r.start, r.end, r.speaker, dict(r.labels)) for r in manifest]
    return back


# ------------------------------------------------------------------------------------------------
# Kaldi


@pytest.fixture
def kaldi(tmp_path: Path) -> Path:
    """A Kaldi data folder: two recordings, one by relative path (audio root tmp_path), one absolute."""
    audio(tmp_path / "wav" / "a.wav")
    b = audio(tmp_path / "elsewhere" / "b.wav", 0.5)
    return files(tmp_path / "data" / "train", {
        "wav.scp": f"u1 wav/a.wav\nu2 {b}\n",
        "utt2spk": "u1 s1\nu2 s2\n",
        "spk2gender": "s1 m\ns2 F\n",
        "text": "u1 HELLO  WORLD\nu2\n",
    })


def test_kaldi_rows_labels_and_relative_paths(kaldi: Path, tmp_path: Path) -> None:
    m = from_kaldi(kaldi, audio_root=tmp_path)
    assert m.ids == ["u1", "u2"]
    assert m["u1"].path == tmp_path / "wav" / "a.wav"
    assert m["u2"].path == tmp_path / "elsewhere" / "b.wav"
    assert m.labels("speaker") == ["s1", "s2"]
    assert m.labels("gender") == ["male", "female"]
    assert m.labels("text") == ["HELLO  WORLD", ""]
    assert m.label_columns == ["gender", "text"]
    assert (m["u1"].start, m["u1"].end) == (None, None)
    back = roundtrip(m, tmp_path / "out" / "train.csv")
    assert back["u1"].path.resolve() == (tmp_path / "wav" / "a.wav").resolve()
    assert "\nu1,../wav/a.wav,,,s1,,male,HELLO  WORLD\n" in (tmp_path / "out" / "train.csv").read_text()


def test_kaldi_optional_files_absent_and_unchecked_paths(kaldi: Path, tmp_path: Path) -> None:
    (kaldi / "spk2gender").unlink()
    (kaldi / "text").unlink()
    (kaldi / "wav.scp").write_text("u1 nowhere/a.wav\nu2 nowhere/b.wav\n")
    m = from_kaldi(kaldi, audio_root=tmp_path, check_files=False)
    assert m.label_columns == []
    assert m["u2"].path == tmp_path / "nowhere" / "b.wav"


def test_kaldi_segments_become_start_end_the_loader_honours(kaldi: Path, tmp_path: Path) -> None:
    files(kaldi, {
        "wav.scp": "rec1 wav/a.wav\n",
        "segments": "seg1 rec1 0.25 0.75\nseg2 rec1 0.5 -1\n",
        "utt2spk": "seg1 s1\nseg2 s2\n",
    })
    (kaldi / "text").unlink()
    m = from_kaldi(kaldi, audio_root=tmp_path)
    assert m.ids == ["seg1", "seg2"]
    assert [(r.start, r.end) for r in m] == [(0.25, 0.75), (0.5, None)]
    assert m["seg1"].path == m["seg2"].path == tmp_path / "wav" / "a.wav"
    back = roundtrip(m, tmp_path / "segments.csv")
    assert load_record(back["seg1"]).shape == (8000,)  # 0.5 s of the 1 s recording
    assert load_record(back["seg2"]).shape == (8000,)  # from 0.5 s to the end


@pytest.mark.parametrize("name, text, line, message", [
    ("wav.scp", "u1 wav/a.wav\nu2 sox in.wav -t wav - |\n", 2, "piped command 'sox in.wav -t wav - |' is not supported"),
    ("wav.scp", "u1 raw.ark:1234\n", 1, "archive or standard input 'raw.ark:1234' is not supported"),
    ("wav.scp", "u1 wav/a.wav\n\nu1 wav/a.wav\n", 3, "duplicate id 'u1' (first on line 1)"),
    ("wav.scp", "u1 wav/a.wav\nu2 wav/missing.wav\n", 2, "no such audio file"),
    ("wav.scp", "u1\n", 1, "recording 'u1' has no audio file"),
    ("utt2spk", "u1 s1\nzz s2\nu2 s2\n", 2, "unknown utterance 'zz' (not in wav.scp)"),
    ("utt2spk", "u1 s1 extra\n", 1, "3 field(s), expected 2: <utterance-id> <speaker-id>"),
    ("utt2spk", "u1 s1\n", 2, "utterance 'u2' has no speaker in utt2spk"),  # the line is wav.scp's
    ("spk2gender", "s1 m\ns2 x\n", 2, "unknown gender 'x' (expected one of: m, f)"),
    ("text", "u1 hi\nu3 there\n", 2, "unknown utterance 'u3'"),
    ("segments", "s1 u1 0 1 1\n", 1, "a channel field is not supported"),
    ("segments", "s1 nope 0 1\n", 1, "unknown recording 'nope' (not in wav.scp)"),
    ("segments", "s1 u1 0.5 0.5\n", 1, "empty or invalid segment [0.5, 0.5]"),
    ("segments", "s1 u1 zero 1\n", 1, "start and end must be seconds"),
])
def test_kaldi_problems_name_the_file_and_line(kaldi: Path, tmp_path: Path, name, text, line, message) -> None:
    (kaldi / name).write_text(text)
    shown = "wav.scp" if message.startswith("utterance 'u2'") else name
    if name == "segments":
        (kaldi / "utt2spk").write_text("s1 spk\n")
        (kaldi / "text").unlink()
    with pytest.raises(CorpusError, match=where(kaldi / shown, line) + re.escape(message)):
        from_kaldi(kaldi, audio_root=tmp_path)


def test_kaldi_missing_required_files(kaldi: Path, tmp_path: Path) -> None:
    (kaldi / "utt2spk").unlink()
    with pytest.raises(CorpusError, match=where(kaldi / "utt2spk") + "no such file"):
        from_kaldi(kaldi, audio_root=tmp_path)
    with pytest.raises(CorpusError, match=where(tmp_path / "nope") + "not a folder"):
        from_kaldi(tmp_path / "nope")
    (kaldi / "wav.scp").write_bytes(b"u1 caf\xe9.wav\n")
    with pytest.raises(CorpusError, match=where(kaldi / "wav.scp", 1) + "not UTF-8"):
        from_kaldi(kaldi)


# ------------------------------------------------------------------------------------------------
# LibriSpeech

SPEAKERS = """\
; Some comment
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
26   | M | dev-clean        | 25.08 | Denny Sayers
60   | M | train-clean-100  | 20.18 | |CBW|Simon
"""


@pytest.fixture
def libri(tmp_path: Path) -> Path:
    root = files(tmp_path / "LibriSpeech", {
        "SPEAKERS.TXT": SPEAKERS,
        "train-clean-100/19/198/19-198.trans.txt": "19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK\n",
    })
    for f in ("train-clean-100/19/198/19-198-0000.flac", "train-clean-100/19/198/19-198-0001.flac",
              "dev-clean/26/495/26-495-0000.flac", "dev-clean/99/1/99-1-0000.flac"):
        audio(root / f, 0.3)
    return root


def test_librispeech_rows_labels_and_roundtrip(libri: Path, tmp_path: Path) -> None:
    m = from_librispeech(libri)
    assert m.ids == ["26-495-0000", "99-1-0000", "19-198-0000", "19-198-0001"]
    assert m.label_columns == ["gender", "subset", "text"]
    assert m.labels("speaker") == ["26", "99", "19", "19"]
    assert m.labels("gender") == ["male", "", "female", "female"]  # 99 is not in SPEAKERS.TXT
    assert m.labels("subset") == ["dev-clean", "dev-clean", "train-clean-100", "train-clean-100"]
    assert m.labels("text") == ["", "", "NORTHANGER ABBEY", "THIS LITTLE WORK"]
    roundtrip(m, tmp_path / "libri.jsonl")


def test_librispeech_subset_folder_finds_speakers_one_up(libri: Path) -> None:
    m = from_librispeech(libri / "train-clean-100")
    assert m.ids == ["19-198-0000", "19-198-0001"]
    assert m.labels("subset") == ["train-clean-100"] * 2  # from SPEAKERS.TXT
    assert m["19-198-0000"].path == (libri / "train-clean-100/19/198/19-198-0000.flac").absolute()


def test_librispeech_problems(libri: Path, tmp_path: Path) -> None:
    speakers = libri / "SPEAKERS.TXT"
    speakers.write_text(SPEAKERS + "77 | X | dev-clean | 1.0 | Somebody\n")
    with pytest.raises(CorpusError, match=where(speakers, 6) + re.escape("unknown gender 'X'")):
        from_librispeech(libri)
    speakers.write_text(SPEAKERS + "77 | F | 1.0\n")
    with pytest.raises(CorpusError, match=where(speakers, 6) + re.escape("3 field(s), expected 5")):
        from_librispeech(libri)
    speakers.write_text(SPEAKERS + "19 | F | dev-clean | 1.0 | Again\n")
    with pytest.raises(CorpusError, match=where(speakers, 6) + re.escape("duplicate speaker '19' (first on line 3)")):
        from_librispeech(libri)
    speakers.write_text(SPEAKERS)
    trans = libri / "train-clean-100/19/198/19-198.trans.txt"
    trans.write_text("19-198-0000 A\n19-198-0002 B\n")
    with pytest.raises(CorpusError, match=where(trans, 2) + "utterance '19-198-0002' has no audio file"):
        from_librispeech(libri)
    speakers.unlink()
    with pytest.raises(CorpusError, match=where(speakers) + "no such file"):
        from_librispeech(libri)
    files(tmp_path / "empty", {"SPEAKERS.TXT": SPEAKERS})
    with pytest.raises(CorpusError, match="no utterances found"):
        from_librispeech(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------
# VoxCeleb

VOX1_META = ("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
             "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
             "id10002\tA.R._Rahman\tf\tIndia\ttest\n"
             "id10003\tAaron_Tveit\tm\tUSA\tdev\n")


@pytest.fixture
def vox1(tmp_path: Path) -> Path:
    root = files(tmp_path / "vox1", {"vox1_meta.csv": VOX1_META})
    for f in ("wav/id10001/1zcIwhmdeo4/00001.wav", "wav/id10001/1zcIwhmdeo4/00002.wav",
              "wav/id10001/7w0IBEWc9Qw/00001.wav", "wav/id10002/abc/00001.wav", "wav/id10009/xyz/00001.wav"):
        audio(root / f, 0.2)
    return root


def test_voxceleb1_rows_and_metadata(vox1: Path, tmp_path: Path) -> None:
    m = from_voxceleb(vox1)
    assert m.ids == ["id10001/1zcIwhmdeo4/00001", "id10001/1zcIwhmdeo4/00002", "id10001/7w0IBEWc9Qw/00001",
                     "id10002/abc/00001", "id10009/xyz/00001"]
    assert m.label_columns == ["video", "gender", "nationality", "subset"]
    assert m.labels("speaker") == ["id10001"] * 3 + ["id10002", "id10009"]
    assert m.labels("gender") == ["male"] * 3 + ["female", ""]
    assert m.labels("nationality") == ["Ireland"] * 3 + ["India", ""]
    assert m.labels("subset") == ["dev"] * 3 + ["test", ""]
    assert m.labels("video")[2] == "7w0IBEWc9Qw"
    roundtrip(m, tmp_path / "vox1.csv")


def test_voxceleb2_aac_and_comma_meta_one_folder_up(tmp_path: Path) -> None:
    files(tmp_path / "vox2", {"vox2_meta.csv": "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
                                               "id00012 ,n000012 ,m ,dev \nid00015 ,n000015 ,f ,test \n"})
    dummy(tmp_path / "vox2/dev/aac/id00012/21Uxsk56VDQ/00001.m4a")
    dummy(tmp_path / "vox2/dev/aac/id00015/0fijmz4vTVU/00003.m4a")
    (tmp_path / "vox2/dev/aac/id00015/0fijmz4vTVU/notes.txt").write_text("ignored")
    m = from_voxceleb(tmp_path / "vox2" / "dev")
    assert m.ids == ["id00012/21Uxsk56VDQ/00001", "id00015/0fijmz4vTVU/00003"]
    assert m.label_columns == ["video", "gender", "subset"]
    assert m.labels("gender") == ["male", "female"]
    assert m.labels("subset") == ["dev", "test"]
    assert m["id00012/21Uxsk56VDQ/00001"].path.suffix == ".m4a"


def test_voxceleb_problems(vox1: Path, tmp_path: Path) -> None:
    meta = vox1 / "vox1_meta.csv"
    meta.write_text(VOX1_META + "id10004\tSomeone\tm\n")
    with pytest.raises(CorpusError, match=where(meta, 5) + re.escape("3 field(s), header has 5")):
        from_voxceleb(vox1)
    meta.write_text(VOX1_META + "id10001\tSomeone\tm\tUK\tdev\n")
    with pytest.raises(CorpusError, match=where(meta, 5) + "duplicate speaker 'id10001' \\(first on line 2 of"):
        from_voxceleb(vox1)
    meta.write_text("Name\tSex\n")
    with pytest.raises(CorpusError, match=where(meta, 1) + "expected a header"):
        from_voxceleb(vox1)
    meta.unlink()
    dummy(vox1 / "wav/id10002/abc/00001.m4a")
    with pytest.raises(CorpusError, match="a second audio file of utterance id10002/abc/00001"):
        from_voxceleb(vox1)
    (tmp_path / "novox").mkdir()
    with pytest.raises(CorpusError, match=where(tmp_path / "novox") + "no utterances found"):
        from_voxceleb(tmp_path / "novox")


# ------------------------------------------------------------------------------------------------
# Common Voice

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"


def cv_row(client: str, clip: str, gender: str, accent: str = "", locale: str = "en", age: str = "twenties") -> str:
    return f"{client}\t{clip}\tA sentence by {client}.\t2\t0\t{age}\t{gender}\t{accent}\t{locale}\t\n"


@pytest.fixture
def cv(tmp_path: Path) -> Path:
    rows = [cv_row("c1", "common_voice_en_1.mp3", "male_masculine", "United States English"),
            cv_row("c1", "common_voice_en_2.mp3", "male"),
            cv_row("c2", "common_voice_en_3.mp3", "female_feminine", locale="", age=""),
            cv_row("c3", "common_voice_en_4.mp3", "other"),
            cv_row("c4", "common_voice_en_5.mp3", ""),
            cv_row("c5", "common_voice_en_6.mp3", "do_not_wish_to_say")]
    root = files(tmp_path / "cv-corpus-16.1" / "en", {"validated.tsv": CV_HEADER + "".join(rows)})
    for i in range(1, 7):
        dummy(root / "clips" / f"common_voice_en_{i}.mp3")
    return root


def test_commonvoice_rows_and_normalised_labels(cv: Path, tmp_path: Path) -> None:
    m = from_commonvoice(cv)
    assert m.ids == [f"common_voice_en_{i}" for i in range(1, 7)]
    assert m.label_columns == ["gender", "age", "accent", "language", "text"]
    assert m.labels("speaker") == ["c1", "c1", "c2", "c3", "c4", "c5"]
    assert m.labels("gender") == ["male", "male", "female", "other", "", ""]
    assert m.labels("accent")[:2] == ["United States English", ""]
    assert m.labels("age")[1:3] == ["twenties", ""]
    assert m.labels("language") == ["en"] * 6  # row 3's empty locale: the folder name
    assert m.labels("text")[0] == "A sentence by c1."
    assert m[0].path == (cv / "clips" / "common_voice_en_1.mp3").absolute()
    roundtrip(m, tmp_path / "cv.csv")


def test_commonvoice_old_release_without_locale(tmp_path: Path) -> None:
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\n"
    rows = "c1\t0a1b2c\tHallo.\t2\t0\tthirties\tfemale\tgermany\n"
    old = files(tmp_path / "de", {"validated.tsv": header + rows})
    m = from_commonvoice(old)
    assert m.ids == ["0a1b2c"] and m[0].path.name == "0a1b2c.mp3"  # early releases: no .mp3 in the path
    assert (m.labels("language"), m.labels("accent"), m.labels("gender")) == (["de"], ["germany"], ["female"])
    unnamed = files(tmp_path / "cv_old_release", {"validated.tsv": header + rows})
    assert from_commonvoice(unnamed, language="de").labels("language") == ["de"]
    with pytest.raises(CorpusError, match=where(unnamed / "validated.tsv", 2) + "no locale"):
        from_commonvoice(unnamed)
    with pytest.raises(CorpusError, match=where(unnamed / "validated.tsv", 2) + "no such clip"):
        from_commonvoice(unnamed, language="de", check_files=True)


def test_commonvoice_problems(cv: Path) -> None:
    table = cv / "validated.tsv"
    good = table.read_text()
    table.write_text(good + "c9\tx.mp3\ttoo few\n")
    with pytest.raises(CorpusError, match=where(table, 8) + re.escape("3 field(s), header has 10")):
        from_commonvoice(cv)
    table.write_text(good + cv_row("c9", "x.mp3", "robot"))
    with pytest.raises(CorpusError, match=where(table, 8) + "unknown gender 'robot'"):
        from_commonvoice(cv)
    table.write_text(good + cv_row("c9", "common_voice_en_2.mp3", "male"))
    with pytest.raises(CorpusError, match=where(table, 8) + re.escape("duplicate clip 'common_voice_en_2.mp3' "
                                                                      "(first on line 3)")):
        from_commonvoice(cv)
    table.write_text(good.replace("client_id", "who", 1))
    with pytest.raises(CorpusError, match=where(table, 1) + "no client_id column"):
        from_commonvoice(cv)
    table.unlink()
    with pytest.raises(CorpusError, match=where(table) + "no such file"):
        from_commonvoice(cv)


# ------------------------------------------------------------------------------------------------
# The command line: one success and one bad input per verb


def test_cli_manifest_from_kaldi(kaldi: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m" / "kaldi.csv"
    code, printed = stdout_of(capsys, "manifest", "from-kaldi", "--dir", kaldi, "--out", out,
                              "--audio-root", tmp_path)
    assert code == 0
    assert printed.strip() == f"{out}: 2 utterances, 2 speakers; columns: utt_id, path, speaker, gender, text"
    assert read_manifest(out).labels("gender") == ["male", "female"]
    (kaldi / "wav.scp").write_text("u1 wav/a.wav\nu2 sox x.wav -t wav - |\n")
    code, err = cli(capsys, "manifest", "from-kaldi", "--dir", kaldi, "--out", out, "--audio-root", tmp_path)
    assert_one_line(code, err, kaldi / "wav.scp", "line 2", "piped command")
    code, err = cli(capsys, "manifest", "from-kaldi", "--dir", kaldi)
    assert_one_line(code, err, "`manifest from-kaldi` needs --out")


def test_cli_manifest_from_librispeech(libri: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "libri.csv"
    code, printed = stdout_of(capsys, "manifest", "from-librispeech", "--root", libri, "--out", out)
    assert code == 0
    assert printed.strip() == f"{out}: 4 utterances, 3 speakers; columns: utt_id, path, speaker, gender, subset, text"
    assert len(read_manifest(out)) == 4
    (libri / "SPEAKERS.TXT").unlink()
    code, err = cli(capsys, "manifest", "from-librispeech", "--root", libri, "--out", out)
    assert_one_line(code, err, libri / "SPEAKERS.TXT", "no such file")


def test_cli_manifest_from_voxceleb(vox1: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vox.jsonl"
    code, printed = stdout_of(capsys, "manifest", "from-voxceleb", "--root", vox1, "--out", out)
    assert code == 0
    assert printed.startswith(f"{out}: 5 utterances, 3 speakers; columns: utt_id, path, speaker, video, gender")
    assert read_manifest(out).labels("nationality")[3] == "India"
    (vox1 / "vox1_meta.csv").write_text(VOX1_META + "id10004\tX\tq\tUK\tdev\n")
    code, err = cli(capsys, "manifest", "from-voxceleb", "--root", vox1, "--out", out)
    assert_one_line(code, err, vox1 / "vox1_meta.csv", "line 5", "unknown gender 'q'")


def test_cli_manifest_from_commonvoice(cv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cv.csv"
    code, printed = stdout_of(capsys, "manifest", "from-commonvoice", "--root", cv, "--out", out, "--language", "fr")
    assert code == 0
    assert printed.strip() == (f"{out}: 6 utterances, 5 speakers; "
                               "columns: utt_id, path, speaker, gender, age, accent, language, text")
    assert read_manifest(out).labels("language") == ["en", "en", "fr", "en", "en", "en"]  # --language: no locale
    (cv / "validated.tsv").write_text(CV_HEADER + "c1\tx.mp3\n")
    code, err = cli(capsys, "manifest", "from-commonvoice", "--root", cv, "--out", out)
    assert_one_line(code, err, cv / "validated.tsv", "line 2", "2 field(s), header has 10")


def test_cli_manifest_group_without_a_verb_shows_its_verbs(capsys) -> None:
    from neurohook.cli import main

    with pytest.raises(SystemExit) as e:
        main(["manifest"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(v in out for v in ("from-kaldi", "from-librispeech", "from-voxceleb", "from-commonvoice"))
