"""What erasing gender costs the demo's speaker model: LEACE at sre-cnn's fc1, offline and live, beside a random direction.

On a finished demo (``neurohook demo --out DIR``): the demo's trained sre-cnn, its fc1 features and
the corpus; ``neurohook.intervene_study.erasure_cost`` on one speaker-disjoint split (seed 0, 40 % of
the speakers held out), the eraser fitted on the training utterances only: gender accuracy of a tuned
probe on fc1 as it is / after LEACE / after a random direction of the same rank; the model's SV EER
(cosine on its fc2 embedding) with each eraser applied live at fc1; a probe's gender accuracy on that
embedding; and the wall time. Usage: python benchmarks/bench_erasure.py [--demo DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

from _harness import emit, parse_args, timed
from neurohook import models
from neurohook.data.manifest import read_manifest
from neurohook.features import Features
from neurohook.intervene_study import erasure_cost


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--demo", default="neurohook-demo", help="demo output folder"))
    demo = Path(args.demo)
    manifest = read_manifest(json.loads((demo / "results.json").read_text())["demo_settings"]["corpus"], check_files=False)
    model = models.load(demo / "models" / "sre-cnn.pt")
    feats = Features.load(demo / "features" / "sre-cnn" / "features.npz")
    result, seconds = timed(lambda: erasure_cost(model, manifest, feats, "gender", "fc1"))
    emit("erasure", {"model": "sre-cnn (demo-trained)", "seconds": seconds, **result})


if __name__ == "__main__":
    main()
