"""Options of every command: value types, the flag tables, the TOML config file, the parser.

A flag's type function also checks the same key in a config file, so ``--seeds 0`` and
``seeds = 0`` get the same one-line error naming the flag or the file and key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

from neurohook.errors import ConfigError

__all__ = ["COMMANDS", "UserError", "build_parser", "existing", "load_config", "require", "resolve"]


class UserError(ConfigError):
    """A mistake in the command line, the config file or the inputs it names."""


# ------------------------------------------------------------------------------------------------
# Value types: each checks one flag's (or config key's) value and says what it expects.


def _integer(value: Any) -> int:
    """An integer from a flag's text or a TOML integer (TOML floats and booleans are refused)."""
    if isinstance(value, (bool, float)):
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None


def _number(value: Any) -> float:
    """A finite number from a flag's text or a TOML number."""
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return x


def _bounded(convert: Callable[[Any], Any], ok: Callable[[Any], bool], expected: str, name: str) -> Callable[[Any], Any]:
    """A value type: ``convert``, then ``ok`` or an error saying what was ``expected``."""

    def check(value: Any) -> Any:
        x = convert(value)
        if not ok(x):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
        return x

    check.__name__ = check.__qualname__ = name
    check.__doc__ = f"{expected[0].upper()}{expected[1:]}."
    return check


positive_int = _bounded(_integer, lambda n: n >= 1, "a positive integer", "positive_int")
fraction = _bounded(_number, lambda x: 0 < x < 1, "a number between 0 and 1 (exclusive)", "fraction")
positive_float = _bounded(_number, lambda x: x > 0, "a positive number", "positive_float")
non_negative_float = _bounded(_number, lambda x: x >= 0, "a number >= 0", "non_negative_float")
folds = _bounded(lambda v: v if v == "auto" else _integer(v), lambda n: n == "auto" or n >= 1,
                 "'auto' or a positive integer", "folds")


def text(value: Any) -> str:
    """A string (TOML numbers and lists are refused rather than turned into text)."""
    if not isinstance(value, str):
        raise argparse.ArgumentTypeError(f"expected a string, got {value!r}")
    return value


def torch_device(value: Any) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        dev = torch.device(text(value))
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {value!r} (e.g. cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{value!r}: CUDA is not available on this machine (torch "
                                         f"{torch.__version__}); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{value!r}: MPS is not available on this machine; use --device cpu")
    return str(dev)


# ------------------------------------------------------------------------------------------------
# Options: (flag, default, help, kwargs). Defaults live here so that a config file can fill gaps.

Option = tuple[str, Any, str, dict]
POOLINGS = ["mean", "std", "stats", "max", "min"]

EXTRACT: list[Option] = [
    ("--model", None, "a model name (see `neurohook models list`: the paper's architectures, resemblyzer, "
                      "torchaudio's wav2vec2_base, hubert_base, ... with random weights), a checkpoint .pt file, or "
                      "hf:FOLDER (a Hugging Face wav2vec2 / HuBERT / WavLM / Data2Vec-audio model saved there; offline)",
     {"type": text}),
    ("--size", "small", "size of a built-in model", {"choices": ["small", "paper"]}),
    ("--manifest", None, "CSV or JSON-lines manifest with utt_id and path columns", {"type": text}),
    ("--out", None, "output folder (shards, features.npz, extract.json)", {"type": text}),
    ("--layers", None, "layer names or glob patterns (* = one dotted component, ** = any depth); "
                       "default: the model's probe layers", {"nargs": "+", "type": text}),
    ("--pooling", "mean", "pooling of every frame-level layer (given without --layers, it replaces the "
                          "model's own choice, e.g. stats pooling of the CNNs' conv layers)", {"choices": POOLINGS}),
    ("--batch-size", 8, "utterances per forward call", {"type": positive_int}),
    ("--shard-size", 256, "utterances per shard (the unit of resuming and of distribution)", {"type": positive_int}),
    ("--dtype", "float32", "storage precision of the features (float16: half the disk; pooling stays float32)",
     {"choices": ["float32", "float16"]}),
    ("--device", "cpu", "torch device to run the model on, e.g. cpu or cuda", {"type": torch_device}),
    ("--on-error", "skip", "an unreadable or too short audio file is skipped (listed in extract.json) or stops "
                           "the run", {"choices": ["skip", "raise"]}),
    ("--merge", True, "merge the shards into one features.npz (--no-merge: keep only the shards, read "
                      "memory-mapped by neurohook.shards.ShardedFeatures, for features larger than memory)",
     {"action": argparse.BooleanOptionalAction}),
    ("--overwrite", False, "recompute everything in --out, even shards another configuration wrote",
     {"action": "store_true"}),
]
ANALYZE: list[Option] = [
    ("--features", None, "features file (features.npz), or the extract output folder (merged or --no-merge)",
     {"type": text}),
    ("--manifest", None, "manifest holding the label columns", {"type": text}),
    ("--tasks", None, "label columns to probe, e.g. gender language accent channel", {"nargs": "+", "type": text}),
    ("--speaker-column", "speaker", "column naming the speaker: splits are speaker-disjoint and SV "
                                    "trials are drawn from it (empty string: none)", {"type": text}),
    ("--split-column", None, "manifest column of train/test per utterance: that split for every seed "
                             "(default: a speaker-disjoint split drawn per seed)", {"type": text}),
    ("--sv", False, "also run speaker verification (layer-wise EER) on trials drawn from the speakers",
     {"action": "store_true"}),
    ("--rinit-features", None, "features of the same model with re-initialised weights (R.INIT baseline)",
     {"type": text}),
    ("--seeds", 5, "repeats over seeds (means and standard deviations)", {"type": positive_int}),
    ("--jobs", 1, "worker processes for the (task, seed) units, one thread each (the probes gain nothing "
                  "from a second thread: --jobs 2 on 2 cores about halves the time)", {"type": positive_int}),
    ("--test-size", 0.4, "fraction of utterances (or speakers) in the test part", {"type": fraction}),
    ("--l1", 0.0, "L1 penalty of the elastic net", {"type": non_negative_float}),
    ("--l2", None, "L2 penalty of the elastic net (default: chosen per probe by speaker-disjoint folds of "
                   "the training data)", {"type": non_negative_float}),
    ("--dev-folds", "auto", "folds of the training speakers that choose each probe's l2 (1: one dev part of "
                            "a quarter of them; auto: 3 below 10,000 training utterances, else 1)", {"type": folds}),
    ("--paper-settings", False, "train every probe as the paper does (Adam, l1 = l2 = 1e-5, 20 epochs) "
                                "instead of the tuned default", {"action": "store_true"}),
    ("--epochs", None, "Adam epochs (with --paper-settings; default 20)", {"type": positive_int}),
    ("--lr", None, "Adam learning rate (with --paper-settings; default 1e-3)", {"type": positive_float}),
    ("--out", "results.json", "results file (JSON; an existing results file gets this model added)", {"type": text}),
    ("--model-name", None, "name of the model in the results (default: the features folder's name)", {"type": text}),
]
INTERVENE: list[Option] = [
    ("--model", None, "the model the features were extracted from: a checkpoint (.pt) or a built-in name",
     {"type": text}),
    ("--size", "small", "size of a built-in --model given by name", {"choices": ["small", "paper"]}),
    ("--manifest", None, "manifest of the audio and the label columns", {"type": text}),
    ("--features", None, "features of --model (features.npz, or the extract output folder)", {"type": text}),
    ("--results", "results.json", "results file the curves and erasure results are added to", {"type": text}),
    ("--model-name", None, "name of the model in the results (default: the features folder's name)", {"type": text}),
    ("--task", None, "label column whose neurons a probe ranks (e.g. accent, speaker)", {"type": text}),
    ("--metric", "accuracy", "the model's own metric: its head's accuracy on --task, or its embedding's SV EER",
     {"choices": ["accuracy", "eer"]}),
    ("--ks", None, "numbers of neurons to ablate (default: 5 values from 0.5 % to 50 %)",
     {"nargs": "+", "type": positive_int}),
    ("--draws", 3, "random sets per k", {"type": positive_int}),
    ("--max-test", 200, "held-out utterances the curve is measured on", {"type": positive_int}),
    ("--speaker-column", "speaker", "column naming the speaker (speaker-disjoint split, SV trials)", {"type": text}),
    ("--erase", None, "also erase this label column (LEACE) at --layer and report what it costs the SV EER",
     {"type": text}),
    ("--layer", None, "layer to erase --erase at (its mean-pooled or (B, D) features)", {"type": text}),
]
REPORT: list[Option] = [
    ("--results", "results.json", "results file written by `neurohook analyze` or `neurohook demo`", {"type": text}),
    ("--out", "report", "output folder for report.md, report.html and the figures", {"type": text}),
]
DEMO: list[Option] = [
    ("--out", "neurohook-demo", "output folder (corpus cache aside)", {"type": text}),
    ("--size", "default", "tiny (a smoke test), default (about 9-11 minutes on 2 cores from nothing) or full (the training "
                          "presets in full, 5 seeds)", {"choices": ["tiny", "default", "full"]}),
    ("--seeds", None, "repeats over seeds (default: 1 for tiny, 3 for default, 5 for full)", {"type": positive_int}),
]
CORPUS: list[Option] = [
    ("--out", None, "output folder (default: the user cache, $XDG_CACHE_HOME/neurohook/corpus)", {"type": text}),
    ("--size", "small", "corpus size", {"choices": ["tiny", "small", "medium", "large"]}),
    ("--seed", 0, "seed of speakers, texts and channels", {"type": _integer}),
    ("--workers", None, "synthesis processes (default: all cores)", {"type": positive_int}),
]
TRAIN: list[Option] = [
    ("--model", None, "built-in model to train: adi-cnn, sre-cnn, st-base or st-large", {"type": text}),
    ("--size", "small", "small (CPU preset) or paper", {"choices": ["small", "paper"]}),
    ("--manifest", None, "training manifest (default: the built-in corpus of --corpus size)", {"type": text}),
    ("--corpus", None, "size of the built-in corpus to train on (default: the preset's)",
     {"choices": ["tiny", "small", "medium", "large"]}),
    ("--out", None, "checkpoint file (.pt)", {"type": text}),
    ("--epochs", None, "training epochs (default: the preset's)", {"type": positive_int}),
    ("--batch-size", None, "utterances per step (default: the preset's)", {"type": positive_int}),
    ("--lr", None, "learning rate (default: the preset's)", {"type": positive_float}),
    ("--seed", 0, "training seed", {"type": _integer}),
]

_MANIFEST_OUT: Option = ("--out", None, "manifest file to write: CSV, or JSON-lines for .jsonl (audio paths relative "
                                        "to its folder)", {"type": text})
FROM_KALDI: list[Option] = [
    ("--dir", None, "Kaldi data folder: wav.scp and utt2spk; optional segments (utterances become start/end "
                    "segments of recordings), spk2gender and text", {"type": text}),
    _MANIFEST_OUT,
    ("--audio-root", None, "folder that relative wav.scp paths are resolved against (default: the current folder, "
                           "as Kaldi recipes do)", {"type": text}),
    ("--check-files", True, "refuse wav.scp lines whose audio file does not exist (--no-check-files: skip the check)",
     {"action": argparse.BooleanOptionalAction}),
]
FROM_LIBRISPEECH: list[Option] = [
    ("--root", None, "LibriSpeech folder: SPEAKERS.TXT (here or one up) and <subset>/<speaker>/<chapter>/*.flac or "
                     "<speaker>/<chapter>/*.flac", {"type": text}),
    _MANIFEST_OUT,
]
FROM_VOXCELEB: list[Option] = [
    ("--root", None, "VoxCeleb folder: <id>/<video>/*.wav|*.m4a, here or under wav/ or aac/; vox1_meta.csv or "
                     "vox2_meta.csv (here or one up) give gender and nationality", {"type": text}),
    _MANIFEST_OUT,
]
FROM_COMMONVOICE: list[Option] = [
    ("--root", None, "Common Voice language folder: validated.tsv and clips/", {"type": text}),
    _MANIFEST_OUT,
    ("--language", None, "language of rows without a locale (older releases; default: the folder's name, e.g. en)",
     {"type": text}),
]

COMMANDS: dict[str, tuple[list[Option], str]] = {
    "extract": (EXTRACT, "pool every chosen layer over a manifest (resumable; torchrun-aware)"),
    "analyze": (ANALYZE, "probe layers and neurons for each task; write results.json"),
    "intervene": (INTERVENE, "ablate a probe's top neurons inside the running model, score the model's own "
                             "metric; erase a property (LEACE); add both to results.json"),
    "report": (REPORT, "write the paper's tables and figures from results.json"),
    "demo": (DEMO, "the whole study on the built-in corpus and models, from nothing"),
    "corpus-build": (CORPUS, "synthesise the built-in multilingual corpus"),
    "models-train": (TRAIN, "train a built-in model on the built-in corpus"),
    "manifest-from-kaldi": (FROM_KALDI, "write a manifest of a Kaldi data folder (speaker, gender, text, segments)"),
    "manifest-from-librispeech": (FROM_LIBRISPEECH, "write a manifest of LibriSpeech (speaker, gender, subset, text)"),
    "manifest-from-voxceleb": (FROM_VOXCELEB, "write a manifest of VoxCeleb 1 or 2 (speaker, video, gender, "
                                              "nationality, subset)"),
    "manifest-from-commonvoice": (FROM_COMMONVOICE, "write a manifest of a Common Voice language (speaker, gender, "
                                                    "age, accent, language, text)"),
}
#: Command groups: ``corpus-build`` is the verb ``build`` of the group ``corpus``.
GROUPS = {"corpus": "the built-in corpus", "models": "built-in models",
          "manifest": "manifests of standard corpus layouts (Kaldi, LibriSpeech, VoxCeleb, Common Voice)"}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), naming the flag."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; option defaults are None so that config files can fill them."""
    parser = _Parser(prog="neurohook", description="Layer-wise and neuron-level probing of speech models.")
    parser.add_argument("--config", help="TOML file of options (flags win)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {name: sub.add_parser(name, help=help_, description=help_).add_subparsers(
        dest="verb", metavar="VERB") for name, help_ in GROUPS.items()}
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


def _config_value(path: str, key: str, value: Any, kw: Mapping[str, Any]) -> Any:
    """A config-file value checked (and converted) as its flag's would be; UserError naming file and key."""
    where = f"config file {path}: key {key!r}"
    action = kw.get("action")
    if action in ("store_true", argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    convert: Callable[[Any], Any] = kw.get("type", text)
    values = value if kw.get("nargs") == "+" and isinstance(value, list) else [value]
    if kw.get("nargs") == "+" and not values:
        raise UserError(f"{where}: expected at least one value")
    try:
        out = [convert(v) for v in values]
    except argparse.ArgumentTypeError as e:
        raise UserError(f"{where}: {e}") from None
    for v in out:
        if "choices" in kw and v not in kw["choices"]:
            raise UserError(f"{where}: {v!r} is not one of {', '.join(map(str, kw['choices']))}")
    return out if kw.get("nargs") == "+" else out[0]


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
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path}: {e}") from None
    options = {flag[2:].replace("-", "_"): kw for flag, _, _, kw in COMMANDS.get(command, ([], ""))[0]}
    tables = {name for name in COMMANDS} | set(GROUPS)
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key.replace("_", "-") not in tables:
                raise UserError(f"config file {path}: unknown table [{key}] (known: {', '.join(sorted(COMMANDS))})")
            continue
        merged[key] = value
    merged.update(data.get(command, {}))
    out = {}
    for key, value in merged.items():
        name = key.replace("-", "_")
        if name not in options:
            raise UserError(f"config file {path}: unknown key {key!r} for `{command}` (known: {', '.join(sorted(options))})")
        out[name] = _config_value(path, key, value, options[name])
    return out


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill options not given as flags from the config file, then from the built-in defaults.

    ``args.given`` is the set of options the user set (by flag or config file).
    """
    config = load_config(args.config, args.command)
    args.given = set()
    for flag, default, _, _ in COMMANDS.get(args.command, ([], ""))[0]:
        key = flag[2:].replace("-", "_")
        if getattr(args, key, None) is not None or key in config:
            args.given.add(key)
        if getattr(args, key, None) is None:
            setattr(args, key, config.get(key, default))
    return args


def require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, "")]
    if missing:
        raise UserError(f"`{args.command.replace('-', ' ', 1)}` needs {' and '.join(missing)}")


def existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {path}")
    return p
