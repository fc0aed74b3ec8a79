"""Helpers shared by the fault tests: a small audio corpus on disk and the command line run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from neurohook.cli import main


def write_corpus(root: Path, n: int = 10, seed: int = 0) -> Path:
    """n noise clips of 0.3-0.9 s (4 speakers, 2 genders) and their manifest; returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["utt_id,path,speaker,gender"]
    for i in range(n):
        path = root / f"u{i:02d}.wav"
        sf.write(path, (rng.standard_normal(int(16000 * rng.uniform(0.3, 0.9))) * 0.1).astype(np.float32), 16000)
        rows.append(f"u{i:02d},{path.name},s{i % 4},{'fm'[i % 2]}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def cli(capsys, *args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``neurohook ARGS`` run in this process."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *names: str) -> None:
    """Exit 2 with one line on stderr that names every given input and holds no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


def files_under(path: Path) -> list[str]:
    """Every file below path (relative), or [] when it does not exist."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*")) if p.is_file()}


__all__ = ["write_corpus", "cli", "assert_one_line", "files_under", "mtimes"]
