"""The command line end to end: analyze -> report on saved features, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurohook.cli import main
from neurohook.features import Features, LayerSpan


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m neurohook ...` in a fresh process (as a user would), from a folder outside the source."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-I", "-m", "neurohook", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Saved features of 3 layers where layer L2 carries gender, and a manifest with the labels."""
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    n, w = 240, 16
    speaker = rng.integers(0, 12, n)
    gender = speaker % 2
    channel = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 3 * w)).astype(np.float32)
    X[:, w : w + 4] += 2.5 * gender[:, None]
    X[:, 2 * w : 2 * w + 3] += 2.0 * np.eye(3)[channel]
    ids = [f"utt{i:03d}" for i in range(n)]
    Features(X, ids, [LayerSpan(f"L{i + 1}", i * w, (i + 1) * w, "mean") for i in range(3)]).save(root / "features.npz")
    rows = ["utt_id,path,speaker,gender,channel"] + [
        f"{u},{u}.wav,spk{s},{'fm'[g]},{['hq', 'tel', 'sat'][c]}" for u, s, g, c in zip(ids, speaker, gender, channel)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_analyze_then_report_end_to_end(study, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seeds = 2\n[analyze]\nl2 = 0.001\ndev_folds = 2\n')  # the [analyze] table reaches the probe
    r = cli("--config", str(config), "analyze", "--features", str(study / "features.npz"), "--manifest",
            str(study / "manifest.csv"), "--tasks", "gender", "channel", "--sv", "--out", str(tmp_path / "results.json"),
            "--model-name", "toy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    tasks = results["models"]["toy"]["analysis"]["tasks"]
    assert set(tasks) == {"gender", "channel"}
    assert tasks["gender"]["best_layer"] == "L2" and tasks["channel"]["best_layer"] == "L3"
    assert tasks["gender"]["seeds"] == [0, 1]
    assert results["models"]["toy"]["analysis"]["settings"]["probe"]["l2"] == 0.001 == tasks["gender"]["probe_l2"][0]
    assert results["models"]["toy"]["analysis"]["settings"]["probe"]["dev_folds"] == 2
    assert results["models"]["toy"]["verification"]["SV"]["layerwise"]["layers"]
    r = cli("report", "--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    oracle = tasks["gender"]["oracle"]["mean"] * 100
    assert f"{oracle:.2f}" in md
    assert list((tmp_path / "report").glob("*.png"))


@pytest.mark.parametrize("args, message", [
    (["analyze", "--features", "missing.npz", "--manifest", "m.csv", "--tasks", "gender"], "features not found: missing.npz"),
    (["analyze", "--manifest", "m.csv"], "`analyze` needs --features and --tasks"),
    (["report", "--results", "nope.json"], "results file not found: nope.json"),
    (["extract", "--model", "no-such-model", "--manifest", "MANIFEST", "--out", "x"], "unknown model 'no-such-model'"),
    (["intervene", "--model", "adi-cnn", "--manifest", "MANIFEST", "--features", "f", "--task", "gender",
      "--erase", "gender"], "--erase and --layer go together"),
    (["intervene", "--model", "adi-cnn", "--manifest", "MANIFEST", "--task", "gender"],
     "`intervene` needs --features"),
])
def test_user_mistakes_give_one_line_and_exit_2(study, tmp_path, capsys, args, message):
    args = [a.replace("MANIFEST", str(study / "manifest.csv")) for a in args]
    os.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_bad_config_key_and_unknown_column(study, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[analyze]\nepoch = 3\n")
    assert main(["--config", str(config), "analyze", "--features", str(study / "features.npz")]) == 2
    assert re.search(r"unknown key 'epoch' for `analyze`", capsys.readouterr().err)
    assert main(["analyze", "--features", str(study / "features.npz"), "--manifest", str(study / "manifest.csv"),
                 "--tasks", "language", "--out", str(tmp_path / "r.json")]) == 2
    assert "manifest has no column 'language'" in capsys.readouterr().err


def test_help_explains_every_option():
    r = cli("extract", "--help")
    assert r.returncode == 0
    for flag in ("--model", "--manifest", "--layers", "--pooling", "--shard-size", "--on-error"):
        assert flag in r.stdout


def run(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(cache))
    r = subprocess.run([sys.executable, "-I", "-m", "neurohook", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> tuple[str, Path]:
    """The built-in corpus at its tiny size, built through the command line: (manifest path, cache)."""
    root = tmp_path_factory.mktemp("tiny")
    r = run("corpus", "build", "--size", "tiny", "--out", str(root / "corpus"), cache=root / "cache", cwd=root)
    return r.stdout.strip().splitlines()[-1], root / "cache"


@pytest.mark.slow
def test_corpus_extract_analyze_report_with_a_built_in_model(tiny_corpus, tmp_path):
    manifest, cache = tiny_corpus
    run("extract", "--model", "adi-cnn", "--size", "small", "--manifest", manifest, "--out", str(tmp_path / "feats"),
        "--shard-size", "10", cache=cache, cwd=tmp_path)
    feats = Features.load(tmp_path / "feats" / "features.npz")
    assert len(feats) == 36 and feats.layer_names == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    assert len(list((tmp_path / "feats" / "shards").glob("*.safetensors"))) == 4
    run("analyze", "--features", str(tmp_path / "feats"), "--manifest", manifest, "--tasks", "gender",
        "--seeds", "1", "--paper-settings", "--epochs", "5", "--out", str(tmp_path / "results.json"), cache=cache, cwd=tmp_path)
    run("intervene", "--model", "adi-cnn", "--size", "small", "--manifest", manifest, "--features",
        str(tmp_path / "feats"), "--results", str(tmp_path / "results.json"), "--task", "speaker", "--metric", "eer",
        "--ks", "2", "8", "--draws", "2", "--erase", "gender", "--layer", "fc1", cache=cache, cwd=tmp_path)
    run("report", "--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "report"), cache=cache, cwd=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    (entry,) = results["models"].values()
    oracle = entry["analysis"]["tasks"]["gender"]["oracle"]["mean"] * 100
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"| Acc (ALL) | {oracle:.2f} |" in text
    curve = entry["interventions"]["curves"]["speaker"]["curve"]  # the analysis is kept beside the new results
    assert curve["ks"] == [2, 8] and len(curve["random_draws"][0]) == 2 and 0 <= curve["reference"] <= 1
    erased = entry["interventions"]["erasure"]["gender@fc1"]
    assert erased["rank"] == 1 and set(erased["sv_eer"]) == {"none", "leace", "random_direction"}
    assert "Encoded vs used — feats: speaker neurons" in text and "Erasure — feats: gender at fc1" in text


@pytest.mark.slow
def test_torchrun_cli_extraction_equals_one_process(tiny_corpus, tmp_path):
    """Random-weight models are built from a fixed seed, so every rank (and a resumed run) has the same model."""
    manifest, cache = tiny_corpus
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    args = ["extract", "--model", "sre-cnn", "--size", "small", "--manifest", manifest, "--shard-size", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(cache))
    r = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port=29541", "-m", "neurohook", *args,
                        "--out", str(tmp_path / "two")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run(*args, "--out", str(tmp_path / "one"), cache=cache, cwd=tmp_path)
    two, one = (Features.load(tmp_path / d / "features.npz") for d in ("two", "one"))
    assert two.ids == one.ids
    np.testing.assert_array_equal(two.values, one.values)


@pytest.mark.slow
def test_demo_smoke_run_writes_the_report(tmp_path):
    run("demo", "--size", "tiny", "--out", str(tmp_path / "demo"), cache=tmp_path / "cache", cwd=tmp_path)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert {"adi-cnn", "sre-cnn", "st-base", "st-large"} <= set(results["models"])
    from neurohook import models
    from neurohook.demo import SIZES

    installed = []
    for name in SIZES["tiny"].pretrained:
        try:
            models.build(name)
            installed.append(name)
        except FileNotFoundError:  # its wheel is absent: the demo skips it with a warning
            pass
    assert set(installed) <= set(results["models"])
    for entry in results["models"].values():
        assert set(entry["analysis"]["tasks"]) == {"GC", "LID", "DID", "CC"}
        assert entry["verification"]["SV"]["layerwise"]["layers"]
    md = (tmp_path / "demo" / "report" / "report.md").read_text()
    gc = results["models"]["sre-cnn"]["analysis"]["tasks"]["GC"]["oracle"]["mean"] * 100
    assert f"{gc:.2f}" in md and "Findings" in md
    assert (tmp_path / "demo" / "models" / "adi-cnn.pt").exists()
    assert json.loads((tmp_path / "demo" / "timings.json").read_text())["total_s"] > 0
