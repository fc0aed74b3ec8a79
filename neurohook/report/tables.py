"""The paper's tables (1-4, 5-7 and A.8) and per-model tables, from a :class:`~neurohook.report.loading.Study`."""

from __future__ import annotations

from typing import Any, Sequence


from neurohook.analysis import overlap
from neurohook.verification import ALL as SV_ALL
from neurohook.report.loading import ModelResults, Study
from neurohook.report.document import Table, count_label, pct, pct_ci, pct_with_ci, percent_label
from neurohook.report.document import MISSING, NOT_INFORMATIVE, NOT_MEASURED

__all__ = ["models_table", "table1", "table2", "table3", "table3_curve", "table4", "table_a8", "table_distribution", "table_layerwise_accuracy", "table_layerwise_eer", "table_overlap"]



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
            ["Acc (ALL), 95% CI"] + [pct_ci(m.tasks[task].oracle.ci) for m in ms],
            ["Acc (R.INIT)"] + [pct(None if m.tasks[task].rinit is None else m.tasks[task].rinit.mean) for m in ms],
            ["Acc (R.INIT), 95% CI"] + [pct_ci(None if m.tasks[task].rinit is None else m.tasks[task].rinit.ci)
                                        for m in ms],
            ["Sel_a"] + [pct(m.tasks[task].selectivity.mean) for m in ms],
            ["Sel_a, 95% CI"] + [pct_ci(m.tasks[task].selectivity.ci) for m in ms]]
    return Table(f"Table 1 — {task}", [""] + [m.name for m in ms], rows,
                 "Means over seeds, on test. R.INIT: probe on re-initialised features (n/a: not run; two models of one "
                 "architecture re-initialised with the same seed have the same R.INIT features, hence equal columns). "
                 "Sel_a: Acc(ALL) minus the control task's accuracy. 95% CI: two-level bootstrap over the seeds "
                 "and the test speakers (neurohook.intervals); n/a: results written before intervals existed.")


def table2(study: Study, task: str) -> Table:
    """Table 2 for one task: accuracy of the ALL probe keeping only the top / bottom / random N%."""
    ms = study.with_task(task)
    rows = [["Neurons"] + [percent_label(m.tasks[task].ablation_percent) for m in ms]]
    for key, label in (("top", "Acc_t (Masked)"), ("bottom", "Acc_b (Masked)"), ("random", "Acc_r (Masked)")):
        rows.append([label] + [_stat(m.tasks[task].masked[key]) for m in ms])
    rows.append(["Acc_t − Acc_r"] + [_stat(m.tasks[task].top_minus_random) for m in ms])
    rows.append(["Ranking"] + [m.tasks[task].ranking_verdict or MISSING for m in ms])
    rows.append(["Retrained t / r (cross-fit)"] + [_check(m.tasks[task]) for m in ms])
    rows.append(["Retrained t − r"] + [_stat(m.tasks[task].check_minus_random) for m in ms])
    rows.append(["Ranking (cross-fit)"] + [m.tasks[task].check_verdict or MISSING for m in ms])
    rows.append(["Ranking probe l2 (dev)"] + [_l2s(m.tasks[task].ranking_l2) for m in ms])
    rows.append(["Constant neurons (left out)"] + [str(sum(m.tasks[task].constant_neurons.values())) for m in ms])
    return Table(f"Table 2 — {task}", [""] + [m.name for m in ms], rows,
                 "The ranking probe re-scored on test with all other neurons masked (t=top, b=bottom, r=random: the "
                 "mean of 10 random sets per seed); means over seeds with 95% CIs. The ranking probe is the ALL probe "
                 "whose l2 (from the grid, chosen on the dev part of the training data) makes its top N% score best "
                 "on dev alone. Ranking: 'better than random' when the CI of Acc_t − Acc_r lies above 0, 'worse than "
                 "random' below 0, else 'not better than random'. Cross-fit: a probe on one half of the training "
                 "rows ranks; new probes trained on the other half on only its top N% (t) or on random N% (r, mean "
                 "of 5 sets) are scored on test, so the ranking is not judged by the probe that made it. Neurons "
                 "constant on every labelled utterance (dead) are left out of the draws; N% is of the others.")


def _stat(s: Any) -> str:
    """A Stat's mean with its interval, or the missing mark (results written before it existed)."""
    return MISSING if s is None else pct_with_ci(s.mean, s.ci)


def _check(t: Any) -> str:
    """The cross-fitted check's top / random accuracies, or the missing mark."""
    c = t.retrained_check
    return f"{pct(c['top'].mean)} / {pct(c['random'].mean)}" if c else MISSING


def _l2s(values: Sequence[float]) -> str:
    """Per-seed l2 values, compactly ("1e-02" or "1e-03, 1e-02")."""
    return ", ".join(f"{v:.0e}" for v in sorted(set(values))) if values else MISSING


def _seed_count(flags: Sequence[bool]) -> str:
    return f"{sum(map(bool, flags))}/{len(flags)} seeds" if flags else MISSING


def table3(study: Study, task: str) -> Table:
    """Table 3 for one task: Acc(ALL), the minimal set's size Neu_t and its re-trained top / random accuracy."""
    ms = study.with_task(task)
    t = {m.name: m.tasks[task] for m in ms}
    rows = [["Acc (ALL)"] + [pct(t[m.name].oracle.mean) for m in ms],
            ["Neu_t"] + [percent_label(t[m.name].minimal_percent.mean) if t[m.name].informative else NOT_INFORMATIVE
                         for m in ms],
            ["Acc_t (Re-trained)"] + [_stat(t[m.name].minimal_accuracy) if t[m.name].informative else MISSING
                                      for m in ms],
            ["Acc_r (Re-trained)"] + [_stat(t[m.name].minimal_random_accuracy) if t[m.name].informative else MISSING
                                      for m in ms],
            ["Acc_t − Acc_r"] + [_stat(t[m.name].minimal_minus_random) if t[m.name].informative else MISSING
                                 for m in ms],
            ["Minimal set reached"] + [_seed_count(t[m.name].minimal_reached) for m in ms],
            ["Rest redundant (6.2 i)"] + [_seed_count(t[m.name].rest_redundant) for m in ms],
            ["Information redundant (6.2 ii)"] + [_seed_count(t[m.name].information_redundant) for m in ms]]
    return Table(f"Table 3 — {task}", [""] + [m.name for m in ms], rows,
                 "Neu_t: smallest tried % of all neurons whose re-trained top-N% probe is within delta of Acc(ALL), "
                 "chosen on the dev part of the training data (probes trained on the rest of it), mean over seeds; "
                 "Acc_t / Acc_r: re-trained on all training data on the top / a random Neu_t%, scored on test (means "
                 "over seeds, 95% CIs by the two-level bootstrap). Minimal set reached: on dev; redundancy counts are "
                 "per seed (6.2 i: Acc_t >= 97% of Acc(ALL); 6.2 ii: Acc_r >= Acc_t - delta). "
                 f"{NOT_INFORMATIVE}: Acc(ALL)'s 95% interval does not lie above the majority rate, so no minimal "
                 "set is searched (a probe at chance ranks noise).")


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
            row += [_stat(r.retrained_top[k]) if k in r.retrained_top else MISSING,
                    _stat(r.retrained_random[k]) if k in r.retrained_random else MISSING]
        rows.append(row)
    return Table(f"Table 3b — {task}: re-trained accuracy per N%", header, rows,
                 "Probes re-trained on all training data on the top / a random N% of the ranking, test accuracy (%), "
                 "means over seeds with 95% CIs.")


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
            row.append(next((pct_with_ci(e.eer, e.eer_ci) for e in v.layerwise.layers if e.name == n), MISSING))
        rows.append(row)
    rows.append(["Best layer", ""] + [v.layerwise.best_layer for v in m.verification.values()])
    return Table(f"Layer-wise EER — {m.name}", ["Layer", "#Neu"] + [f"EER {t}" for t in m.verification], rows)


def table_layerwise_accuracy(m: ModelResults) -> Table:
    """Figures 4, 6 and 7's numbers for one model: accuracy (%) of each layer's probe per task."""
    tasks = list(m.tasks.values())
    layers = list(dict.fromkeys(n for t in tasks for n in t.layers))
    sizes = {n: s for t in tasks for n, s in zip(t.layers, t.layer_sizes)}
    dead = {n: max((t.constant_neurons.get(n, 0) for t in tasks), default=0) for n in layers}
    rows = [[n, str(sizes[n]), str(dead[n])] + [pct_with_ci(t.layer_accuracy[n].mean, t.layer_accuracy[n].ci)
                                                if n in t.layer_accuracy else MISSING for t in tasks] for n in layers]
    rows.append(["ALL", str(sum(sizes.values())), str(sum(dead.values()))]
                + [pct_with_ci(t.oracle.mean, t.oracle.ci) for t in tasks])
    rows.append(["Best layer (dev)", "", ""] + [t.best_layer for t in tasks])
    rows.append(["Within layer_delta of best (dev)", "", ""] + [", ".join(t.redundant_layers) for t in tasks])
    rows.append(["Probe l2 (dev)", "", ""] + [_l2s(t.probe_l2) for t in tasks])
    return Table(f"Layer-wise accuracy — {m.name}", ["Layer", "#Neu", "#Const"] + list(m.tasks), rows,
                 "#Const: neurons constant (dead) on every labelled utterance of a task (the most over tasks); "
                 "they are left out of the masked draws. "
                 "Test accuracy (%) of each layer's probe with its 95% CI. The best layer and the layers within "
                 "layer_delta of it are chosen on the training data alone, never on test: by each layer's probe's "
                 "accuracy over speaker-disjoint folds of it (mean over seeds), the same folds that choose each "
                 "probe's l2 (highest accuracy, ties to the lower cross-entropy).")


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
        if not t.informative:
            rows.append([f"{t.task} ({NOT_INFORMATIVE})"] + [MISSING] * (len(layers) + 1))
            continue
        row = [f"{t.task} ({percent_label(t.minimal_percent.mean)})"]
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
            f"± {pct(m.tasks[task].oracle.std)} ({len(m.tasks[task].seeds)} seeds)" if task in m.tasks else MISSING
            for m in models])
    return Table("Table A.8", ["Acc (ALL)", "# Class Labels"] + [m.name for m in models], rows,
                 "Population standard deviation of Acc(ALL) over the seeds, in accuracy points; 0 with a single seed.")
