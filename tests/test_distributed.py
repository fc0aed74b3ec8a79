"""The analysis spread over torchrun processes: whole tasks per rank, gathered, equal to one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurohook.distributed import share
from neurohook.features import Features, LayerSpan


def test_share_gives_every_unit_to_exactly_one_rank_in_order():
    units = ["GC", "LID", "DID", "CC", "SV"]
    parts = [share(units, rank=r, world_size=2) for r in range(2)]
    assert parts == [["GC", "DID", "SV"], ["LID", "CC"]]
    assert sorted(sum(parts, [])) == sorted(units) and share(units, 0, 1) == units


def planted(root: Path) -> tuple[Path, Path]:
    """240 utterances x 48 neurons (2 layers), 12 speakers, 3 tasks with planted information."""
    rng = np.random.default_rng(0)
    n = 240
    spk = np.repeat(np.arange(12), n // 12)
    gender, lang, chan = spk % 2, (spk // 2) % 3, rng.integers(0, 2, n)
    X = rng.standard_normal((n, 48)).astype(np.float32)
    X[:, 0] += 2 * gender
    X[:, 30] += lang
    X[:, 40] += 1.5 * chan
    ids = [f"u{i:03d}" for i in range(n)]
    Features(X, ids, [LayerSpan("a", 0, 24, "mean"), LayerSpan("b", 24, 48, "mean")]).save(root / "f.npz")
    rows = ["utt_id,path,speaker,gender,language,channel"]
    rows += [f"{u},{u}.wav,s{s},{'mf'[g]},{'xyz'[l]},{'ab'[c]}" for u, s, g, l, c in zip(ids, spk, gender, lang, chan)]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "f.npz", root / "m.csv"


@pytest.mark.slow
@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists() and shutil.which("torchrun") is None,
                    reason="torchrun is not installed")
def test_two_torchrun_processes_give_the_analysis_of_one(tmp_path):
    feats, manifest = planted(tmp_path)
    args = ["analyze", "--features", str(feats), "--manifest", str(manifest), "--tasks", "gender", "language",
            "channel", "--seeds", "2", "--model-name", "toy"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-I", "-m", "neurohook", *args, "--out", str(tmp_path / "one.json")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node=2", "--master_port=29519",
                          "--log-dir", str(tmp_path / "logs"), "--tee", "2",
                          "-m", "neurohook", *args, "--out", str(tmp_path / "two.json")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)  # not the source tree
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / f).read_text())["models"]["toy"] for f in ("one.json", "two.json"))
    assert list(a["analysis"]["tasks"]) == ["gender", "language", "channel"]
    assert a == b
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stderr.log")}
    ran = {rank: [t for t in ("gender", "language", "channel") if f"{t} seed 0:" in text] for rank, text in logs.items()}
    assert ran == {"0": ["gender", "channel"], "1": ["language"]}, ran  # whole tasks, each on one rank


def test_tasks_in_two_worker_processes_give_the_analysis_of_one(tmp_path):
    import torch

    from neurohook import ranking
    from neurohook.analysis import analyze
    from neurohook.data.manifest import read_manifest

    feats_path, manifest_path = planted(tmp_path)
    feats, manifest = Features.load(feats_path), read_manifest(manifest_path, check_files=False)
    ids = [str(u) for u in feats.ids]
    labels = {t: np.array([manifest[u].label(t) for u in ids]) for t in ("gender", "language", "channel")}
    speakers = np.array([manifest[u].label("speaker") for u in ids])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' arithmetic: one thread each
    ranking.set_num_threads(1)
    try:
        one = analyze(feats, labels, speakers=speakers, seeds=(0, 1))
    finally:
        torch.set_num_threads(threads)
        ranking.set_num_threads(0)
    two = analyze(feats, labels, speakers=speakers, seeds=(0, 1), n_jobs=2)
    assert list(two.tasks) == ["gender", "language", "channel"]
    assert two.to_dict() == one.to_dict()


def test_a_group_joined_here_is_destroyed_at_exit_and_the_callers_own_is_kept():
    # Left to teardown, an undestroyed gloo group aborted 4 of 20 two-rank runs (torch 2.14.1).
    script = """
import atexit, os, sys
import torch.distributed as dist
from neurohook import distributed
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
if sys.argv[2] == "caller":
    dist.init_process_group("gloo")
distributed.barrier(world_size=2)  # more than one rank: the group is needed
assert dist.is_initialized()
atexit._run_exitfuncs()
print(dist.is_initialized())
"""
    for port, who, kept in (("29537", "here", "False"), ("29538", "caller", "True")):
        run = subprocess.run([sys.executable, "-c", script, port, who], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split()[-1] == kept, (who, run.stdout)
