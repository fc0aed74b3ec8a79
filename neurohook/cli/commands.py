"""The handlers of the command line's verbs: each takes the resolved options and returns the exit status."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from neurohook.cli.options import UserError, existing, require
from neurohook.errors import check_writable_dir, check_writable_file

__all__ = ["HANDLERS", "load_features", "load_model", "recorder_options"]

logger = logging.getLogger("neurohook")


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from neurohook.corpus import build_corpus

    if args.out:
        check_writable_dir(args.out, "--out")
    print(build_corpus(args.out, size=args.size, seed=args.seed, workers=args.workers))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from neurohook import models

    for name in (*models.BUILTIN, *models.THIRD_PARTY):
        print(name)
    return 0


def cmd_models_train(args: argparse.Namespace) -> int:
    require(args, "model", "out")
    from neurohook.models import train

    if args.model not in train.PRESETS:
        raise UserError(f"--model {args.model}: no training recipe; recipes: {', '.join(train.PRESETS)}")
    check_writable_file(args.out, "--out")
    manifest = str(existing(args.manifest, "manifest")) if args.manifest else None
    optional = {"corpus": args.corpus, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    overrides = {"size": args.size, "seed": args.seed, **{k: v for k, v in optional.items() if v is not None}}
    result = train.train(args.model, manifest=manifest, out=args.out, **overrides)
    logger.info("trained %s in %.0f s: %s", args.model, result.seconds, result.metrics)
    print(result.checkpoint)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """``manifest from-*``: a corpus layout's manifest, written to --out; prints a one-line summary."""
    from neurohook.data import corpora

    source = "dir" if args.command == "manifest-from-kaldi" else "root"
    require(args, source, "out")
    check_writable_file(args.out, "--out")
    convert: dict[str, Callable[[], Any]] = {
        "manifest-from-kaldi": lambda: corpora.from_kaldi(args.dir, audio_root=args.audio_root,
                                                          check_files=args.check_files),
        "manifest-from-librispeech": lambda: corpora.from_librispeech(args.root),
        "manifest-from-voxceleb": lambda: corpora.from_voxceleb(args.root),
        "manifest-from-commonvoice": lambda: corpora.from_commonvoice(args.root, language=args.language),
    }
    manifest = convert[args.command]()
    path = corpora.write(manifest, args.out)
    rows = [r.to_row() for r in manifest]
    filled = [c for c in rows[0] if any(row[c] for row in rows)]  # the columns the corpus gave values
    speakers = len({r.speaker for r in manifest if r.speaker})
    print(f"{path}: {len(manifest)} utterances, {speakers} speakers; columns: {', '.join(filled)}")
    return 0


def load_model(spec: str, size: str) -> Any:
    """A model from a name (built-in or third-party), a checkpoint file, or ``hf:FOLDER`` (a Hugging Face
    model saved there, loaded offline)."""
    from neurohook import models

    if spec.startswith("hf:"):
        from neurohook.models.hf import load_hf

        return load_hf(spec[3:])
    if spec.endswith(".pt") or Path(spec).is_file():
        return models.load(spec)
    names = (*models.BUILTIN, *models.THIRD_PARTY)
    if spec not in names:
        raise UserError(f"--model: unknown model {spec!r}: give a checkpoint file, hf:FOLDER or one of {', '.join(names)}")
    # Random weights from a fixed seed: every torchrun rank, and a resumed run, builds the same model.
    return models.build(spec, size=size, seed=0)


def recorder_options(model: Any, layers: Sequence[str] | None, pooling: str | None) -> tuple[Any, str, dict]:
    """(layers, default pooling, overrides) for extraction: the model's probe layers, or ``layers``.

    Named layers of a built-in model keep its exact lengths (and layout): a probe layer's own, or
    the lengths of the probe layer that contains a named sub-module (``conv1.conv`` -> ``conv1``).
    ``pooling`` (when the user gave it) applies to every frame-level layer.
    """
    from neurohook import models
    from neurohook.hooks import find_layers

    try:
        spec = models.probe_layers(model)
    except TypeError:
        spec = None
    if layers is None:
        if spec is None:
            raise UserError(f"--layers: {type(model).__name__} has no built-in probe layers; name them with --layers")
        names, overrides = list(spec.layers), {k: dict(v) for k, v in spec.overrides.items()}
    else:
        names, overrides = [n for n, _ in find_layers(model, layers)], {}
        for name in names if spec is not None else []:
            owner = next((p for p in spec.layers if name == p or name.startswith(p + ".")), None)
            if owner is not None and owner in spec.overrides:
                own = spec.overrides[owner]
                overrides[name] = dict(own) if owner == name else {k: v for k, v in own.items() if k == "lengths"}
    if pooling is not None:
        for opts in overrides.values():
            opts.pop("pooling", None)
    return names, pooling or (spec.pooling if spec is not None else "mean"), overrides


def cmd_extract(args: argparse.Namespace) -> int:
    require(args, "model", "manifest", "out")
    from neurohook.data.manifest import read_manifest
    from neurohook.extract import extract

    check_writable_dir(args.out, "--out")
    model = load_model(args.model, args.size)
    manifest = read_manifest(existing(args.manifest, "manifest"))
    layers, pooling, overrides = recorder_options(model, args.layers, args.pooling if "pooling" in args.given else None)
    path = extract(model, manifest, args.out, layers, pooling=pooling, overrides=overrides,
                   batch_size=args.batch_size, shard_size=args.shard_size, device=args.device, on_error=args.on_error,
                   progress=not args.verbose, merge=args.merge, overwrite=args.overwrite, dtype=args.dtype)
    if path is not None:
        print(path)
    return 0


def load_features(path: str, flag: str, on_demand: bool = False) -> Any:
    """Features from a file, an extract folder (features.npz) or a folder of shards (--no-merge); shards
    stay on disk, read on demand (:class:`neurohook.shards.ShardedFeatures`), with ``on_demand``."""
    from neurohook.extract import FEATURES_FILE
    from neurohook.features import Features
    from neurohook.shards import SHARD_PATTERN, ShardedFeatures

    p = existing(path, "features")
    if p.is_file():
        return Features.load(p)
    if (p / FEATURES_FILE).is_file():
        return Features.load(p / FEATURES_FILE)
    if list((p / "shards").glob(SHARD_PATTERN)) or list(p.glob(SHARD_PATTERN)):
        shards = ShardedFeatures.open(p)
        return shards if on_demand else shards.load()
    raise UserError(f"{flag} {path}: a folder without {FEATURES_FILE} or shards ({SHARD_PATTERN})")


def probe_options(args: argparse.Namespace) -> dict[str, Any]:
    """The probe's settings from the analyze flags: the tuned default, or the paper's (--paper-settings)."""
    if (args.epochs is not None or args.lr is not None) and not args.paper_settings:
        raise UserError("--epochs and --lr set the paper's Adam probe: add --paper-settings (the default probe "
                        "runs L-BFGS to convergence)")
    if args.paper_settings:
        if args.l2 is not None or args.l1:
            raise UserError("--paper-settings fixes l1 = l2 = 1e-5: drop --l1 / --l2, or drop --paper-settings")
        extra = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
        return {"paper": True, **extra}
    return {"l1": args.l1, "l2": args.l2, "dev_folds": args.dev_folds}


def cmd_analyze(args: argparse.Namespace) -> int:
    require(args, "features", "manifest", "tasks")
    from neurohook.data.manifest import read_manifest
    from neurohook.results import read_results_file, write_results
    from neurohook.distributed import context
    from neurohook.study import analyze_model, verify_model

    check_writable_file(args.out, "--out")  # before hours of work, not after
    if Path(args.out).exists():
        read_results_file(args.out)  # an existing --out must be a results file this model is added to
    # a folder of shards stays on disk: the study reads its rows on demand (neurohook.task_data)
    feats = load_features(args.features, "--features", on_demand=True)
    manifest = read_manifest(existing(args.manifest, "manifest"), check_files=False)
    rinit = load_features(args.rinit_features, "--rinit-features", on_demand=True) if args.rinit_features else None
    name = args.model_name or Path(args.features).resolve().with_suffix("").name
    speakers = args.speaker_column or None
    entry = analyze_model(feats, manifest, args.tasks, speaker_column=speakers, sv=False, split_column=args.split_column,
                          rinit_features=rinit, seeds=tuple(range(args.seeds)), test_size=args.test_size,
                          n_jobs=args.jobs, **probe_options(args))  # under torchrun: each rank its share of the tasks, all gathered
    if context()[0] != 0:
        return 0  # rank 0 writes
    path = write_results({name: entry}, args.out)  # what is finished is written before the optional step
    if args.sv:
        if speakers is None:
            raise UserError("--sv needs --speaker-column (the analysis is saved in " + str(path) + ")")
        from neurohook.shards import ShardedFeatures

        values = feats.load() if isinstance(feats, ShardedFeatures) else feats  # scoring reads every value
        entry["verification"]["SV"] = verify_model(values, manifest, speakers, seed=0)
        write_results({name: entry}, args.out)
    print(path)
    return 0


def cmd_intervene(args: argparse.Namespace) -> int:
    require(args, "model", "manifest", "features", "task")
    from neurohook.data.manifest import read_manifest
    from neurohook.intervene_study import encoded_vs_used, erasure_cost
    from neurohook.results import read_results_file, write_results

    if bool(args.erase) != bool(args.layer):
        raise UserError("--erase and --layer go together: the label column to erase and the layer to erase it at")
    check_writable_file(args.results, "--results")
    data = read_results_file(args.results) if Path(args.results).exists() else {"models": {}}
    name = args.model_name or Path(args.features).resolve().with_suffix("").name
    model = load_model(args.model, args.size)
    feats = load_features(args.features, "--features")
    manifest = read_manifest(existing(args.manifest, "manifest"), check_files=False)
    entry = dict(data["models"].get(name, {}))
    done = dict(entry.get("interventions", {}))
    done.setdefault("curves", {})[args.task] = encoded_vs_used(
        model, manifest, feats, args.task, metric=args.metric, speaker_column=args.speaker_column, ks=args.ks,
        draws=args.draws, max_test=args.max_test)
    if args.erase:
        done.setdefault("erasure", {})[f"{args.erase}@{args.layer}"] = erasure_cost(
            model, manifest, feats, args.erase, args.layer, speaker_column=args.speaker_column)
    entry["interventions"] = done
    print(write_results({name: entry}, args.results))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from neurohook.report import write_report

    check_writable_dir(args.out, "--out")
    print(write_report(existing(args.results, "results file"), args.out))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from neurohook.demo import run_demo

    check_writable_dir(args.out, "--out")
    print(run_demo(args.out, size=args.size, seeds=args.seeds))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "extract": cmd_extract, "analyze": cmd_analyze, "intervene": cmd_intervene, "report": cmd_report, "demo": cmd_demo,
    "corpus-build": cmd_corpus_build, "models-train": cmd_models_train, "models-list": cmd_models_list,
    **{name: cmd_manifest for name in ("manifest-from-kaldi", "manifest-from-librispeech", "manifest-from-voxceleb",
                                       "manifest-from-commonvoice")},
}
