"""Sharded extraction: equal to one Recorder pass, resumable after a kill, identical under torchrun."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from neurohook.data.manifest import read_manifest
from neurohook.features import Features
from neurohook.hooks import Recorder

TOY = textwrap.dedent('''
    import sys, time, torch
    from torch import nn

    class Toy(nn.Module):
        """Waveform CNN: (B, samples) -> frames; a sleep makes each call slow enough to interrupt."""
        def __init__(self, delay=0.0):
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Conv1d(1, 6, 400, stride=160)
            self.conv2 = nn.Conv1d(6, 5, 3, stride=2)
            self.delay = delay
        def forward(self, wave, lengths=None):
            time.sleep(self.delay)
            return self.conv2(torch.relu(self.conv1(wave[:, None, :])))

    if __name__ == "__main__":
        from neurohook.data.manifest import read_manifest
        from neurohook.extract import extract
        manifest, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
        extract(Toy(delay), read_manifest(manifest), out, ["conv1", "conv2"], pooling="stats",
                batch_size=2, shard_size=3, progress=False)
''')


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = ["utt_id,path,speaker,gender"]
    for i in range(11):
        path = root / f"u{i:02d}.wav"
        sf.write(path, rng.standard_normal(int(16000 * rng.uniform(0.3, 1.2))).astype(np.float32) * 0.1, 16000)
        rows.append(f"u{i:02d},{path},s{i % 4},{'fm'[i % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "toy.py").write_text(TOY)
    return root


def run_toy(corpus: Path, out: Path, delay: float = 0.0, launcher: list[str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = (launcher or [sys.executable]) + [str(corpus / "toy.py"), str(corpus / "manifest.csv"), str(out), str(delay)]
    return subprocess.Popen(cmd, env=env, cwd=corpus, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for ``proc`` reading its output (a full pipe cannot stall it; the pipe is closed after)."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode()


def reference(corpus: Path) -> Features:
    sys.path.insert(0, str(corpus))
    try:
        from toy import Toy  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(corpus))
    model = Toy().eval()
    manifest = read_manifest(corpus / "manifest.csv")
    rec = Recorder(model, ["conv1", "conv2"], pooling="stats")
    with rec, torch.inference_mode():
        for r in manifest.records:
            wave = torch.from_numpy(sf.read(r.path, dtype="float32")[0])[None]
            with rec.batch([r.utt_id], lengths=torch.tensor([wave.shape[1]])):
                model(wave, None)
    return rec.features()


def assert_same(a: Features, b: Features) -> None:
    assert a.ids == b.ids
    assert a.layers == b.layers
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)


def test_sharded_extraction_equals_one_recorder_pass(corpus, tmp_path):
    proc = run_toy(corpus, tmp_path / "out")
    finish(proc, timeout=120)
    got = Features.load(tmp_path / "out" / "features.npz")
    assert len(list((tmp_path / "out" / "shards").glob("shard-*.safetensors"))) == 4  # 11 utterances, 3 a shard
    assert_same(got, reference(corpus))


@pytest.mark.slow
def test_killed_extraction_resumes_to_identical_features(corpus, tmp_path):
    out = tmp_path / "out"
    proc = run_toy(corpus, out, delay=0.4)
    deadline = time.time() + 60
    while not list((out / "shards").glob("shard-*.safetensors")) if (out / "shards").exists() else True:
        assert time.time() < deadline and proc.poll() is None, "no shard was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = sorted(p.name for p in (out / "shards").glob("shard-*.safetensors"))
    assert 1 <= len(done) < 4 and not (out / "features.npz").exists()
    # a write cut short leaves at most a hidden temporary file, never a partial shard
    assert not [p for p in (out / "shards").iterdir() if not p.name.startswith(".") and p.suffix != ".safetensors"]
    first = (out / "shards" / done[0]).stat().st_mtime_ns
    proc = run_toy(corpus, out)
    finish(proc, timeout=120)
    assert (out / "shards" / done[0]).stat().st_mtime_ns == first  # kept, not recomputed
    assert_same(Features.load(out / "features.npz"), reference(corpus))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun is not installed")
def test_torchrun_two_processes_equal_one(corpus, tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun")) if Path(sys.executable).with_name("torchrun").exists() else "torchrun"
    proc = run_toy(corpus, tmp_path / "two", launcher=[torchrun, "--nproc_per_node=2", "--master_port=29517"])
    finish(proc, timeout=180)
    assert_same(Features.load(tmp_path / "two" / "features.npz"), reference(corpus))


def test_the_model_fingerprint_covers_neurohook_front_end_code(tmp_path, monkeypatch):
    import inspect

    from neurohook import models, provenance

    model = models.build("adi-cnn", size="small", num_classes=2, seed=0)
    before = provenance.model_fingerprint(model)
    assert before["code"] and provenance.model_fingerprint(torch.nn.Linear(2, 2))["code"] == ""
    real = inspect.getsourcefile
    edited = tmp_path / "cnn.py"
    edited.write_text(Path(real(type(model))).read_text() + "\n# a changed front-end setting\n")
    monkeypatch.setattr(provenance.inspect, "getsourcefile",
                        lambda cls: str(edited) if cls is type(model) else real(cls))
    after = provenance.model_fingerprint(model)
    assert after["state"] == before["state"] and after["code"] != before["code"]
    assert "code" in provenance.compare_run({"run": {"model": before}}, {"model": after, "layers": []})


def test_float16_extraction_rounds_the_float32_features_and_is_its_own_configuration(corpus, tmp_path):
    from neurohook.errors import FolderConflictError
    from neurohook.extract import extract

    sys.path.insert(0, str(corpus))
    try:
        from toy import Toy  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(corpus))
    manifest = read_manifest(corpus / "manifest.csv")
    run = dict(pooling="stats", batch_size=2, shard_size=3, progress=False)
    full = Features.load(extract(Toy(), manifest, tmp_path / "f32", ["conv1", "conv2"], **run))
    half = Features.load(extract(Toy(), manifest, tmp_path / "f16", ["conv1", "conv2"], dtype="float16", **run))
    assert half.ids == full.ids and half.values.dtype == np.float32
    np.testing.assert_array_equal(half.values, full.values.astype(np.float16).astype(np.float32))
    with pytest.raises(FolderConflictError, match="dtype"):
        extract(Toy(), manifest, tmp_path / "f16", ["conv1", "conv2"], **run)  # float32 into the float16 folder


def test_the_state_hash_covers_zero_dimensional_buffers():
    from neurohook import provenance

    bn = torch.nn.BatchNorm1d(3)  # num_batches_tracked: a 0-d int64 buffer
    before = provenance.model_fingerprint(bn)["state"]
    bn.num_batches_tracked += 1
    assert provenance.model_fingerprint(bn)["state"] != before


def test_a_front_end_setting_outside_the_state_dict_is_another_configuration(corpus, tmp_path):
    from neurohook import models
    from neurohook.errors import FolderConflictError
    from neurohook.extract import extract

    manifest = read_manifest(corpus / "manifest.csv")
    run = dict(batch_size=4, shard_size=6, progress=False)
    extract(models.build("silero-vad", pretrained=False, seed=0), manifest, tmp_path / "out", ["lstm"], **run)
    other = models.build("silero-vad", pretrained=False, seed=0)
    other.config = {**other.config, "note": "another front-end"}  # same weights and code, other settings
    with pytest.raises(FolderConflictError, match="config"):
        extract(other, manifest, tmp_path / "out", ["lstm"], **run)
