"""Every user-facing failure is one line on stderr naming the file, line, flag or layer, exit status 2,
with nothing written; finished analyses are kept when an optional step or the output fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from helpers import assert_one_line, cli, files_under, write_corpus
from neurohook.features import Features, LayerSpan


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), n=10)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Features of 2 layers (one carries gender) for 120 utterances of 12 speakers, and their manifest."""
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    n, w = 120, 8
    speaker = np.arange(n) % 12
    gender = speaker % 2
    X = rng.standard_normal((n, 2 * w)).astype(np.float32)
    X[:, w : w + 3] += 2.0 * gender[:, None]
    ids = [f"utt{i:03d}" for i in range(n)]
    Features(X, ids, [LayerSpan("L1", 0, w, "mean"), LayerSpan("L2", w, 2 * w, "mean")]).save(root / "features.npz")
    rows = ["utt_id,path,speaker,gender,single"] + [
        f"{u},{u}.wav,spk{s},{'fm'[g]},{'ab'[i % 2] if i < 119 else 'c'}" for i, (u, s, g) in enumerate(zip(ids, speaker, gender))]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def analyze(capsys, study, *extra):
    return cli(capsys, "analyze", "--features", study / "features.npz", "--manifest", study / "manifest.csv",
               "--tasks", "gender", "--seeds", "1", "--paper-settings", "--epochs", "3", *extra)


def test_damaged_files_of_every_kind_are_named(study, corpus, tmp_path, capsys):
    good = (study / "features.npz").read_bytes()
    cases = {
        "truncated.npz": good[: len(good) // 2],
        "garbage.npz": b"not a zip at all",
        "garbage.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        code, err = cli(capsys, "analyze", "--features", tmp_path / name, "--manifest", study / "manifest.csv",
                        "--tasks", "gender", "--out", tmp_path / "r.json")
        assert_one_line(code, err, name)
    z = dict(np.load(study / "features.npz"))
    meta = json.loads(z["neurohook_features"].tobytes())
    del meta["unit_stat_names"]
    z["neurohook_features"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "meta.npz", **z)
    code, err = cli(capsys, "analyze", "--features", tmp_path / "meta.npz", "--manifest", study / "manifest.csv",
                    "--tasks", "gender", "--out", tmp_path / "r.json")
    assert_one_line(code, err, "meta.npz", "metadata")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "pickle"])
def test_a_damaged_checkpoint_is_named_and_never_advises_unsafe_loading(corpus, tmp_path, capsys, damage):
    from neurohook import models

    path = models.save(models.build("sre-cnn", size="small", seed=0), tmp_path / "m.pt")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "flip":
        path.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:])
    else:  # a pickle of an arbitrary object: refused by weights_only=True
        torch.save({"format": "neurohook-model/1", "obj": torch.nn.Linear(2, 2)}, path)
    code, err = cli(capsys, "extract", "--model", path, "--manifest", corpus, "--out", tmp_path / "out")
    assert_one_line(code, err, "m.pt")
    assert not (tmp_path / "out").exists()


def test_damaged_results_are_named(study, tmp_path, capsys):
    bad = {"garbage.json": "{not json", "wrong.json": json.dumps({"models": {"m": {"analysis": {"tasks": 3}}}}),
           "latin1.json": "caf\xe9"}
    for name, text in bad.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
        code, err = cli(capsys, "report", "--results", tmp_path / name, "--out", tmp_path / "rep")
        assert_one_line(code, err, name)
    assert not (tmp_path / "rep").exists()


def test_bad_config_values_name_the_file_and_key(corpus, tmp_path, capsys):
    for text, key in [('batch_size = "eight"\n', "batch_size"), ("[extract]\nshard-size = 0\n", "shard-size"),
                      ("[extract]\nmerge = 1\n", "merge"), ('[extract]\npooling = "median"\n', "pooling"),
                      ("[extract]\nlayers = 3\n", "layers")]:
        (tmp_path / "run.toml").write_text(text)
        code, err = cli(capsys, "--config", tmp_path / "run.toml", "extract", "--model", "sre-cnn", "--manifest", corpus,
                        "--out", tmp_path / "out")
        assert_one_line(code, err, "run.toml", key)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, names", [
    (["--seeds", "0"], ["--seeds", "positive"]),
    (["--test-size", "1.5"], ["--test-size"]),
    (["--l1", "-1"], ["--l1"]),
    (["--epochs", "two"], ["--epochs"]),
    (["--dev-folds", "0"], ["--dev-folds", "'auto' or a positive integer"]),
    (["--dev-folds", "most"], ["--dev-folds"]),
])
def test_bad_flag_values_name_the_flag(study, tmp_path, capsys, args, names):
    code, err = analyze(capsys, study, "--out", tmp_path / "r.json", *args)
    assert_one_line(code, err, *names)
    assert not (tmp_path / "r.json").exists()


def test_unusable_outputs_fail_before_any_work(study, corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "below", "/proc/neurohook-test/out"):
        code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", out)
        assert_one_line(code, err, "--out", str(out))
        code, err = analyze(capsys, study, "--out", f"{out}/r.json")
        assert_one_line(code, err, "--out")
    (tmp_path / "notes.json").write_text('{"my": "notes"}')
    code, err = analyze(capsys, study, "--out", tmp_path / "notes.json")
    assert_one_line(code, err, "notes.json", "not a neurohook results file")
    assert (tmp_path / "notes.json").read_text() == '{"my": "notes"}'
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "o",
                    "--layers", "conv9")
    assert_one_line(code, err, "conv9")
    assert not (tmp_path / "o").exists()  # no empty shards folder left behind
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "o",
                    "--device", "cuda:7" if torch.cuda.is_available() else "cuda")
    assert_one_line(code, err, "--device", "cuda")


def test_other_inputs_name_what_is_wrong(corpus, tmp_path, capsys):
    (tmp_path / "m.csv").write_bytes(b"utt_id,path\nu1,caf\xe9.wav\n")
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", tmp_path / "m.csv", "--out", tmp_path / "o")
    assert_one_line(code, err, "m.csv", "line 2", "UTF-8")
    root = corpus.parent
    (root / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (root / "bad.csv").write_text("utt_id,path\nu00,u00.wav\nbroken,bad.wav\n")
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", root / "bad.csv", "--out", tmp_path / "o",
                    "--on-error", "raise")
    assert_one_line(code, err, "bad.wav")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "build.json").write_text('{"size": "tiny", "seed": 0}')
    code, err = cli(capsys, "corpus", "build", "--size", "small", "--out", tmp_path / "c")
    assert_one_line(code, err, str(tmp_path / "c"), "size 'tiny'")
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "o",
                    "--pooling", "median")
    assert_one_line(code, err, "--pooling", "median")


@pytest.mark.slow
def test_the_thread_count_is_bounded_and_checked():
    from neurohook import ranking

    with pytest.raises(ValueError, match="at most"):
        ranking.set_num_threads(100000)
    with pytest.raises(TypeError):
        ranking.set_num_threads(2.5)
    for value in ("abc", "0", "99999999999", "-3"):
        r = subprocess.run([sys.executable, "-I", "-m", "neurohook", "analyze", "--features", "x.npz", "--manifest",
                            "m.csv", "--tasks", "g"], env=dict(os.environ, NEUROHOOK_NUM_THREADS=value),
                           capture_output=True, text=True, timeout=120)
        assert_one_line(r.returncode, r.stderr, "NEUROHOOK_NUM_THREADS", value)


def test_a_failing_sv_step_keeps_the_analysis(study, tmp_path, capsys, caplog):
    lines = (study / "manifest.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    (tmp_path / "one.csv").write_text("\n".join([lines[0]] + [",".join([r[0], r[1], f"p{i}", *r[3:]])
                                                              for i, r in enumerate(rows)]) + "\n")
    code, err = cli(capsys, "analyze", "--features", study / "features.npz", "--manifest", tmp_path / "one.csv",
                    "--tasks", "gender", "--seeds", "1", "--paper-settings", "--epochs", "3", "--speaker-column", "", "--sv",
                    "--out", tmp_path / "r.json")
    assert_one_line(code, err, "--sv", "--speaker-column")
    assert "gender" in json.loads((tmp_path / "r.json").read_text())["models"]["features"]["analysis"]["tasks"]
    code, err = cli(capsys, "analyze", "--features", study / "features.npz", "--manifest", tmp_path / "one.csv",
                    "--tasks", "gender", "--seeds", "1", "--paper-settings", "--epochs", "3", "--sv", "--out", tmp_path / "s.json")
    assert code == 0 and "speaker verification could not run" in caplog.text
    entry = json.loads((tmp_path / "s.json").read_text())["models"]["features"]
    assert "gender" in entry["analysis"]["tasks"] and "one each" in entry["verification"]["SV"]["error"]
    assert cli(capsys, "report", "--results", tmp_path / "s.json", "--out", tmp_path / "rep")[0] == 0
    assert "could not run" in (tmp_path / "rep" / "report.md").read_text()


def test_messages_about_the_data_say_what_is_wrong(study, tmp_path, capsys):
    import neurohook

    code, err = cli(capsys, "analyze", "--features", study / "features.npz", "--manifest", study / "manifest.csv",
                    "--tasks", "single", "--speaker-column", "", "--out", tmp_path / "r.json")
    assert_one_line(code, err, "['c']", "only one utterance")
    feats = Features.load(study / "features.npz")
    values = feats.values.copy()
    values[7, 3] = np.nan
    bad = Features(values, feats.ids, feats.layers)
    with pytest.raises(ValueError, match="utt007"):
        neurohook.analyze(bad, (np.arange(len(feats)) % 2), seeds=(0,), epochs=1)
    with pytest.raises(ValueError, match="none of the 2 keys"):
        neurohook.analyze(feats, {"a": "x", "b": "y"}, seeds=(0,), epochs=1)


def test_recorder_lengths_are_checked():
    from neurohook.hooks import Recorder

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3))
    rec = Recorder(model, ["0"])
    with rec, pytest.raises(ValueError, match="whole numbers"):
        with rec.batch(["a"], lengths=[20.7]):
            pass
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)  # Hugging Face: True at valid steps
    with rec, pytest.raises(ValueError, match="attention_mask"):
        with rec.batch(["a", "b"], padding_mask=attention):
            pass
    with rec, rec.batch(["a", "b"], lengths=torch.tensor([20.0, 4.0])):  # whole floats are fine
        model(torch.zeros(2, 1, 20))
    assert rec.last_lengths["0"].tolist() == [18, 2]


def test_built_in_layer_names_keep_exact_lengths_from_the_cli(corpus, tmp_path, capsys):
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "all")
    assert code == 0, err
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "one",
                        "--layers", "conv2", "conv3.conv")
    assert code == 0, err
    assert not [w for w in seen if "proportionally" in str(w.message)]  # exact lengths, no guess
    whole, part = (Features.load(tmp_path / d / "features.npz") for d in ("all", "one"))
    np.testing.assert_array_equal(part.values[:, part.columns("conv2")], whole.values[:, whole.columns("conv2")])
    code, err = cli(capsys, "extract", "--model", "sre-cnn", "--manifest", corpus, "--out", tmp_path / "max",
                    "--pooling", "max")
    assert code == 0, err
    pooled = {s.name: s.pooling for s in Features.load(tmp_path / "max" / "features.npz").layers}
    assert pooled == {"conv1": "max", "conv2": "max", "conv3": "max", "conv4": "max", "fc1": "none", "fc2": "none"}
    assert files_under(tmp_path / "max")
