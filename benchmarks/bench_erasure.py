"""What erasing gender costs the speaker model: LEACE at sre-cnn's fc1, offline and live, beside a random direction.

On a finished demo (``neurohook demo --out DIR``): the demo's trained sre-cnn, its fc1 features and
the corpus. One speaker-disjoint split (seed 0, 40 % of the speakers held out); the eraser is fitted
on the training utterances' fc1 features only. Reported, with 95 % intervals over test speakers:
(1) gender accuracy of a tuned ``LinearProbe`` (trained on training rows, scored on test rows) on
fc1 as it is, after LEACE and after erasing a random direction of the same rank; (2) the same probe on
the model's fc2 embedding recomputed with the eraser applied live at fc1 (``neurohook.Erasure``):
what the layers above re-create; (3) the model's own speaker-verification EER (cosine on fc2) over
trials among the test utterances, without erasure, with LEACE and with the random direction, and
the wall time of each live pass. Usage: python benchmarks/bench_erasure.py [--demo DIR]
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from _harness import emit, parse_args, timed
from neurohook import models
from neurohook.data.batching import make_loader
from neurohook.data.manifest import read_manifest
from neurohook.data.splits import seed_streams, train_test_split
from neurohook.demo import TASKS, _task_manifest
from neurohook.erasure import Erasure, fit_eraser, random_eraser
from neurohook.features import Features
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.probe import LinearProbe
from neurohook.study import labels_of
from neurohook.verification import bootstrap_ci, cosine_scores, eer, make_trials


def accuracy_with_interval(right: np.ndarray, groups: np.ndarray) -> dict[str, object]:
    reps = replicate_means([right.astype(float)], [groups], seed=0)[:, 0]
    lo, hi = percentile_interval(reps)
    return {"acc": round(100 * float(right.mean()), 2), "ci": [round(100 * lo, 2), round(100 * hi, 2)]}


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--demo", default="neurohook-demo", help="demo output folder"))
    demo = Path(args.demo)
    settings = json.loads((demo / "results.json").read_text())["demo_settings"]
    manifest = _task_manifest(read_manifest(settings["corpus"], check_files=False))
    model = models.load(demo / "models" / "sre-cnn.pt").eval()
    feats = Features.load(demo / "features" / "sre-cnn" / "features.npz")
    ids = [str(u) for u in feats.ids]
    gender_of, speaker_of = labels_of(manifest, TASKS["GC"], ids), labels_of(manifest, "speaker", ids)
    rows = np.array([i for i, u in enumerate(ids) if u in gender_of])
    y = np.array([gender_of[ids[i]] for i in rows])
    spk = np.array([speaker_of[ids[i]] for i in rows])
    tr, te = train_test_split(y, 0.4, seed_streams(0).split, spk)
    fc1 = np.asarray(feats.values)[rows][:, feats.columns("fc1")]
    leace = fit_eraser(fc1[tr], y[tr])
    control = random_eraser(fc1[tr], leace.rank, seed=0)

    def probe_on(X: np.ndarray) -> dict[str, object]:
        p = LinearProbe().fit(X[tr], y[tr], groups=spk[tr])
        return accuracy_with_interval(p.predict(X[te]) == y[te], spk[te])

    test_ids = [ids[i] for i in rows[te]]
    trials = make_trials(test_ids, list(spk[te]), n_target=2000, seed=0)
    loader = list(make_loader(manifest.select(test_ids), batch_size=16))

    def embeddings(eraser=None) -> tuple[dict[str, np.ndarray], float]:
        def run() -> dict[str, np.ndarray]:
            out = {}
            with torch.no_grad(), (Erasure(model, "fc1", eraser) if eraser is not None else nullcontext()):
                for b_ids, waves, lengths in loader:
                    out.update(zip(b_ids, model.embed(waves, lengths).numpy()))
            return out
        return timed(run)

    result: dict[str, object] = {"model": "sre-cnn (demo-trained)", "layer": "fc1", "n_train": len(tr),
                                 "n_test": len(te), "rank": leace.rank, "trials": len(trials.target)}
    result["gender_probe_fc1"] = {"none": probe_on(fc1), "leace": probe_on(leace.transform(fc1)),
                                  "random_direction": probe_on(control.transform(fc1)),
                                  "majority": round(100 * max(np.mean(y[te] == c) for c in np.unique(y)), 2)}
    live, sv = {}, {}
    for name, eraser in (("none", None), ("leace", leace), ("random_direction", control)):
        emb, seconds = embeddings(eraser)
        E = np.stack([emb[u] for u in test_ids])
        scores = cosine_scores(E, test_ids, trials)
        lo, hi = bootstrap_ci(scores, trials.target)  # over trials: optimistic (trials share utterances)
        sv[name] = {"eer": round(100 * eer(scores, trials.target), 2), "ci": [round(100 * lo, 2), round(100 * hi, 2)],
                    "s": round(seconds, 2)}
        a, b = train_test_split(y[te], 0.5, 0, spk[te])  # the fc2 probe: half of the test speakers train it
        p = LinearProbe().fit(E[a], y[te][a], groups=spk[te][a])
        live[name] = accuracy_with_interval(p.predict(E[b]) == y[te][b], spk[te][b])
    result["sv_eer_fc2"] = sv
    result["gender_probe_fc2_after_live_erasure"] = live
    emit("erasure", result)


if __name__ == "__main__":
    main()
