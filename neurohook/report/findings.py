"""The paper's findings (sections 5.1, 5.3, 6.1, 6.4, 7.1) beside this run's, each judged by a stated rule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence


from neurohook.results import Stat, TaskResult
from neurohook.verification import ALL as SV_ALL
from neurohook.paper import COMPLEX_TASKS, DIALECT_HINTS, GAP, SIMPLE_TASKS, SMALL_SET, SPEAKER_HINTS
from neurohook.report.loading import ModelResults, Study
from neurohook.report.document import Table, pct, percent_label
from neurohook.report.tables import _overlaps
from neurohook.report.document import MISSING, NOT_MEASURED

__all__ = ["Finding", "findings", "findings_table", "upper_half", "verdict"]



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
    """The verdict from the share of supporting pairs: agrees (all), agrees (most) (at least 2/3),
    partly (at least 1/3), differs (less than 1/3), not measured (no check)."""
    if not checks:
        return NOT_MEASURED
    share = sum(map(bool, checks)) / len(checks)
    if share == 1:
        return "agrees"
    return "agrees (most)" if share >= 2 / 3 else ("partly" if share >= 1 / 3 else "differs")


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
            ok = _low(t.oracle) > t.majority.mean and _low(t.selectivity) > 0
            if t.rinit is not None:
                ok = ok and _low(t.oracle) > t.rinit.mean
            checks.append(ok)
            if not ok:
                obs.append(f"{task}/{m.name}: ALL {pct(t.oracle.mean)}, Maj-C {pct(t.majority.mean)}, "
                           f"R.INIT {pct(None if t.rinit is None else t.rinit.mean)}, Sel_a {pct(t.selectivity.mean)}")
    text = (f"holds for {sum(checks)}/{len(checks)} task-model pairs" + ("; fails: " + "; ".join(obs) if obs else "")) \
        if checks else NOT_MEASURED
    return Finding("The probes learn the properties: Acc(ALL) beats Maj-C and R.INIT, with high selectivity (5.1)",
                   "Table 1: the 95% CI of Acc(ALL) lies above Maj-C and above R.INIT (where run), and Sel_a's CI "
                   "above 0",
                   text, verdict(checks))


def _low(stat) -> float:
    """The low end of a Stat's 95% interval (its mean for results written without intervals)."""
    return stat.mean if stat.ci is None else stat.ci[0]


def _lo(s) -> float:
    """A Stat's interval's lower end (its mean when it has no interval)."""
    return s.ci[0] if s.ci else s.mean


def _hi(s) -> float:
    """A Stat's interval's upper end (its mean when it has no interval)."""
    return s.ci[1] if s.ci else s.mean


def _distributed(t: TaskResult) -> tuple[int, int]:
    """Layers whose accuracy has at least half the best layer's gain over Maj-C and whose interval lies
    above Maj-C, and the layer count."""
    accs = [t.layer_accuracy[n].mean for n in t.layers]
    need = t.majority.mean + 0.5 * (max(accs) - t.majority.mean)
    return sum(t.layer_accuracy[n].mean >= need and _lo(t.layer_accuracy[n]) > t.majority.mean for n in t.layers), len(accs)


def _f_distributed(study: Study) -> Finding:
    checks, obs = [], []
    for task in SIMPLE_TASKS:
        for m in study.with_task(task):
            k, n = _distributed(m.tasks[task])
            checks.append(k == n)
            obs.append(f"{task}/{m.name}: {k}/{n} layers")
    return Finding("Gender and channel information are encoded throughout the layers (distributed) (5.3 i, 5.2)",
                   "Figures 4/7: every layer's accuracy ≥ Maj-C + ½ (best layer − Maj-C), and its 95% CI above Maj-C",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_redundant(study: Study) -> Finding:
    checks, obs = [], []
    for task in SIMPLE_TASKS:
        for m in study.with_task(task):
            t = m.tasks[task]
            if not t.informative:
                continue
            gap = _gap(t)
            checks.append(_hi(gap) < GAP)
            obs.append(f"{task}/{m.name}: Acc_t − Acc_r {_points(gap)}")
    return Finding("Gender and channel are stored redundantly: a random neuron subset does about as well as the top one "
                   "(5.3 ii, 6.4 iii, 7.1)",
                   "Table 3: the 95% CI of Acc_t − Acc_r (re-trained) lies below 5 points",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _gap(t: TaskResult):
    """Acc_t − Acc_r of the minimal set (re-trained), as a Stat (from the means for older results)."""
    if t.minimal_minus_random is not None:
        return t.minimal_minus_random
    return Stat.of([a - b for a, b in zip(t.minimal_accuracy.values, t.minimal_random_accuracy.values)])


def _points(s) -> str:
    """A difference of fractions in points, with its interval: '+2.10 [-0.50, 4.80] points'."""
    ci = f" [{100 * s.ci[0]:+.2f}, {100 * s.ci[1]:+.2f}]" if s.ci else ""
    return f"{100 * s.mean:+.2f}{ci} points"


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
        lw = spk.verification[ts].layerwise
        lb = lw.best_layer
        entries = [e for e in lw.layers if e.name != SV_ALL]
        lower = [e.eer for e in entries if e.name not in upper_half([e.name for e in entries])]
        best = lw.get(lb)
        hi = best.eer if best.eer_ci is None else best.eer_ci[1]
        upper = lb in upper_half([e.name for e in entries]) and all(hi < x for x in lower)  # beyond its interval
        lowest = all(hi < _best_eer(m, ts) for m in ms if m is not spk)
        checks.append(upper and lowest)
        others = ", ".join(f"{m.name} {pct(_best_eer(m, ts))}" for m in ms if m is not spk)
        obs.append(f"{ts}: speaker model {how}: Lb={lb} ({'upper' if upper else 'lower'} half), EER(Lb) "
                   f"{pct(_best_eer(spk, ts))}" + (f"; others' best EER: {others}" if others else "; single model"))
    return Finding("Voice identity is encoded only in the upper layers of the speaker model; the others are "
                   "speaker-invariant (5.3 iv-v)",
                   "Figure 5 / Table 4: the speaker model's best layer Lb is in its upper half, with the 95% CI of "
                   "EER(Lb) below every lower-half layer's EER and below every other model's best EER (per trial set)",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_language(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.with_task("LID"):
        t = m.tasks["LID"]
        up = t.best_layer in upper_half(t.layers)
        lower = [n for n in t.layers if n not in upper_half(t.layers)]
        clear = all(_lo(t.layer_accuracy[t.best_layer]) > t.layer_accuracy[n].mean for n in lower)
        checks.append(up and clear)
        obs.append(f"{m.name}: best layer {t.best_layer} ({'upper' if up else 'lower'} half"
                   + ("" if clear or not up else "; its CI overlaps a lower layer's accuracy") + ")")
    return Finding("Language is captured in the upper layers of all models (5.3 vi)",
                   "Figure 6a: the LID probe's best layer (chosen on dev) is in the upper half of the layers and its "
                   "test CI lies above every lower-half layer's accuracy, for every model",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_dialect(study: Study) -> Finding:
    paper = "Regional dialect is captured only by the dialect (task-specific) model, in its upper layers (5.3 viii)"
    rule = ("Figure 6b / Table 1: DID is informative for the dialect model (Acc(ALL)'s CI above Maj-C), its best "
            "layer is in its upper half and its Acc(ALL) is ≥ 5 points above every other model's")
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
    if not t.informative:
        obs += "; DID not informative (Acc(ALL)'s CI not above Maj-C)"
    return Finding(paper, rule, obs, verdict([up and only and t.informative]))


def _f_masked(study: Study) -> Finding:
    checks, fails = [], []
    for task in study.task_names():
        for m in study.with_task(task):
            t = m.tasks[task]
            if not t.ranking_verdict or not t.informative:  # a probe at chance ranks noise
                continue
            crossfit = t.check_verdict or "better than random"  # results written before the check existed
            checks.append(t.ranking_verdict == crossfit == "better than random" and t.masked["top"].mean > t.masked["bottom"].mean)
            if not checks[-1]:
                fails.append(f"{task}/{m.name}: {t.ranking_verdict} (cross-fit: {t.check_verdict or 'n/a'})")
    text = (f"top beats random for {sum(checks)}/{len(checks)} task-model pairs"
            + ("; not for " + "; ".join(fails) if fails else ""))
    return Finding("The ranking works: the top neurons keep far more accuracy than the bottom ones (6.1)",
                   "Table 2: the 95% CIs of Acc_t − Acc_r (Masked) and of the cross-fitted retrained t − r lie above 0, "
                   "and Acc_t > Acc_b (informative tasks)",
                   text if checks else NOT_MEASURED, verdict(checks))


def _f_small(study: Study) -> Finding:
    checks, obs = [], []
    for task in study.task_names():
        for m in study.with_task(task):
            t = m.tasks[task]
            if not t.informative:
                continue
            checks.append(all(t.minimal_reached) and t.minimal_percent.mean <= SMALL_SET)
            obs.append(f"{task}/{m.name}: {percent_label(t.minimal_percent.mean)}"
                       + ("" if all(t.minimal_reached) else " (not reached)"))
    return Finding("A small set of neurons suffices to represent each property (6.4 i)",
                   f"Table 3: the minimal set was reached in every seed with Neu_t ≤ {SMALL_SET:g}% of the neurons",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_complexity(study: Study) -> Finding:
    checks, obs = [], []
    for m in study.models.values():
        simple = [m.tasks[t].minimal_percent.mean for t in SIMPLE_TASKS if t in m.tasks and m.tasks[t].informative]
        complex_ = [m.tasks[t].minimal_percent.mean for t in COMPLEX_TASKS if t in m.tasks and m.tasks[t].informative]
        if simple and complex_:
            checks.append(max(simple) < min(complex_))
            obs.append(f"{m.name}: GC/CC ≤ {percent_label(max(simple))} vs LID/DID ≥ {percent_label(min(complex_))}")
    return Finding("Simple properties (gender, channel) need fewer neurons than complex ones (6.4 ii, 7.1)",
                   "Table 3: the largest Neu_t of GC/CC < the smallest Neu_t of LID/DID, per model",
                   "; ".join(obs) or NOT_MEASURED, verdict(checks))


def _f_dialect_not_redundant(study: Study) -> Finding:
    ms = study.with_task("DID")
    m, how = _role_model("DID", DIALECT_HINTS, lambda x: x.tasks["DID"].oracle.mean, ms)
    paper = "Dialect information is not redundant in the task-specific model (6.4 iv)"
    rule = "Table 3: the 95% CI of the dialect model's DID Acc_t − Acc_r (re-trained) lies above 5 points"
    if m is None:
        return Finding(paper, rule, NOT_MEASURED, NOT_MEASURED)
    t = m.tasks["DID"]
    if not t.informative:
        return Finding(paper, rule, f"dialect model {how}: DID is not informative (Acc(ALL) not above the majority "
                                    "rate beyond its interval)", NOT_MEASURED)
    gap = _gap(t)
    return Finding(paper, rule, f"dialect model {how}: Acc_t − Acc_r {_points(gap)}", verdict([_lo(gap) > GAP]))


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
                 "Verdicts count the task-model pairs that meet the rule: agrees = all, agrees (most) = at least 2/3, "
                 "partly = at least 1/3, differs = fewer. 'not measured': the task or model needed is absent from "
                 "results.json, or the task is not informative.")
