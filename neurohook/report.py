"""Markdown and HTML report of a study (``results.json``): the reference paper's tables and figures.

:func:`write_report` reads the results (a dict, or the path of ``results.json``) and writes
``report.md``, ``report.html`` and PNG figures into one folder, every file atomically (temporary
file, then ``os.replace``). Tables follow the paper: Table 1 (baselines), Table 2 (masked
accuracy), Table 3 (minimal neuron set), Table 4 (speaker verification), Tables 5-7 (distribution
of the minimal set over layers), Table A.8 (standard deviations over seeds). Figures: layer-wise
accuracy per task (Figures 4, 6, 7), layer-wise EER (Figure 5), the prefix accuracy curve, heatmaps
of the neuron distribution and of the overlap of the tasks' minimal sets. The report ends with the
paper's findings (sections 5.3, 6.4 and 7.1) beside what this run found, each judged by a stated rule.

Every number is read from the results: accuracies and EERs (fractions there) are shown as
percentages with two decimals, like the paper. A model entry may name what its model was trained
for with an optional ``"trained_for"`` key (e.g. ``"SV"``, ``"DID"``); the findings use it to find
the speaker and dialect models (else the model's name, else the best-scoring model).
"""

from __future__ import annotations

import html
import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from neurohook.atomic import atomic_open, atomic_write_text
from neurohook.errors import ResultsFileError
from neurohook.study import read_results_file
from neurohook.analysis import AnalysisResult, TaskResult, overlap
from neurohook.verification import ALL as SV_ALL
from neurohook.verification import VerificationResult

__all__ = ["write_report", "load_results", "Study", "ModelResults", "Table", "findings"]

logger = logging.getLogger(__name__)

PAPER_TASKS = ("GC", "SV", "LID", "DID", "CC")
TASK_NAMES = {"GC": "gender", "SV": "speaker verification", "LID": "language", "DID": "regional dialect",
              "CC": "channel"}
SIMPLE_TASKS = ("GC", "CC")  # properties the paper calls simple (section 6.4 ii)
COMPLEX_TASKS = ("LID", "DID")  # the complex ones measured by probes (SV's Neu_t is per layer, not comparable)
GAP = 0.05  # the paper's 5-point threshold (section 6.2, GC), as a fraction
SMALL_SET = 50.0  # a minimal set of at most this % of the neurons counts as small
MISSING = "n/a"
NOT_MEASURED = "not measured"
SPEAKER_HINTS = ("sre", "speaker", "spk", "xvector", "ecapa", "resemblyzer")
DIALECT_HINTS = ("adi", "dialect", "did")

Results = Union[Mapping[str, Any], str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# Loading


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
    return ModelResults(name, n, layers, sizes, ar, ver, None if trained is None else str(trained), failed)


def _check_task(name: str, t: TaskResult) -> None:
    """ValueError naming the fields a task's entry lacks (only R.INIT and minimal_neurons may be absent)."""
    missing = [f.name for f in fields(TaskResult) if getattr(t, f.name) is None and f.name not in _OPTIONAL]
    if missing:
        raise ValueError(f"task {name!r} lacks {', '.join(missing)}")
    if t.minimal_neurons is None:
        t.minimal_neurons = []


_OPTIONAL = ("rinit", "minimal_neurons")


def _first_task_attr(ar: AnalysisResult, attr: str, default: Any) -> Any:
    for t in ar.tasks.values():
        return getattr(t, attr)
    return default


# ------------------------------------------------------------------------------------------------
# Formatting


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (the paper's style); n/a for None."""
    return MISSING if x is None else f"{100 * x:.2f}"


def percent_label(p: float) -> str:
    """A percentage of neurons such as 5 -> '5%' or 27.5 -> '27.5%'."""
    return f"{p:g}%"


def count_label(x: float) -> str:
    """A (mean) neuron count with one decimal, without a trailing '.0' (the paper's Tables 5-7)."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------------------
# Document blocks


@dataclass
class Table:
    """A titled table of strings; rendered the same way in Markdown and HTML."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Image:
    file: str  # name of the PNG next to the report
    caption: str


Block = Union[Heading, Para, Table, Image]


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.file})", "", f"*{b.caption}*", ""]
        else:
            out += [f"#### {b.title}", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join(["---"] * len(b.header)) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
            if b.note:
                out += [b.note, ""]
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eee}img{max-width:100%}
figure{margin:1em 0}figcaption{font-style:italic;font-size:90%}.note{font-size:90%;color:#555}"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one HTML page (all text escaped; images are the PNG files next to it)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Image):
            out.append(f'<figure><img src="{e(b.file)}" alt="{e(b.caption)}"><figcaption>{e(b.caption)}</figcaption></figure>')
        else:
            out.append(f"<h4>{e(b.title)}</h4>")
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            out.append("</tbody></table>")
            if b.note:
                out.append(f'<p class="note">{e(b.note)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# Tables


def models_table(study: Study) -> Table:
    """The models studied: neurons, layers, tasks, trial sets and seeds."""
    rows = []
    for m in study.models.values():
        seeds = sorted({len(t.seeds) for t in m.tasks.values()})
        rows.append([m.name, str(m.n_neurons), str(len(m.layers)), ", ".join(m.layers) or MISSING,
                     ", ".join(m.tasks) or MISSING, ", ".join(m.verification) or MISSING,
                     "/".join(map(str, seeds)) or MISSING])
    return Table("Models", ["Model", "#Neurons", "#Layers", "Layers", "Tasks", "SV trial sets", "Seeds"], rows)


def table1(study: Study, task: str) -> Table:
    """Table 1 for one task: majority baseline, oracle Acc(ALL), R.INIT and selectivity per model."""
    ms = study.with_task(task)
    rows = [["#Neurons"] + [str(m.n_neurons) for m in ms],
            ["labels#"] + [str(len(m.tasks[task].classes)) for m in ms],
            ["Acc (Maj-C)"] + [pct(m.tasks[task].majority.mean) for m in ms],
            ["Acc (ALL)"] + [pct(m.tasks[task].oracle.mean) for m in ms],
            ["Acc (R.INIT)"] + [pct(None if m.tasks[task].rinit is None else m.tasks[task].rinit.mean) for m in ms],
            ["Sel_a"] + [pct(m.tasks[task].selectivity.mean) for m in ms]]
    return Table(f"Table 1 — {task}", [""] + [m.name for m in ms], rows,
                 "Means over seeds. R.INIT: probe on re-initialised features (n/a: not run). "
                 "Sel_a: Acc(ALL) minus the control task's accuracy.")


def table2(study: Study, task: str) -> Table:
    """Table 2 for one task: accuracy of the ALL probe keeping only the top / bottom / random N%."""
    ms = study.with_task(task)
    rows = [["Neurons"] + [percent_label(m.tasks[task].ablation_percent) for m in ms]]
    for key, label in (("top", "Acc_t (Masked)"), ("bottom", "Acc_b (Masked)"), ("random", "Acc_r (Masked)")):
        rows.append([label] + [pct(m.tasks[task].masked[key].mean) for m in ms])
    return Table(f"Table 2 — {task}", [""] + [m.name for m in ms], rows,
                 "The trained ALL probe re-scored with all other neurons masked (t=top, b=bottom, r=random); means over seeds.")


def _seed_count(flags: Sequence[bool]) -> str:
    return f"{sum(map(bool, flags))}/{len(flags)} seeds"


def table3(study: Study, task: str) -> Table:
    """Table 3 for one task: Acc(ALL), the minimal set's size Neu_t and its re-trained top / random accuracy."""
    ms = study.with_task(task)
    t = {m.name: m.tasks[task] for m in ms}
    rows = [["Acc (ALL)"] + [pct(t[m.name].oracle.mean) for m in ms],
            ["Neu_t"] + [percent_label(t[m.name].minimal_percent.mean) for m in ms],
            ["Acc_t (Re-trained)"] + [pct(t[m.name].minimal_accuracy.mean) for m in ms],
            ["Acc_r (Re-trained)"] + [pct(t[m.name].minimal_random_accuracy.mean) for m in ms],
            ["Minimal set reached"] + [_seed_count(t[m.name].minimal_reached) for m in ms],
            ["Rest redundant (6.2 i)"] + [_seed_count(t[m.name].rest_redundant) for m in ms],
            ["Information redundant (6.2 ii)"] + [_seed_count(t[m.name].information_redundant) for m in ms]]
    return Table(f"Table 3 — {task}", [""] + [m.name for m in ms], rows,
                 "Neu_t: smallest tried % of all neurons whose re-trained top-N% probe is within delta of Acc(ALL), "
                 "mean over seeds; Acc_t / Acc_r: re-trained on the top / a random Neu_t% (means over seeds).")


def table3_curve(study: Study, task: str) -> Table:
    """Re-trained accuracy with the top and a random N% of neurons, for every N tried."""
    ms = study.with_task(task)
    keys = list(dict.fromkeys(k for m in ms for k in m.tasks[task].retrained_top))
    keys.sort(key=float)
    header = ["N%"] + [f"{m.name} {w}" for m in ms for w in ("top", "random")]
    rows = []
    for k in keys:
        row = [percent_label(float(k))]
        for m in ms:
            r = m.tasks[task]
            row += [pct(r.retrained_top[k].mean) if k in r.retrained_top else MISSING,
                    pct(r.retrained_random[k].mean) if k in r.retrained_random else MISSING]
        rows.append(row)
    return Table(f"Table 3b — {task}: re-trained accuracy per N%", header, rows)


def table4(study: Study, trial_set: str) -> Table:
    """Table 4 for one trial set: best layer Lb, EER(Lb), EER(ALL) and the neuron subsets' EERs."""
    rows = []
    for m in study.models.values():
        v = m.verification.get(trial_set)
        if v is None:
            continue
        lw = v.layerwise
        eer_all = next((e.eer for e in lw.layers if e.name == SV_ALL), None)
        nv = v.neurons
        if nv is None:
            lb = lw.best_layer
            rows.append([m.name, lb, pct(lw.get(lb).eer), pct(eer_all)] + [NOT_MEASURED] * 4)
            continue
        r = nv.table4_row()
        neu = MISSING if r["Neu_t"] is None else percent_label(r["Neu_t"])
        subset = [MISSING] * 3 if nv.minimal_percent is None else [
            pct(nv.subset(nv.minimal_percent).eer_top), pct(nv.subset(nv.minimal_percent).eer_random),
            pct(nv.subset(nv.minimal_percent).eer_bottom)]
        rows.append([m.name, nv.layer, pct(nv.eer_layer), pct(eer_all), neu] + subset)
    return Table(f"Table 4 — SV ({trial_set})", ["Model", "Lb", "EER(Lb)", "EER(ALL)", "Neu_t", "EER_t", "EER_r", "EER_b"],
                 rows, "EER in %. Lb: the layer of lowest EER. Neu_t: smallest % of Lb's neurons whose top set's EER is "
                       "within tolerance of EER(Lb) (n/a: none was); EER_t/r/b with the top / random / bottom Neu_t%.")


def table_layerwise_eer(m: ModelResults) -> Table:
    """Figure 5's numbers for one model: EER (%) of each layer and ALL, per trial set."""
    names = list(dict.fromkeys(e.name for v in m.verification.values() for e in v.layerwise.layers))
    sizes = {e.name: e.n_neurons for v in m.verification.values() for e in v.layerwise.layers}
    rows = []
    for n in names:
        row = [n, str(sizes[n])]
        for v in m.verification.values():
            row.append(next((pct(e.eer) for e in v.layerwise.layers if e.name == n), MISSING))
        rows.append(row)
    rows.append(["Best layer", ""] + [v.layerwise.best_layer for v in m.verification.values()])
    return Table(f"Layer-wise EER — {m.name}", ["Layer", "#Neu"] + [f"EER {t}" for t in m.verification], rows)


def table_layerwise_accuracy(m: ModelResults) -> Table:
    """Figures 4, 6 and 7's numbers for one model: accuracy (%) of each layer's probe per task."""
    tasks = list(m.tasks.values())
    layers = list(dict.fromkeys(n for t in tasks for n in t.layers))
    sizes = {n: s for t in tasks for n, s in zip(t.layers, t.layer_sizes)}
    rows = [[n, str(sizes[n])] + [pct(t.layer_accuracy[n].mean) if n in t.layer_accuracy else MISSING for t in tasks]
            for n in layers]
    rows.append(["ALL", str(sum(sizes.values()))] + [pct(t.oracle.mean) for t in tasks])
    rows.append(["Best layer", ""] + [t.best_layer for t in tasks])
    rows.append(["Within layer_delta of best", ""] + [", ".join(t.redundant_layers) for t in tasks])
    return Table(f"Layer-wise accuracy — {m.name}", ["Layer", "#Neu"] + list(m.tasks), rows)


def table_distribution(m: ModelResults) -> Table:
    """Tables 5-7 for one model: neurons of each task's minimal set per layer, count and % of all neurons."""
    tasks = list(m.tasks.values())
    layers = list(dict.fromkeys([*m.layers, *(n for t in tasks for n in t.layers)]))
    sizes = dict(zip(m.layers, m.layer_sizes))
    n_all = max(m.n_neurons, 1)
    for t in tasks:
        sizes.update(zip(t.layers, t.layer_sizes))
    header = ["Tasks (Neu_t %)"] + [f"{n} ({sizes.get(n, '?')})" for n in layers] + ["Total"]
    rows = []
    for t in tasks:
        row = [f"{t.task} ({t.minimal_percent.mean:g})"]
        total = 0.0
        for n in layers:
            if n in t.distribution:
                c = t.distribution[n].mean
                total += c
                row.append(f"{count_label(c)} ({100 * c / n_all:.1f}%)")
            else:
                row.append(MISSING)
        row.append(f"{count_label(total)} ({100 * total / n_all:.1f}%)")
        rows.append(row)
    return Table(f"Tables 5-7 — {m.name}", header, rows,
                 f"Neurons of the minimal set in each layer (mean over seeds) and their share of all "
                 f"{m.n_neurons} neurons. Header: layer (its number of neurons).")


def table_overlap(m: ModelResults) -> Table:
    """Shared neurons of the minimal sets of each pair of properties (first seed's sets)."""
    rows = [[o.a, o.b, str(o.shared), pct(o.share_of_a), pct(o.share_of_b), f"{o.jaccard:.3f}"]
            for o in _overlaps(m)]
    return Table(f"Overlap of minimal sets — {m.name}", ["A", "B", "Shared", "% of A", "% of B", "Jaccard"], rows,
                 "From the first seed's minimal sets. Pairs with SV use the minimal set of Table 4 (neurons of Lb), "
                 "compared with neurohook.analysis.overlap, the function that computed the others.")


def _sv_sets(m: ModelResults) -> dict[str, list[int]]:
    """SV minimal sets (columns of the model's features) per trial set, when Table 4 found one."""
    return {f"SV ({k})": v.neurons.minimal_neurons for k, v in m.verification.items()
            if v.neurons is not None and v.neurons.minimal_neurons and v.neurons.layer_end <= m.n_neurons}


def _overlaps(m: ModelResults) -> list[Any]:
    out = list(m.analysis.overlaps)
    for name, cols in _sv_sets(m).items():
        out += [overlap(name, cols, t.task, t.minimal_neurons) for t in m.tasks.values() if t.minimal_neurons]
    return out


def table_a8(study: Study) -> Table:
    """Table A.8: standard deviation of Acc(ALL) over seeds, per task and model."""
    models = list(study.models.values())
    rows = []
    for task in study.task_names():
        labels = sorted({str(len(m.tasks[task].classes)) for m in study.with_task(task)})
        rows.append([task, "/".join(labels)] + [
            f"± {m.tasks[task].oracle.std:.2E} ({len(m.tasks[task].seeds)} seeds)" if task in m.tasks else MISSING
            for m in models])
    return Table("Table A.8", ["Acc (ALL)", "# Class Labels"] + [m.name for m in models], rows,
                 "Population standard deviation of Acc(ALL) (a fraction) over the seeds; 0 with a single seed.")


# ------------------------------------------------------------------------------------------------
# Findings: the paper's (sections 5.1, 5.3, 6.1, 6.4, 7.1) beside this run's


@dataclass
class Finding:
    """One paper finding, the rule that tests it on this run, what the run shows and the verdict."""

    paper: str
    rule: str
    observed: str
    verdict: str


def upper_half(layers: Sequence[str]) -> list[str]:
    """The upper layers: the last ceil(L/2) of L layers."""
    return list(layers[len(layers) // 2 :])


def verdict(checks: Sequence[bool]) -> str:
    """agrees (all checks hold), partly (some), differs (none), not measured (no check)."""
    if not checks:
        return NOT_MEASURED
    return "agrees" if all(checks) else ("partly" if any(checks) else "differs")


def _role_model(role: str, hints: Sequence[str], fallback: Callable[[ModelResults], float],
                candidates: Sequence[ModelResults]) -> tuple[ModelResults | None, str]:
    """The model trained for a role: marked trained_for, else named so, else the best by fallback."""
    if not candidates:
        return None, ""
    for m in candidates:
        if m.trained_for is not None and m.trained_for.upper() == role:
            return m, f"{m.name} (trained_for={m.trained_for})"
    for m in candidates:
        tokens = re.split(r"[^a-z0-9]+", m.name.lower())
        if any(tok.startswith(h) for tok in tokens for h in hints if tok):
            return m, f"{m.name} (by its name)"
    best = max(candidates, key=fallback)
    return best, f"{best.name} (best-scoring, no model marked as trained for {role})"


def _f_learned(study: Study) -> Finding:
    checks, obs = [], []
    for task in study.task_names():
        for m in study.with_task(task):
            t = m.tasks[task]
            ok = t.oracle.mean >= t.majority.mean + GAP and t.selectivity.mean > 0
            if t.rinit is not None:
                ok = ok and t.oracle.mean >= t.rinit.mean + GAP
            checks.append(ok)
            if not ok:
                obs.append(f"{task}/{m.name}: ALL {pct(t.oracle.mean)}, Maj-C {pct(t.majority.mean)}, "
                           f"R.INIT {pct(None if t.rinit is None else t.rinit.mean)}, Sel_a {pct(t.selectivity.mean)}")
    text = (f"holds for {sum(checks)}/{len(checks)} task-model pairs" + ("; fails: " + "; ".join(obs) if obs else "")) \
        if checks else NOT_MEASURED
    return Finding("The probes learn the properties: Acc(ALL) beats Maj-C and R.INIT, with high selectivity (5.1)",
                   "Table 1: Acc(ALL) ≥ Maj-C + 5 points, Acc(ALL) ≥ R.INIT + 5 points (where run) and Sel_a > 0",
                   text, verdict(checks))


def _distributed(t: TaskResult) -> tuple[int, int]:
    """Layers whose accuracy has at least half the best layer's gain over Maj-C, and the layer count."""
    accs = [t.layer_accuracy[n].mean for n in t.layers]
    need = t.majority.mean + 0.5 * (max(accs) - t.majority.mean)
    return sum(a >= need for a in accs), len(accs)


def _f_distributed(study: Study) -> Finding:
    checks, obs = [], []
    for task in SIMPLE_TASKS:
        for m in study.with_task(task):
            k, n = _distributed(m.tasks[task])
            checks.append(k == n)
            obs.append(f"{task}/{m.name}: {k}/{n} layers")
    return Finding("Gender and channel information are encoded throughout the layers (distributed) (5.3 i, 5.2)",
                   "Figures 4/7: every layer's accuracy ≥ Maj-C + ½ (best layer − Maj-C)",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_redundant(study: Study) -> Finding:
    checks, obs = [], []
    for task in SIMPLE_TASKS:
        for m in study.with_task(task):
            t = m.tasks[task]
            checks.append(t.minimal_random_accuracy.mean >= t.minimal_accuracy.mean - GAP)
            obs.append(f"{task}/{m.name}: Acc_t {pct(t.minimal_accuracy.mean)} vs Acc_r {pct(t.minimal_random_accuracy.mean)}")
    return Finding("Gender and channel are stored redundantly: a random neuron subset does about as well as the top one "
                   "(5.3 ii, 6.4 iii, 7.1)",
                   "Table 3: Acc_r (re-trained) ≥ Acc_t (re-trained) − 5 points",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _best_eer(m: ModelResults, trial_set: str) -> float:
    v = m.verification[trial_set].layerwise
    return v.get(v.best_layer).eer


def _f_voice(study: Study) -> Finding:
    checks, obs = [], []
    for ts in study.trial_sets():
        ms = [m for m in study.models.values() if ts in m.verification]
        spk, how = _role_model("SV", SPEAKER_HINTS, lambda m: -_best_eer(m, ts), ms)
        if spk is None:
            continue
        lb = spk.verification[ts].layerwise.best_layer
        layers = [e.name for e in spk.verification[ts].layerwise.layers if e.name != SV_ALL]
        upper = lb in upper_half(layers)
        lowest = all(_best_eer(spk, ts) <= _best_eer(m, ts) for m in ms)
        checks.append(upper and lowest)
        others = ", ".join(f"{m.name} {pct(_best_eer(m, ts))}" for m in ms if m is not spk)
        obs.append(f"{ts}: speaker model {how}: Lb={lb} ({'upper' if upper else 'lower'} half), EER(Lb) "
                   f"{pct(_best_eer(spk, ts))}" + (f"; others' best EER: {others}" if others else "; single model"))
    return Finding("Voice identity is encoded only in the upper layers of the speaker model; the others are "
                   "speaker-invariant (5.3 iv-v)",
                   "Figure 5 / Table 4: the speaker model's best layer Lb is in its upper half of layers and its "
                   "EER(Lb) is the lowest of all models (per trial set)",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_language(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.with_task("LID"):
        t = m.tasks["LID"]
        up = t.best_layer in upper_half(t.layers)
        checks.append(up)
        obs.append(f"{m.name}: best layer {t.best_layer} ({'upper' if up else 'lower'} half)")
    return Finding("Language is captured in the upper layers of all models (5.3 vi)",
                   "Figure 6a: the LID probe's best layer is in the upper half of the layers, for every model",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_dialect(study: Study) -> Finding:
    paper = "Regional dialect is captured only by the dialect (task-specific) model, in its upper layers (5.3 viii)"
    rule = ("Figure 6b / Table 1: the dialect model's DID best layer is in its upper half and its Acc(ALL) is "
            "≥ 5 points above every other model's")
    ms = study.with_task("DID")
    m, how = _role_model("DID", DIALECT_HINTS, lambda x: x.tasks["DID"].oracle.mean, ms)
    if m is None:
        return Finding(paper, rule, NOT_MEASURED, NOT_MEASURED)
    t = m.tasks["DID"]
    up = t.best_layer in upper_half(t.layers)
    margin = [t.oracle.mean - o.tasks["DID"].oracle.mean for o in ms if o is not m]
    only = all(d >= GAP for d in margin)
    others = ", ".join(f"{o.name} {pct(o.tasks['DID'].oracle.mean)}" for o in ms if o is not m)
    obs = (f"dialect model {how}: best layer {t.best_layer} ({'upper' if up else 'lower'} half), Acc(ALL) "
           f"{pct(t.oracle.mean)}" + (f"; others: {others}" if others else "; single model, 'only' not tested"))
    return Finding(paper, rule, obs, verdict([up and only]))


def _f_masked(study: Study) -> Finding:
    checks, fails = [], []
    for task in study.task_names():
        for m in study.with_task(task):
            t = m.tasks[task]
            checks.append(t.masked["top"].mean > t.masked["bottom"].mean)
            if not checks[-1]:
                fails.append(f"{task}/{m.name}: top {pct(t.masked['top'].mean)} vs bottom {pct(t.masked['bottom'].mean)}")
    text = f"top > bottom for {sum(checks)}/{len(checks)} task-model pairs" + ("; fails: " + "; ".join(fails) if fails else "")
    return Finding("The ranking works: the top neurons keep far more accuracy than the bottom ones (6.1)",
                   "Table 2: Acc_t (Masked) > Acc_b (Masked)", text if checks else NOT_MEASURED, verdict(checks))


def _f_small(study: Study) -> Finding:
    checks, obs = [], []
    for task in study.task_names():
        for m in study.with_task(task):
            t = m.tasks[task]
            checks.append(all(t.minimal_reached) and t.minimal_percent.mean <= SMALL_SET)
            obs.append(f"{task}/{m.name}: {percent_label(t.minimal_percent.mean)}"
                       + ("" if all(t.minimal_reached) else " (not reached)"))
    return Finding("A small set of neurons suffices to represent each property (6.4 i)",
                   f"Table 3: the minimal set was reached in every seed with Neu_t ≤ {SMALL_SET:g}% of the neurons",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_complexity(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.models.values():
        simple = [m.tasks[t].minimal_percent.mean for t in SIMPLE_TASKS if t in m.tasks]
        complex_ = [m.tasks[t].minimal_percent.mean for t in COMPLEX_TASKS if t in m.tasks]
        if simple and complex_:
            checks.append(max(simple) < min(complex_))
            obs.append(f"{m.name}: GC/CC ≤ {max(simple):g}% vs LID/DID ≥ {min(complex_):g}%")
    return Finding("Simple properties (gender, channel) need fewer neurons than complex ones (6.4 ii, 7.1)",
                   "Table 3: the largest Neu_t of GC/CC < the smallest Neu_t of LID/DID, per model",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_dialect_not_redundant(study: Study) -> Finding:
    ms = study.with_task("DID")
    m, how = _role_model("DID", DIALECT_HINTS, lambda x: x.tasks["DID"].oracle.mean, ms)
    paper = "Dialect information is not redundant in the task-specific model (6.4 iv)"
    rule = "Table 3: the dialect model's DID Acc_r (re-trained) < Acc_t (re-trained) − 5 points"
    if m is None:
        return Finding(paper, rule, NOT_MEASURED, NOT_MEASURED)
    t = m.tasks["DID"]
    ok = t.minimal_random_accuracy.mean < t.minimal_accuracy.mean - GAP
    return Finding(paper, rule, f"dialect model {how}: Acc_t {pct(t.minimal_accuracy.mean)} vs Acc_r "
                                f"{pct(t.minimal_random_accuracy.mean)}", verdict([ok]))


def _f_localized(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.models.values():
        for t in m.tasks.values():
            total = sum(s.mean for s in t.distribution.values())
            if total <= 0:
                continue
            share = sum(t.distribution[n].mean for n in upper_half(t.layers) if n in t.distribution) / total
            checks.append(share > 0.5)
            obs.append(f"{t.task}/{m.name}: {100 * share:.0f}%")
    v = verdict(checks)
    if checks and v == "partly" and sum(checks) > len(checks) / 2:
        v = "agrees (most)"
    return Finding("For most properties the salient neurons are localised in the upper layers (6.4 v, 7.1)",
                   "Tables 5-7: more than half of the minimal set's neurons lie in the upper half of the layers, "
                   "for most task-model pairs (share in upper half shown)",
                   "; ".join(obs) or NOT_MEASURED, v)


def _f_polysemous(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.models.values():
        ovs = _overlaps(m)
        if not ovs:
            continue
        best = max(ovs, key=lambda o: (o.shared, o.jaccard))
        checks.append(best.shared > 0)
        obs.append(f"{m.name}: most shared {best.a}/{best.b} {best.shared} neurons (Jaccard {best.jaccard:.3f})")
    return Finding("Some neurons are polysemous: properties' minimal sets share neurons (e.g. SV and gender) (7.1)",
                   "Overlap table: some pair of properties' minimal sets shares at least one neuron, per model",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def findings(study: Study) -> list[Finding]:
    """The paper's findings, each tested on this run with a stated rule."""
    return [_f_learned(study), _f_distributed(study), _f_redundant(study), _f_voice(study), _f_language(study),
            _f_dialect(study), _f_masked(study), _f_small(study), _f_complexity(study),
            _f_dialect_not_redundant(study), _f_localized(study), _f_polysemous(study)]


def findings_table(study: Study) -> Table:
    """The findings as a table."""
    return Table("Findings — the paper beside this run", ["Paper finding (section)", "Rule", "This run", "Verdict"],
                 [[f.paper, f.rule or MISSING, f.observed, f.verdict] for f in findings(study)],
                 "Upper layers: the last ceil(L/2) of a model's L layers. 5 points: the paper's 5% threshold. "
                 "'not measured': the task or model needed is absent from results.json.")


# ------------------------------------------------------------------------------------------------
# Figures


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _layer_ticks(ax: Any, layers: Sequence[str]) -> None:
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=45 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center",
                       fontsize=8)


def fig_layer_accuracy(study: Study, task: str) -> Any:
    """Figures 4/6/7: accuracy of each layer's probe (mean ± std) for one task, one panel per model."""
    ms = study.with_task(task)
    fig = _figure(1.0 + 3.2 * len(ms), 3.2)
    axes = fig.subplots(1, len(ms), squeeze=False, sharey=True)[0]
    for ax, m in zip(axes, ms):
        t = m.tasks[task]
        y = np.array([100 * t.layer_accuracy[n].mean for n in t.layers])
        err = np.array([100 * t.layer_accuracy[n].std for n in t.layers])
        x = np.arange(len(y))
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label="layer")
        b = t.layers.index(t.best_layer)
        ax.plot([x[b]], [y[b]], "o", color="red", ms=7, label=f"best ({t.best_layer})")
        ax.axhline(100 * t.oracle.mean, ls=":", color="black", label="ALL")
        ax.axhline(100 * t.majority.mean, ls="--", color="gray", label="Maj-C")
        _layer_ticks(ax, t.layers)
        ax.set_title(m.name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{task} accuracy (%)")
    axes[0].legend(fontsize=7)
    return fig


def fig_layer_eer(m: ModelResults) -> Any:
    """Figure 5: EER of each layer for one model, one line per trial set, best layers in red."""
    fig = _figure(1.0 + max(3.0, 0.45 * len(m.layers)), 3.2)
    ax = fig.subplots()
    for i, (name, v) in enumerate(m.verification.items()):
        entries = [e for e in v.layerwise.layers if e.name != SV_ALL]
        y = [100 * e.eer for e in entries]
        color = f"C{i}"
        ax.plot(range(len(y)), y, marker="o", ms=4, color=color, label=name)
        b = [e.name for e in entries].index(v.layerwise.best_layer)
        ax.plot([b], [y[b]], "o", color="red", ms=7)
        all_e = next((e for e in v.layerwise.layers if e.name == SV_ALL), None)
        if all_e is not None:
            ax.axhline(100 * all_e.eer, ls=":", color=color, lw=1)
        _layer_ticks(ax, [e.name for e in entries])
    ax.set_ylabel("EER (%)")
    ax.set_title(f"{m.name}: layer-wise EER (best in red, ALL dotted)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def fig_prefix(study: Study, task: str) -> Any:
    """The prefix curve: accuracy of the ALL probe keeping only its top k neurons, per model."""
    fig = _figure(5.0, 3.2)
    ax = fig.subplots()
    for i, m in enumerate(study.with_task(task)):
        t = m.tasks[task]
        total = sum(t.layer_sizes) or 1
        x = 100 * np.asarray(t.prefix_steps, dtype=float) / total
        ax.plot(x, 100 * np.asarray(t.prefix_accuracy), color=f"C{i}", label=m.name)
        ax.axhline(100 * t.oracle.mean, ls=":", color=f"C{i}", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("top neurons kept (% of all, log scale)")
    ax.set_ylabel(f"{task} accuracy (%)")
    ax.set_title(f"{task}: prefix accuracy (ALL dotted)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _heatmap(fig: Any, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], labels: list[list[str]],
             title: str, cbar: str) -> None:
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=45 if len(cols) > 6 else 0, ha="right" if len(cols) > 6 else "center", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    if matrix.size <= 240:
        hi = np.nanmax(matrix) if matrix.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7,
                        color="black" if hi and matrix[i, j] > 0.6 * hi else "white")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=cbar)


def fig_distribution(m: ModelResults) -> Any:
    """Heatmap of Tables 5-7: % of all neurons in each layer that belong to each task's minimal set."""
    tasks = list(m.tasks.values())
    layers = list(dict.fromkeys(n for t in tasks for n in t.layers))
    counts = np.array([[t.distribution[n].mean if n in t.distribution else np.nan for n in layers] for t in tasks])
    fig = _figure(2.0 + 0.6 * len(layers), 1.2 + 0.45 * len(tasks))
    _heatmap(fig, 100 * counts / max(m.n_neurons, 1), [f"{t.task} ({t.minimal_percent.mean:g}%)" for t in tasks], layers,
             [[count_label(c) if np.isfinite(c) else "" for c in row] for row in counts],
             f"{m.name}: minimal-set neurons per layer (count)", "% of all neurons")
    return fig


def fig_overlap(m: ModelResults) -> Any:
    """Heatmap of the Jaccard index between the minimal sets of each pair of properties."""
    ovs = _overlaps(m)
    met = {o.a for o in ovs} | {o.b for o in ovs}
    names = [n for n in [*m.tasks, *_sv_sets(m)] if n in met] + sorted(met - {*m.tasks, *_sv_sets(m)})
    idx = {n: i for i, n in enumerate(names)}
    jac = np.eye(len(names))
    lab = [["1" if i == j else "" for j in range(len(names))] for i in range(len(names))]
    for o in ovs:
        i, j = idx[o.a], idx[o.b]
        jac[i, j] = jac[j, i] = o.jaccard
        lab[i][j] = lab[j][i] = f"{o.jaccard:.2f}\n({o.shared})"
    fig = _figure(2.0 + 0.9 * len(names), 1.5 + 0.7 * len(names))
    _heatmap(fig, jac, names, names, lab, f"{m.name}: overlap of minimal sets, Jaccard (shared)", "Jaccard index")
    return fig


# ------------------------------------------------------------------------------------------------
# Writing



def _save_figure(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


@dataclass
class _Figures:
    """Saves figures into the output folder under unique file names."""

    out_dir: Path
    files: list[str] = field(default_factory=list)

    def save(self, fig: Any, stem: str) -> str:
        """Save one figure as <stem>.png (suffixed when taken) and return its file name."""
        name, i = f"{_slug(stem)}.png", 2
        while name in self.files:
            name, i = f"{_slug(stem)}-{i}.png", i + 1
        _save_figure(fig, self.out_dir / name)
        self.files.append(name)
        return name


def build_blocks(study: Study, figs: _Figures) -> list[Block]:
    """The report's content, saving its figures on the way."""
    tasks = study.task_names()
    b: list[Block] = [Heading(1, "neurohook report"),
                      Para(f"Results of neurohook {study.version}: {len(study.models)} model(s), probing task(s) "
                           f"{', '.join(tasks) or 'none'}, SV trial set(s) {', '.join(study.trial_sets()) or 'none'}. "
                           "Accuracies and EERs are percentages (two decimals); every number is read from results.json. "
                           "Tables and figures are numbered as in the reference paper."),
                      models_table(study)]
    if not study.models:
        b.append(Para("results.json holds no model."))

    b.append(Heading(2, "1. Baselines (Table 1)"))
    b += [table1(study, t) for t in tasks] or [Para(NOT_MEASURED)]

    b.append(Heading(2, "2. Layer-wise analysis (Figures 4-7)"))
    for t in tasks:
        b.append(Image(figs.save(fig_layer_accuracy(study, t), f"layers_{t}"),
                       f"Layer-wise accuracy for {t} ({TASK_NAMES.get(t, t)}), mean ± std over seeds; red: best layer."))
    b += [table_layerwise_accuracy(m) for m in study.models.values() if m.tasks]
    sv_models = [m for m in study.models.values() if m.verification]
    b.append(Heading(3, "Speaker verification (Figure 5)"))
    if not sv_models:
        b.append(Para("Speaker verification: " + NOT_MEASURED + "."))
    for m in study.models.values():
        for trial_set, reason in m.verification_errors.items():
            b.append(Para(f"Speaker verification ({trial_set}) of {m.name} could not run: {reason}."))
    for m in sv_models:
        b.append(Image(figs.save(fig_layer_eer(m), f"eer_{m.name}"), f"Layer-wise EER of {m.name} (lower is better)."))
        b.append(table_layerwise_eer(m))

    b.append(Heading(2, "3. Neuron ranking (Table 2, prefix curves)"))
    b += [table2(study, t) for t in tasks] or [Para(NOT_MEASURED)]
    for t in tasks:
        b.append(Image(figs.save(fig_prefix(study, t), f"prefix_{t}"),
                       f"{t}: accuracy of the ALL probe keeping only its top-ranked neurons (mean over seeds)."))

    b.append(Heading(2, "4. Minimal neuron sets (Tables 3 and 4)"))
    for t in tasks:
        b += [table3(study, t), table3_curve(study, t)]
    b += [table4(study, ts) for ts in study.trial_sets()] or [Para("Table 4 (SV): " + NOT_MEASURED + ".")]

    b.append(Heading(2, "5. Distribution over layers (Tables 5-7)"))
    for m in study.models.values():
        if m.tasks:
            b.append(table_distribution(m))
            b.append(Image(figs.save(fig_distribution(m), f"distribution_{m.name}"),
                           f"{m.name}: where each task's minimal set lies (colour: % of all neurons; text: count)."))

    b.append(Heading(2, "6. Overlap of properties (polysemous neurons)"))
    for m in study.models.values():
        if _overlaps(m):
            b.append(table_overlap(m))
            b.append(Image(figs.save(fig_overlap(m), f"overlap_{m.name}"),
                           f"{m.name}: Jaccard index of the minimal sets (shared neurons in brackets)."))
    if not any(_overlaps(m) for m in study.models.values()):
        b.append(Para("Overlap: " + NOT_MEASURED + " (needs two properties with minimal sets)."))

    b.append(Heading(2, "7. Standard deviations over seeds (Table A.8)"))
    b.append(table_a8(study) if tasks else Para(NOT_MEASURED))

    b.append(Heading(2, "8. Findings: the paper and this run"))
    b.append(findings_table(study))
    return b


def write_report(results: Results, out_dir: str | os.PathLike[str]) -> Path:
    """Write report.md, report.html and PNG figures into out_dir; return the path of report.md."""
    study = load_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = _Figures(out)
    blocks = build_blocks(study, figs)
    md, page = render_markdown(blocks), render_html(blocks, "neurohook report")
    atomic_write_text(out / "report.html", page)
    atomic_write_text(out / "report.md", md)
    logger.info("report written to %s (%d figures)", out / "report.md", len(figs.files))
    return out / "report.md"
