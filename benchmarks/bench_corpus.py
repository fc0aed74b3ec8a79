"""Built-in corpus build throughput and audio loader throughput; prints JSON.

Usage: python benchmarks/bench_corpus.py [--size small] [--workers N] [--out DIR]
(builds into a temporary folder unless --out is given; the loader runs over the built corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from neurohook.corpus import build_corpus
from neurohook.data import make_loader, read_manifest


def loader_throughput(manifest: Path, workers: int, batch_size: int = 16) -> dict[str, float]:
    """Utterances and audio seconds per wall second for one pass over the manifest."""
    man = read_manifest(manifest)
    loader = make_loader(man, batch_size=batch_size, num_workers=workers)
    t0 = time.perf_counter()
    n = samples = 0
    for ids, _, lengths in loader:
        n += len(ids)
        samples += int(lengths.sum())
    wall = time.perf_counter() - t0
    return {
        "workers": workers,
        "utterances": n,
        "wall_s": round(wall, 3),
        "utterances_per_s": round(n / wall, 1),
        "audio_s_per_wall_s": round(samples / 16000 / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="small")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "corpus"
        t0 = time.perf_counter()
        manifest = build_corpus(out, size=args.size, seed=0, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        man = read_manifest(manifest)
        audio_s = sum(float(d) for d in man.labels("duration"))
        result = {
            "corpus_build": {
                "size": args.size,
                "workers": args.workers,
                "utterances": len(man),
                "audio_s": round(audio_s, 1),
                "wall_s": round(wall, 2),
                "utterances_per_s": round(len(man) / wall, 1),
                "audio_s_per_wall_s": round(audio_s / wall, 1),
            },
            "loader": [loader_throughput(manifest, w) for w in (0, 2)],
            "cpu_count": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
