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

Modules: :mod:`~neurohook.report.loading` (results.json), :mod:`~neurohook.report.document` (blocks
and renderers), :mod:`~neurohook.report.tables`, :mod:`~neurohook.report.figures`,
:mod:`~neurohook.report.findings`, :mod:`~neurohook.report.writing`; the paper's vocabulary and
thresholds are in :mod:`neurohook.paper`.
"""

from __future__ import annotations

from neurohook.report.document import Table
from neurohook.report.findings import findings
from neurohook.report.loading import ModelResults, Study, load_results
from neurohook.report.writing import write_report

__all__ = ["write_report", "load_results", "Study", "ModelResults", "Table", "findings"]
