"""Built-in corpus build throughput and audio loader throughput; prints JSON.

Usage: python benchmarks/bench_corpus.py [--size small] [--workers N] [--out DIR]
(builds into a temporary folder unless --out is given; the loader runs over the built corpus).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _harness import emit, parse_args, timed
from neurohook.corpus import build_corpus
from neurohook.data import make_loader, read_manifest


def loader_throughput(manifest: Path, workers: int, batch_size: int = 16) -> dict[str, float]:
    """Utterances and audio seconds per wall second for one pass over the manifest."""
    man = read_manifest(manifest)
    loader = make_loader(man, batch_size=batch_size, num_workers=workers)
    def one_pass() -> tuple[int, int]:
        n = samples = 0
        for ids, _, lengths in loader:
            n += len(ids)
            samples += int(lengths.sum())
        return n, samples

    (n, samples), wall = timed(one_pass)
    return {
        "workers": workers,
        "utterances": n,
        "wall_s": round(wall, 3),
        "utterances_per_s": round(n / wall, 1),
        "audio_s_per_wall_s": round(samples / 16000 / wall, 1),
    }


def main() -> None:
    def options(ap):
        ap.add_argument("--size", default="small")
        ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
        ap.add_argument("--out", default=None)

    args = parse_args(__doc__, options)
    if args.quick:
        args.size = "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "corpus"
        manifest, wall = timed(lambda: build_corpus(out, size=args.size, seed=0, workers=args.workers, progress=False))
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
        }
    emit("corpus", result)


if __name__ == "__main__":
    main()
