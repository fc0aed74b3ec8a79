"""results.json loaded into the library's result classes: one :class:`ModelResults` per model, a :class:`Study` of them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping


from neurohook.errors import ResultsFileError
from neurohook.results import read_results_file
from neurohook.results import AnalysisResult, TaskResult
from neurohook.verification import VerificationResult
from neurohook.paper import PAPER_TASKS
from neurohook.report.document import Results

__all__ = ["ModelResults", "Study", "load_results"]



@dataclass
class ModelResults:
    """One model's entry of results.json, loaded into the library's result classes."""

    name: str
    n_neurons: int
    layers: list[str]
    layer_sizes: list[int]
    analysis: AnalysisResult
    verification: dict[str, VerificationResult]
    trained_for: str | None = None
    #: Trial sets whose speaker verification could not run, with the reason.
    verification_errors: dict[str, str] = field(default_factory=dict)
    #: ``neurohook intervene`` results as written: {"curves": {task: ...}, "erasure": {"column@layer": ...}}.
    interventions: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> dict[str, TaskResult]:
        """The probing tasks analysed on this model."""
        return self.analysis.tasks


@dataclass
class Study:
    """All models of one results.json."""

    version: str
    models: dict[str, ModelResults]

    def task_names(self) -> list[str]:
        """Probing tasks of any model: the paper's first, in its order, then the others as met."""
        seen: list[str] = []
        for m in self.models.values():
            seen += [t for t in m.tasks if t not in seen]
        return [t for t in PAPER_TASKS if t in seen] + [t for t in seen if t not in PAPER_TASKS]

    def with_task(self, task: str) -> list[ModelResults]:
        """Models that have a probing task."""
        return [m for m in self.models.values() if task in m.tasks]

    def trial_sets(self) -> list[str]:
        """Names of the SV trial sets of any model, in order of appearance."""
        seen: list[str] = []
        for m in self.models.values():
            seen += [t for t in m.verification if t not in seen]
        return seen


def load_results(results: Results) -> Study:
    """A Study from results.json's dict or path (:func:`read_results_file`).

    Raises :class:`~neurohook.errors.ResultsFileError` naming the file (or ``<dict>``) when it does
    not follow the schema.
    """
    source = "<dict>" if isinstance(results, Mapping) else str(results)
    if not isinstance(results, Mapping):
        results = read_results_file(results)
    if not isinstance(results.get("models"), Mapping):
        raise ResultsFileError(source, "not a neurohook results file (expected a 'models' mapping)")
    models: dict[str, ModelResults] = {}
    for name, entry in results["models"].items():
        try:
            models[str(name)] = _model_results(str(name), entry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ResultsFileError(source, f"model {name!r}: malformed entry ({type(exc).__name__}: {exc})") from None
    return Study(str(results.get("neurohook_version", "unknown")), models)


def _model_results(name: str, entry: Mapping[str, Any]) -> ModelResults:
    """One model's entry of results.json as ModelResults (KeyError/TypeError/ValueError when malformed)."""
    ar = AnalysisResult.from_dict(entry.get("analysis") or {"tasks": {}})
    for task, t in ar.tasks.items():
        _check_task(task, t)
    ver, failed = {}, {}
    for k, v in (entry.get("verification") or {}).items():
        if isinstance(v, Mapping) and "error" in v:
            failed[str(k)] = str(v["error"])
        else:
            ver[str(k)] = VerificationResult.from_dict(v)
    layers = list(entry.get("layers") or _first_task_attr(ar, "layers", []))
    sizes = [int(s) for s in (entry.get("layer_sizes") or _first_task_attr(ar, "layer_sizes", []))]
    n = int(entry.get("n_neurons") or sum(sizes))
    trained = entry.get("trained_for")
    interventions = dict(entry.get("interventions") or {})
    return ModelResults(name, n, layers, sizes, ar, ver, None if trained is None else str(trained), failed, interventions)


def _check_task(name: str, t: TaskResult) -> None:
    """ValueError naming the fields a task's entry lacks (only R.INIT and minimal_neurons may be absent)."""
    optional = _OPTIONAL if t.informative is not False else _OPTIONAL + _MINIMAL_SET
    missing = [f.name for f in fields(TaskResult) if getattr(t, f.name) is None and f.name not in optional]
    if missing:
        raise ValueError(f"task {name!r} lacks {', '.join(missing)}")
    if t.minimal_neurons is None:
        t.minimal_neurons = []
    if t.informative is None:  # results written before the gating: every task counted as informative
        t.informative = True


_OPTIONAL = ("rinit", "minimal_neurons", "top_minus_random", "check_minus_random", "minimal_minus_random")  # later fields: older results lack them
#: Absent for a task that is not informative (its probe is not above the majority rate).
_MINIMAL_SET = ("minimal_percent", "minimal_accuracy", "minimal_random_accuracy")


def _first_task_attr(ar: AnalysisResult, attr: str, default: Any) -> Any:
    for t in ar.tasks.values():
        return getattr(t, attr)
    return default
