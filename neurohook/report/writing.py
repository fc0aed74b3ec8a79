"""Writing the report: every block in order, figures saved as PNG, report.md and report.html atomically."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from neurohook.atomic import atomic_open, atomic_write_text
from neurohook.paper import TASK_NAMES
from neurohook.report.loading import Study, load_results
from neurohook.report.document import Block, Heading, Image, Para, _slug, render_html, render_markdown
from neurohook.report.tables import _overlaps, models_table, table1, table2, table3, table3_curve, table4, table_a8, table_distribution, table_layerwise_accuracy, table_layerwise_eer, table_overlap
from neurohook.report.findings import findings_table
from neurohook.report.interventions import intervention_blocks
from neurohook.report.figures import fig_distribution, fig_layer_accuracy, fig_layer_eer, fig_overlap, fig_prefix
from neurohook.report.document import NOT_MEASURED, Results

__all__ = ["build_blocks", "write_report"]

logger = logging.getLogger(__name__)


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
    gated = [f"{t}/{m.name}" for t in tasks for m in study.with_task(t) if not m.tasks[t].informative]
    if gated:
        b.append(Para("Not informative — Acc(ALL)'s 95 % interval does not lie above the majority rate, so no "
                      "minimal neuron set, distribution over layers or overlap is computed or claimed for: "
                      + ", ".join(gated) + "."))

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

    b.extend(intervention_blocks(study))
    b.append(Heading(2, "9. Findings: the paper and this run"))
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
