"""The paper's figures (layer-wise accuracy and EER, prefix curve, heatmaps) as matplotlib figures."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from neurohook.verification import ALL as SV_ALL
from neurohook.report.loading import ModelResults, Study
from neurohook.report.document import count_label, percent_label
from neurohook.report.tables import _overlaps, _sv_sets

__all__ = ["fig_distribution", "fig_layer_accuracy", "fig_layer_eer", "fig_overlap", "fig_prefix"]



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
    """Figures 4/6/7: test accuracy of each layer's probe (mean, 95% CI bars) for one task, one panel per model."""
    ms = study.with_task(task)
    fig = _figure(1.0 + 3.2 * len(ms), 3.2)
    axes = fig.subplots(1, len(ms), squeeze=False, sharey=True)[0]
    for ax, m in zip(axes, ms):
        t = m.tasks[task]
        y = np.array([100 * t.layer_accuracy[n].mean for n in t.layers])
        ci = [t.layer_accuracy[n].ci or (t.layer_accuracy[n].mean,) * 2 for n in t.layers]
        err = np.array([[y[i] - 100 * lo for i, (lo, _) in enumerate(ci)], [100 * hi - y[i] for i, (_, hi) in enumerate(ci)]])
        x = np.arange(len(y))
        ax.errorbar(x, y, yerr=np.maximum(err, 0), marker="o", ms=4, capsize=2, label="layer (95% CI)")
        b = t.layers.index(t.best_layer)
        ax.plot([x[b]], [y[b]], "o", color="red", ms=7, label=f"best ({t.best_layer})")
        ax.axhline(100 * t.oracle.mean, ls=":", color="black", label="ALL")
        ax.axhline(100 * t.majority.mean, ls="--", color="gray", label="Maj-C")
        _layer_ticks(ax, t.layers)
        ax.set_title(f"{m.name} (best layer chosen on dev)", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{task} test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
    ax.axhline(50.0, ls="--", color="gray", lw=1, label="chance (50%)")
    ax.set_xlabel("layer")
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
        if t.prefix_random:  # the random-k curve: mean over draws and seeds, band of +- one std over draws
            mean, std = 100 * np.asarray(t.prefix_random), 100 * np.asarray(t.prefix_random_std)
            ax.plot(x, mean, color=f"C{i}", ls="--", lw=1, label=f"{m.name}: random k")
            ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.15, lw=0)
    ax.axhline(100 * max(t.majority.mean for t in (m.tasks[task] for m in study.with_task(task))), ls="--",
               color="gray", lw=1, label="Maj-C")
    ax.set_xscale("log")
    ax.set_xlabel("top neurons kept (% of all, log scale)")
    ax.set_ylabel(f"{task} accuracy (%)")
    ax.set_title(f"{task}: top-k of the ranking (solid), random k (dashed, ±1 std), ALL (dotted)", fontsize=8)
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
    _heatmap(fig, 100 * counts / max(m.n_neurons, 1), [f"{t.task} ({percent_label(t.minimal_percent.mean)})" if t.informative else f"{t.task} (not informative)"
                                                 for t in tasks], layers,
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
