"""The ``neurohook`` command line: extract, analyze, report, demo, corpus build, models train.

Every option can come from a flag or from a TOML file given with ``--config``: top-level keys apply
to every command, a ``[extract]`` (or ``[corpus-build]``, ``[models-train]``, ...) table to one
command; flags win. A user mistake (a missing file, a bad config key, an unknown layer or model)
ends with one line on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser", "UserError"]

logger = logging.getLogger("neurohook")


class UserError(Exception):
    """A mistake in the command line, the config file or the inputs it names."""


# ------------------------------------------------------------------------------------------------
# Options: (flag, default, help, kwargs). Defaults live here so that a config file can fill gaps.

Option = tuple[str, Any, str, dict]

EXTRACT: list[Option] = [
    ("--model", None, "a model name (see `neurohook models list`: the paper's architectures, resemblyzer, "
                      "torchaudio's wav2vec2_base, hubert_base, ... with random weights) or a checkpoint .pt file", {}),
    ("--size", "small", "size of a built-in model: small or paper", {}),
    ("--manifest", None, "CSV or JSON-lines manifest with utt_id and path columns", {}),
    ("--out", None, "output folder (shards, features.npz, extract.json)", {}),
    ("--layers", None, "layer names or glob patterns (* = one dotted component, ** = any depth); "
                       "default: the model's probe layers", {"nargs": "+"}),
    ("--pooling", "mean", "pooling for layers without their own: mean, std, stats, max or min", {}),
    ("--batch-size", 8, "utterances per forward call", {"type": int}),
    ("--shard-size", 256, "utterances per shard (the unit of resuming and of distribution)", {"type": int}),
    ("--device", "cpu", "torch device to run the model on, e.g. cpu or cuda", {}),
    ("--on-error", "skip", "an unreadable audio file is skipped (and counted) or raises", {"choices": ["skip", "raise"]}),
    ("--merge", True, "merge the shards into one features.npz (--no-merge: keep only the shards, read "
                      "memory-mapped by neurohook.shards.ShardedFeatures, for features larger than memory)",
     {"action": argparse.BooleanOptionalAction}),
]
ANALYZE: list[Option] = [
    ("--features", None, "features file (features.npz) or the extract output folder", {}),
    ("--manifest", None, "manifest holding the label columns", {}),
    ("--tasks", None, "label columns to probe, e.g. gender language accent channel", {"nargs": "+"}),
    ("--speaker-column", "speaker", "column naming the speaker: splits are speaker-disjoint and SV "
                                    "trials are drawn from it (empty string: none)", {}),
    ("--sv", False, "also run speaker verification (layer-wise EER) on trials drawn from the speakers",
     {"action": "store_true"}),
    ("--rinit-features", None, "features of the same model with re-initialised weights (R.INIT baseline)", {}),
    ("--seeds", 5, "repeats over seeds (means and standard deviations)", {"type": int}),
    ("--test-size", 0.4, "fraction of utterances (or speakers) in the test part", {"type": float}),
    ("--epochs", 20, "probe training epochs", {"type": int}),
    ("--lr", 1e-3, "probe learning rate (Adam)", {"type": float}),
    ("--l1", 1e-5, "L1 penalty of the elastic net", {"type": float}),
    ("--l2", 1e-5, "L2 penalty of the elastic net", {"type": float}),
    ("--out", "results.json", "results file (JSON)", {}),
    ("--model-name", None, "name of the model in the results (default: the features folder's name)", {}),
]
REPORT: list[Option] = [
    ("--results", "results.json", "results file written by `neurohook analyze` or `neurohook demo`", {}),
    ("--out", "report", "output folder for report.md, report.html and the figures", {}),
]
DEMO: list[Option] = [
    ("--out", "neurohook-demo", "output folder (corpus cache aside)", {}),
    ("--size", "default", "tiny (a smoke test), default (about 15 minutes on 2 cores) or full (the training "
                          "presets in full, 5 seeds)", {"choices": ["tiny", "default", "full"]}),
    ("--seeds", None, "repeats over seeds (default: 1 for tiny, 3 for default, 5 for full)", {"type": int}),
]
CORPUS: list[Option] = [
    ("--out", None, "output folder (default: the user cache, $XDG_CACHE_HOME/neurohook/corpus)", {}),
    ("--size", "small", "tiny, small, medium or large", {}),
    ("--seed", 0, "seed of speakers, texts and channels", {"type": int}),
    ("--workers", None, "synthesis processes (default: all cores)", {"type": int}),
]
TRAIN: list[Option] = [
    ("--model", None, "built-in model to train: adi-cnn, sre-cnn, st-base or st-large", {}),
    ("--size", "small", "small (CPU preset) or paper", {}),
    ("--manifest", None, "training manifest (default: the built-in small corpus)", {}),
    ("--out", None, "checkpoint file (.pt)", {}),
    ("--epochs", None, "training epochs (default: the preset's)", {"type": int}),
    ("--seed", 0, "training seed", {"type": int}),
]

COMMANDS: dict[str, tuple[list[Option], str]] = {
    "extract": (EXTRACT, "pool every chosen layer over a manifest (resumable; torchrun-aware)"),
    "analyze": (ANALYZE, "probe layers and neurons for each task; write results.json"),
    "report": (REPORT, "write the paper's tables and figures from results.json"),
    "demo": (DEMO, "the whole study on the built-in corpus and models, from nothing"),
    "corpus-build": (CORPUS, "synthesise the built-in multilingual corpus"),
    "models-train": (TRAIN, "train a built-in model on the built-in corpus"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; option defaults are None so that config files can fill them."""
    parser = argparse.ArgumentParser(prog="neurohook", description="Layer-wise and neuron-level probing of speech models.")
    parser.add_argument("--config", help="TOML file of options (flags win)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {"corpus": sub.add_parser("corpus", help="the built-in corpus").add_subparsers(dest="verb", metavar="VERB"),
              "models": sub.add_parser("models", help="built-in models").add_subparsers(dest="verb", metavar="VERB")}
    for name, (options, help_text) in COMMANDS.items():
        if "-" in name:
            group, verb = name.split("-", 1)
            p = groups[group].add_parser(verb, help=help_text, description=help_text)
        else:
            p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command=name)
        for flag, default, help_, kw in options:
            shown = f" (default: {default})" if default not in (None, False) else ""
            p.add_argument(flag, default=None, help=help_ + shown, **kw)
    groups["models"].add_parser("list", help="list the built-in models").set_defaults(command="models-list")
    return parser


def load_config(path: str | None, command: str) -> dict[str, Any]:
    """Options for one command from a TOML file: top-level keys, then the command's own table."""
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path}: {e}") from e
    options = COMMANDS.get(command, ([], ""))[0]
    known = {flag[2:].replace("-", "_") for flag, *_ in options}
    tables = {name for name in COMMANDS} | {"corpus", "models"}
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key.replace("_", "-") not in tables:
                raise UserError(f"config file {path}: unknown table [{key}] (known: {', '.join(sorted(COMMANDS))})")
            continue
        merged[key] = value
    merged.update(data.get(command, {}))
    for key in merged:
        if key.replace("-", "_") not in known:
            raise UserError(f"config file {path}: unknown key {key!r} for `{command}` (known: {', '.join(sorted(known))})")
    return {k.replace("-", "_"): v for k, v in merged.items()}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill options not given as flags from the config file, then from the built-in defaults."""
    config = load_config(args.config, args.command)
    for flag, default, _, _ in COMMANDS.get(args.command, ([], ""))[0]:
        key = flag[2:].replace("-", "_")
        if getattr(args, key, None) is None:
            setattr(args, key, config.get(key, default))
    return args


def require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, "")]
    if missing:
        raise UserError(f"`{args.command.replace('-', ' ')}` needs {' and '.join(missing)}")


def existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {path}")
    return p


# ------------------------------------------------------------------------------------------------
# Commands


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from neurohook.corpus import build_corpus

    manifest = build_corpus(args.out, size=args.size, seed=args.seed, workers=args.workers)
    print(manifest)
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
        raise UserError(f"no training recipe for {args.model!r}; recipes: {', '.join(train.PRESETS)}")
    manifest = str(existing(args.manifest, "manifest")) if args.manifest else None
    overrides = {"size": args.size, "seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    result = train.train(args.model, manifest=manifest, out=args.out, **overrides)
    logger.info("trained %s in %.0f s: %s", args.model, result.seconds, result.metrics)
    print(result.checkpoint)
    return 0


def load_model(spec: str, size: str) -> Any:
    """A model from a name (built-in or third-party) or a checkpoint file."""
    from neurohook import models

    if spec.endswith(".pt") or Path(spec).is_file():
        return models.load(existing(spec, "model checkpoint"))
    names = (*models.BUILTIN, *models.THIRD_PARTY)
    if spec not in names:
        raise UserError(f"unknown model {spec!r}: give a checkpoint file or one of {', '.join(names)}")
    # Random weights from a fixed seed: every torchrun rank, and a resumed run, builds the same model.
    return models.build(spec, size=size, seed=0)


def cmd_extract(args: argparse.Namespace) -> int:
    require(args, "model", "manifest", "out")
    from neurohook import models
    from neurohook.data.manifest import read_manifest
    from neurohook.extract import extract

    model = load_model(args.model, args.size)
    manifest = read_manifest(existing(args.manifest, "manifest"))
    if args.layers:
        layers, pooling, overrides = args.layers, args.pooling, None
    else:
        spec = models.probe_layers(model)
        layers, pooling, overrides = spec.layers, spec.pooling, spec.overrides
    path = extract(model, manifest, args.out, layers, pooling=pooling, overrides=overrides,
                   batch_size=args.batch_size, shard_size=args.shard_size, device=args.device, on_error=args.on_error,
                   progress=not args.verbose, merge=args.merge)
    if path is not None:
        print(path)
    return 0


def _features_path(path: str) -> Path:
    from neurohook.extract import FEATURES_FILE

    p = existing(path, "features")
    return p / FEATURES_FILE if p.is_dir() else p


def cmd_analyze(args: argparse.Namespace) -> int:
    require(args, "features", "manifest", "tasks")
    from neurohook.data.manifest import read_manifest
    from neurohook.features import Features
    from neurohook.study import analyze_model, write_results

    feats = Features.load(_features_path(args.features))
    manifest = read_manifest(existing(args.manifest, "manifest"), check_files=False)
    rinit = Features.load(_features_path(args.rinit_features)) if args.rinit_features else None
    name = args.model_name or Path(args.features).resolve().with_suffix("").name
    entry = analyze_model(feats, manifest, args.tasks, speaker_column=args.speaker_column or None, sv=args.sv,
                          rinit_features=rinit, seeds=tuple(range(args.seeds)), test_size=args.test_size,
                          epochs=args.epochs, lr=args.lr, l1=args.l1, l2=args.l2)
    print(write_results({name: entry}, args.out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from neurohook.report import write_report

    print(write_report(existing(args.results, "results file"), args.out))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from neurohook.demo import run_demo

    print(run_demo(args.out, size=args.size, seeds=args.seeds))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "extract": cmd_extract, "analyze": cmd_analyze, "report": cmd_report, "demo": cmd_demo,
    "corpus-build": cmd_corpus_build, "models-train": cmd_models_train, "models-list": cmd_models_list,
}


def _user_error_types() -> tuple[type[BaseException], ...]:
    from neurohook.data.manifest import ManifestError
    from neurohook.hooks import LayerNotFoundError

    return (UserError, ManifestError, LayerNotFoundError, FileNotFoundError, ValueError, KeyError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("corpus", "models"):
        parser.parse_args([args.command, "--help"])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not args.verbose:
        logging.getLogger("neurohook").setLevel(logging.INFO)
    try:
        return HANDLERS[args.command](resolve(args))
    except _user_error_types() as e:
        if args.debug:
            raise
        message = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        one = "; ".join(lines)
        print(f"neurohook: error: {one if len(one) <= 400 else one[:397] + '...'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurohook: interrupted (completed shards are kept; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
