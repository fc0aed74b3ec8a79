"""The report's "Encoded vs used" section: ablation curves on each model's own metric and erasure costs.

Example::

    blocks = intervention_blocks(study)      # [] when no model has `neurohook intervene` results
"""

from __future__ import annotations

from typing import Any

from neurohook.report.document import Block, Heading, Para, Table, pct, pct_ci, pct_with_ci
from neurohook.report.loading import Study

__all__ = ["intervention_blocks"]


def _curve_table(model: str, task: str, r: dict[str, Any]) -> Table:
    c = r["curve"]
    n = len(c["ks"])
    ci = {key: c.get(key) or [None] * n for key in ("top_ci", "random_ci", "bottom_ci", "top_minus_random_ci")}
    rows = [[str(k), pct_with_ci(t, tc), f"{pct_with_ci(m, rc)} ± {pct(s)}", pct_with_ci(b, bc),
             f"{pct(t - m)} {pct_ci(dc)}", "yes" if h else "no"]
            for k, t, m, s, b, h, tc, rc, bc, dc in zip(c["ks"], c["top"], c["random"], c["random_std"], c["bottom"],
                                                        r["top_hurts_more"], *ci.values())]
    what = "accuracy of its own head" if r["metric"] == "accuracy" else "speaker-verification EER of its embedding"
    draws = len(c["random_draws"][0]) if c["random_draws"] else 0
    return Table(f"Encoded vs used — {model}: {task} neurons",
                 ["k ablated", "top-k", "random-k (± std)", "bottom-k", "top − random", "top hurts more"], rows,
                 f"The model's {what} (%) on {r['n_test']} held-out utterances with the k neurons a probe on {task!r} "
                 f"ranks highest / lowest / at random ({draws} draws) set to their mean activation on every frame; no "
                 f"ablation: {pct_with_ci(c['reference'], c.get('reference_ci'))}. 95% CIs: paired bootstrap over the "
                 "test speakers (EER: over trials, optimistic) with the random draws resampled. 'Top hurts more': the "
                 "top − random interval excludes 0 and the gap exceeds 2 std of the random draws. The ranking probe "
                 f"was trained on the other speakers' {r['n_rank']} utterances.")


def _erasure_table(model: str, key: str, r: dict[str, Any]) -> Table:
    p, e, emb = r["probe"], r["sv_eer"], r.get("embedding_probe", {})
    rows = [[label, f"{pct(p[k]['acc'])} {pct_ci(p[k]['ci'])}", f"{pct(e[k]['eer'])} {pct_ci(e[k]['ci'])}",
             f"{pct(emb[k]['acc'])} {pct_ci(emb[k]['ci'])}" if k in emb else "n/a"]
            for k, label in (("none", "none"), ("leace", "LEACE"), ("random_direction", "random direction"))]
    return Table(f"Erasure — {model}: {r['task']} at {r['layer']}", ["erased", f"{r['task']} probe on {r['layer']}",
                                                                      "SV EER (model's embedding)",
                                                                      f"{r['task']} probe on the embedding"], rows,
                 f"LEACE (rank {r['rank']}) fitted on {r['n_train']} training utterances' {r['layer']} features; probe "
                 f"(tuned, speaker-disjoint) and EER on {r['n_test']} held-out utterances, 95% CIs (EER: over trials, "
                 f"optimistic). Majority rate {pct(r['majority'])}. The random direction has the same rank: what "
                 "removing any such subspace costs.")


def intervention_blocks(study: Study) -> list[Block]:
    """Tables and one sentence per model and task for every model with intervention results."""
    blocks: list[Block] = []
    for m in study.models.values():
        done = m.interventions or {}
        for task, r in (done.get("curves") or {}).items():
            blocks.append(_curve_table(m.name, task, r))
            n, k = sum(r["top_hurts_more"]), len(r["top_hurts_more"])
            blocks.append(Para(f"{m.name}: the probe's top {task} neurons are the ones the model uses: "
                               + ("yes" if r["verdict"] == "uses its top neurons" else "not shown")
                               + f" (top-k hurts more than random-k beyond the spread for {n} of {k} k values)."))
        for key, r in (done.get("erasure") or {}).items():
            blocks.append(_erasure_table(m.name, key, r))
    if blocks:
        blocks.insert(0, Heading(2, "8. Encoded vs used: ablation and erasure in the running model"))
    return blocks
