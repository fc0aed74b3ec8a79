"""The results model: every probing result class and the ``results.json`` schema, in one place.

``results.json`` is ``{"schema": 1, "neurohook_version", "environment", "models": {name: entry}, ...settings}``
where an entry is ``{"n_neurons", "layers", "layer_sizes", "analysis": AnalysisResult,
"verification": {trial set: VerificationResult or {"error": reason}}, "trained_for"?}``.
:func:`write_results` writes it (``neurohook analyze``, the demo), :func:`read_results_file` reads
it (the report). Every class serialises with the one codec of :mod:`neurohook.codec`.

Example::

    result = neurohook.analyze(feats, labels)
    result.save("analysis.json"); AnalysisResult.load("analysis.json").tasks["task"].oracle.mean
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook import __version__
from neurohook.atomic import atomic_write_text
from neurohook.codec import JSONResult
from neurohook.errors import ResultsFileError
from neurohook.verification.results import VerificationResult

__all__ = ["SCHEMA_VERSION", "AnalysisResult", "Overlap", "Stat", "TaskResult", "read_results_file", "write_results"]

#: Version of the results.json layout; a file of a newer schema is refused.
SCHEMA_VERSION = 1


@dataclass
class Stat(JSONResult):
    """A quantity measured once per seed: its values, mean and (population) standard deviation.

    Stored as ``{"mean", "std", "values", "ci"}``; ``mean`` and ``std`` are derived, not read back.
    """

    values: list[float]
    #: 95 % interval (low, high) in the units of ``mean`` (:mod:`neurohook.intervals`), None when not measured.
    ci: tuple[float, float] | None = None

    @classmethod
    def of(cls, values: Sequence[float], ci: tuple[float, float] | None = None) -> "Stat":
        """A Stat of these per-seed values (as floats), with an optional interval."""
        return cls([float(v) for v in values], None if ci is None else (float(ci[0]), float(ci[1])))

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Population standard deviation over seeds."""
        return float(np.std(self.values))

    def _json_extra(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


@dataclass
class TaskResult(JSONResult):
    """Everything measured for one task (accuracies as fractions, statistics over seeds)."""

    task: str
    classes: list[str]
    n_train: int
    n_test: int
    layers: list[str]
    layer_sizes: list[int]
    seeds: list[int]
    majority: Stat
    oracle: Stat  # Acc(ALL)
    control: Stat  # Acc_control(ALL)
    selectivity: Stat
    rinit: Stat | None  # Acc(ALL) on re-initialised features
    layer_accuracy: dict[str, Stat]
    best_layer: str
    redundant_layers: list[str]  # layers within layer_delta of the best layer (section 3.5)
    ablation_percent: float
    masked: dict[str, Stat]  # top / bottom / random
    percentages: list[float]
    retrained_top: dict[str, Stat]  # per percentage (as str)
    retrained_random: dict[str, Stat]
    minimal_percent: Stat | None  # None (and the minimal-set fields empty) when not informative
    minimal_accuracy: Stat | None
    minimal_random_accuracy: Stat | None
    minimal_reached: list[bool]
    rest_redundant: list[bool]  # section 6.2 (i), per seed
    information_redundant: list[bool]  # section 6.2 (ii), per seed
    distribution: dict[str, Stat]  # neurons of the minimal set in each layer
    prefix_steps: list[int]  # k (number of top neurons kept) at which the prefix curve is sampled
    prefix_accuracy: list[float]  # mean over seeds
    minimal_neurons: list[int] = field(default_factory=list)  # first seed's minimal set (feature columns)
    #: Acc(ALL)'s interval lies above the majority rate: only then are minimal sets, their distribution
    #: over layers and overlaps computed (a probe at chance ranks noise).
    informative: bool = True
    #: Neurons constant on every labelled utterance (dead), per layer; left out of the masked draws.
    constant_neurons: dict[str, int] = field(default_factory=dict)
    #: Dev accuracy of each layer's probe (over the dev folds of the training rows, which choose
    #: best_layer and redundant_layers; the minimal set's size is chosen on the first fold's dev
    #: part); every other accuracy is test.
    layer_dev_accuracy: dict[str, Stat] = field(default_factory=dict)
    #: The l2 of the ALL probe (whose accuracy is reported) and of the ranking probe, per seed.
    probe_l2: list[float] = field(default_factory=list)
    ranking_l2: list[float] = field(default_factory=list)
    #: Masked top minus random accuracy (test) with its interval, and the verdict it supports:
    #: "better than random", "not better than random" or "worse than random" (interval excludes 0).
    top_minus_random: Stat | None = None
    ranking_verdict: str = ""
    #: The cross-fitted check (:mod:`neurohook.ranking_check`): probes retrained on half B of the training
    #: rows on the top / random ``ablation_percent`` of half A's ranking, test accuracy; their
    #: difference with its interval and the verdict it supports (as ``ranking_verdict``).
    retrained_check: dict[str, Stat] = field(default_factory=dict)
    check_minus_random: Stat | None = None
    check_verdict: str = ""
    #: The minimal set's retrained test accuracy minus its random counterpart's, with its interval
    #: (information redundancy, section 6.2 (ii), holds where the interval reaches above -delta).
    minimal_minus_random: Stat | None = None
    #: Random-k prefix curve (the mean over draws and seeds) and its spread over draws, at ``prefix_steps``.
    prefix_random: list[float] = field(default_factory=list)
    prefix_random_std: list[float] = field(default_factory=list)
    #: Which split each choice was made on ("dev"; "test" only for the paper's own minimal-set search).
    chosen_on: dict[str, str] = field(default_factory=dict)


@dataclass
class Overlap(JSONResult):
    """Shared neurons of two tasks' minimal sets (section 7.1)."""

    a: str
    b: str
    shared: int
    share_of_a: float
    share_of_b: float
    jaccard: float


@dataclass
class AnalysisResult(JSONResult):
    """Results of :func:`analyze`: one TaskResult per task, the pairwise overlaps of minimal sets and,
    when trials were given, speaker verification (a :class:`neurohook.verification.VerificationResult`)."""

    tasks: dict[str, TaskResult]
    overlaps: list[Overlap]
    settings: dict[str, Any] = field(default_factory=dict)
    verification: VerificationResult | None = None


def read_results_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a results file, ResultsFileError naming the file when it is not one.

    A file written by :meth:`AnalysisResult.save` (``{"tasks": ...}``) becomes one model named after the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(path, "no such file") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ResultsFileError(path, f"not a readable results file ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and "models" not in data and isinstance(data.get("tasks"), dict):
        data = {"models": {path.stem: {"analysis": data}}}
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ResultsFileError(path, "not a neurohook results file (expected a JSON object with a 'models' mapping)")
    if not isinstance(data.get("schema", SCHEMA_VERSION), int) or data.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise ResultsFileError(path, f"results schema {data.get('schema')!r} is newer than this neurohook's "
                                     f"({SCHEMA_VERSION}); upgrade neurohook")
    return data


def write_results(
    models: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], merge: bool = True, **extra: Any
) -> Path:
    """Write (or extend, when ``merge`` and the file exists) results.json atomically; returns its path.

    ``extra`` top-level keys (e.g. the settings of the run) are stored beside ``models``. An existing
    file that is not a results file raises ResultsFileError and is left as it is.
    """
    path = Path(path)
    data: dict[str, Any] = {"schema": SCHEMA_VERSION, "neurohook_version": __version__, "models": {}}
    if merge and path.exists():
        data = read_results_file(path)
        data.update(schema=SCHEMA_VERSION, neurohook_version=__version__)
    data["models"].update(models)
    data.update(extra)
    data["environment"] = environment()
    atomic_write_text(path, json.dumps(data, indent=1))
    return path


def environment() -> dict[str, Any]:
    """What the numbers were computed with: Python, numpy, torch, torchaudio, scikit-learn versions, threads."""
    import platform

    import sklearn
    import torch

    try:
        import torchaudio

        ta = torchaudio.__version__
    except ImportError:  # optional at analysis time
        ta = None
    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torchaudio": ta, "scikit-learn": sklearn.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform()}
