"""Reliability through the command line: reruns never reuse another run's shards, short clips are
handled per utterance, damaged and unwritable files give one line and exit 2, finished work is kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import assert_one_line, cli, mtimes, write_corpus
from neurohook.features import Features
from neurohook.models.resemblyzer import weights_path
from neurohook.models.wheels import WeightsNotFoundError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), n=10)


def extract(capsys, manifest, out, *extra):
    return cli(capsys, "extract", "--model", "sre-cnn", "--manifest", manifest, "--out", out, "--shard-size", "4", *extra)


@pytest.fixture(scope="module")
def done(corpus, tmp_path_factory):
    """A finished extraction (sre-cnn, shard size 4) to rerun against."""
    from neurohook.cli import main

    out = tmp_path_factory.mktemp("done") / "feats"
    assert main(["extract", "--model", "sre-cnn", "--manifest", str(corpus), "--out", str(out), "--shard-size", "4"]) == 0
    return out


def copy(done, tmp_path):
    shutil.copytree(done, tmp_path / "feats")
    return tmp_path / "feats"


@pytest.mark.parametrize("extra, words", [
    (["--shard-size", "8"], ["shard_size 4", "this run uses 8"]),
    (["--model", "adi-cnn"], ["sre-cnn", "adi-cnn", "state"]),
    (["--layers", "conv1", "fc1"], ["layers", "conv1 (stats)"]),
    (["--pooling", "max"], ["layers", "(max)"]),
    (["--batch-size", "2"], ["batch_size"]),
])
def test_rerun_with_another_configuration_stops_before_any_work(done, corpus, tmp_path, capsys, extra, words):
    out = copy(done, tmp_path)
    before = mtimes(out / "shards"), (out / "features.npz").stat().st_mtime_ns
    code, err = extract(capsys, corpus, out, *extra)  # a repeated flag: the last one counts
    assert_one_line(code, err, str(out), "--overwrite", *words)
    assert (mtimes(out / "shards"), (out / "features.npz").stat().st_mtime_ns) == before  # nothing touched
    assert extract(capsys, corpus, out, *extra, "--overwrite")[0] == 0
    assert mtimes(out / "shards") != before[0]


def test_rerun_with_a_shorter_manifest_or_a_changed_file_refuses(corpus, tmp_path, capsys):
    root = tmp_path / "c"
    shutil.copytree(corpus.parent, root)
    assert extract(capsys, root / "manifest.csv", tmp_path / "f")[0] == 0
    short = root / "short.csv"
    short.write_text("\n".join((root / "manifest.csv").read_text().splitlines()[:6]) + "\n")  # 5 utterances
    code, err = extract(capsys, short, tmp_path / "f")
    assert_one_line(code, err, "shard-00002.safetensors", "not part of this run", "2 shard(s)")
    rows = (root / "manifest.csv").read_text().splitlines()
    rows[5], rows[6] = rows[6], rows[5]  # same utterances, another order
    (root / "swapped.csv").write_text("\n".join(rows) + "\n")
    code, err = extract(capsys, root / "swapped.csv", tmp_path / "f")
    assert_one_line(code, err, "shard-00001.safetensors", "another manifest", "'u04'", "'u05'")
    data, rate = sf.read(root / "u05.wav")
    sf.write(root / "u05.wav", data[: len(data) // 2], rate)  # same path, other audio
    code, err = extract(capsys, root / "manifest.csv", tmp_path / "f")
    assert_one_line(code, err, "shard-00001", "changed", "u05")


def test_a_skipped_file_is_retried_once_fixed_and_a_damaged_shard_recomputed(corpus, tmp_path, capsys, caplog):
    root = tmp_path / "c"
    shutil.copytree(corpus.parent, root)
    good = (root / "u06.wav").read_bytes()
    (root / "u06.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    code, err = extract(capsys, root / "manifest.csv", tmp_path / "f")
    assert code == 0, err
    info = json.loads((tmp_path / "f" / "extract.json").read_text())
    assert [u for u, _ in info["skipped"]] == ["u06"] and "u06" not in Features.load(tmp_path / "f" / "features.npz").ids
    before = mtimes(tmp_path / "f" / "shards")
    (root / "u06.wav").write_bytes(good)
    assert extract(capsys, root / "manifest.csv", tmp_path / "f")[0] == 0
    after = mtimes(tmp_path / "f" / "shards")
    assert [k for k in after if after[k] != before[k]] == ["shard-00001.safetensors"]  # only u06's shard redone
    feats = Features.load(tmp_path / "f" / "features.npz")
    assert feats.ids == [f"u{i:02d}" for i in range(10)]
    assert json.loads((tmp_path / "f" / "extract.json").read_text())["skipped"] == []
    shard = tmp_path / "f" / "shards" / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    caplog.clear()
    assert extract(capsys, root / "manifest.csv", tmp_path / "f")[0] == 0
    assert "shard-00002.safetensors: not a readable features file" in caplog.text and "recomputing" in caplog.text
    np.testing.assert_array_equal(Features.load(tmp_path / "f" / "features.npz").values, feats.values)


def test_short_clips_are_skipped_per_utterance_with_the_reason(corpus, tmp_path, capsys):
    root = tmp_path / "c"
    shutil.copytree(corpus.parent, root)
    sf.write(root / "tiny.wav", np.full(150, 0.1, np.float32), 16000)  # below the MFCC's 201 samples
    sf.write(root / "short.wav", np.full(1000, 0.1, np.float32), 16000)  # below the CNN's 1600 samples
    lines = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join([*lines, "tiny,tiny.wav,s0,f", "short,short.wav,s1,m"]) + "\n")
    code, err = extract(capsys, root / "manifest.csv", tmp_path / "f")
    assert code == 0, err
    skipped = dict(json.loads((tmp_path / "f" / "extract.json").read_text())["skipped"])
    assert set(skipped) == {"tiny", "short"} and "1600 samples" in skipped["tiny"]
    assert len(Features.load(tmp_path / "f" / "features.npz")) == 10
    code, err = extract(capsys, root / "manifest.csv", tmp_path / "g", "--on-error", "raise")
    assert_one_line(code, err, "1600 samples", "--on-error skip")
    assert "'tiny'" in err or "'short'" in err


def _forward(model, waves):
    from neurohook import models
    from neurohook.hooks import Recorder

    rec = Recorder(model, **models.probe_layers(model))
    lens = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    with rec, torch.inference_mode(), rec.batch(list(range(len(waves))), lengths=lens):
        model(batch, lens)
    return rec.features().values


@pytest.mark.parametrize("name", ["adi-cnn", "sre-cnn", "st-base", "st-large", "resemblyzer", "wav2vec2_base"])
def test_a_clip_gets_the_same_features_alone_and_batched_or_is_rejected_in_both(name):
    from neurohook import models
    from neurohook.errors import TooShortError

    if name == "resemblyzer":
        try:
            weights_path()
        except WeightsNotFoundError:
            pytest.skip("pip install --no-deps resemblyzer ships the pretrained weights")
    model = (models.build(name, size="small", seed=0) if name in models.BUILTIN else models.build(name, seed=0)).eval()
    g = torch.Generator().manual_seed(0)
    long = torch.randn(12000, generator=g) * 0.1
    need = model.min_samples
    for n in (need - 1, 1, 0):
        for batch in ([torch.randn(max(n, 1), generator=g) * 0.1], [torch.randn(max(n, 1), generator=g) * 0.1, long]):
            with pytest.raises(TooShortError, match=f"needs at least {need}"):
                _forward(model, batch)
    short = torch.randn(need + 7, generator=g) * 0.1
    if model.padding_invariant:
        alone, batched = _forward(model, [short])[0], _forward(model, [short, long])[0]
        np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(alone).max())))
    else:  # extraction runs such a model one utterance per forward
        assert name == "wav2vec2_base"


def test_extraction_of_a_padding_sensitive_model_does_not_depend_on_the_batch(corpus, tmp_path, capsys):
    from neurohook import models
    from neurohook.data.manifest import read_manifest
    from neurohook.extract import extract as run

    model = models.build("wav2vec2_base", seed=0)
    assert not model.padding_invariant
    manifest = read_manifest(corpus).select(["u00", "u01", "u02"])
    layers = ["model.encoder.transformer.layers.0"]
    spec = {k: v for k, v in models.probe_layers(model).overrides.items() if k in layers}
    path = run(model, manifest, tmp_path / "f", layers, overrides=spec, batch_size=3, progress=False)
    alone = [run(model, manifest.select([u]), tmp_path / u, layers, overrides=spec, progress=False) for u in manifest.ids]
    np.testing.assert_allclose(Features.load(path).values, np.concatenate([Features.load(p).values for p in alone]),
                               rtol=1e-5, atol=1e-5)


def test_analyze_reads_an_extraction_kept_as_shards(corpus, tmp_path, capsys):
    code, err = extract(capsys, corpus, tmp_path / "f", "--no-merge")
    assert code == 0 and not (tmp_path / "f" / "features.npz").exists(), err
    code, err = cli(capsys, "analyze", "--features", tmp_path / "f", "--manifest", corpus, "--tasks", "gender",
                    "--speaker-column", "", "--seeds", "1", "--paper-settings", "--epochs", "2", "--test-size", "0.5",
                    "--out", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["models"]["f"]["n_neurons"] == 1440


def test_analyze_keeps_shards_on_disk_and_equals_the_merged_features(corpus, tmp_path, capsys):
    """`neurohook analyze` on a folder of shards reads them on demand, with the merged features' result."""
    from neurohook.cli.commands import load_features
    from neurohook.shards import ShardedFeatures

    code, err = extract(capsys, corpus, tmp_path / "f", "--no-merge")
    assert code == 0, err
    assert isinstance(load_features(str(tmp_path / "f"), "--features", on_demand=True), ShardedFeatures)
    (tmp_path / "m").mkdir()
    ShardedFeatures.open(tmp_path / "f").load().save(tmp_path / "m" / "features.npz")
    results = {}
    for name in ("f", "m"):
        code, err = cli(capsys, "analyze", "--features", tmp_path / name, "--manifest", corpus, "--tasks", "gender",
                        "--speaker-column", "speaker", "--seeds", "1", "--test-size", "0.5", "--sv",
                        "--out", tmp_path / f"{name}.json")
        assert code == 0, err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())["models"][name]
    on_disk, merged = results["f"]["analysis"]["tasks"]["gender"], results["m"]["analysis"]["tasks"]["gender"]
    for key in ("oracle", "control", "majority"):
        assert on_disk[key]["mean"] == pytest.approx(merged[key]["mean"], abs=1e-6), key
    assert on_disk["layer_accuracy"].keys() == merged["layer_accuracy"].keys()
    for layer, stat in on_disk["layer_accuracy"].items():
        assert stat["mean"] == pytest.approx(merged["layer_accuracy"][layer]["mean"], abs=1e-6), layer
    assert results["f"]["verification"]["SV"] == results["m"]["verification"]["SV"]
