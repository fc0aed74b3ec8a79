"""The report's "Encoded vs used" section: ablation curves on each model's own metric and erasure costs.

Example::

    blocks = intervention_blocks(study)      # [] when no model has `neurohook intervene` results
"""

from __future__ import annotations

from typing import Any

from neurohook.report.document import Block, Heading, Para, Table, pct, pct_ci
from neurohook.report.loading import Study

__all__ = ["intervention_blocks"]


def _curve_table(model: str, task: str, r: dict[str, Any]) -> Table:
    c = r["curve"]
    rows = [[str(k), pct(t), f"{pct(m)} ± {pct(s)}", pct(b), "yes" if h else "no"]
            for k, t, m, s, b, h in zip(c["ks"], c["top"], c["random"], c["random_std"], c["bottom"],
                                        r["top_hurts_more"])]
    what = "accuracy of its own head" if r["metric"] == "accuracy" else "speaker-verification EER of its embedding"
    return Table(f"Encoded vs used — {model}: {task} neurons", ["k ablated", "top-k", "random-k (± std)", "bottom-k",
                                                                 "top hurts more"], rows,
                 f"The model's {what} (%) on {r['n_test']} held-out utterances with the k neurons a probe on {task!r} "
                 f"ranks highest / lowest / at random ({len(c['random_draws'][0]) if c['random_draws'] else 0} draws) "
                 f"set to their mean activation on every frame; no ablation: {pct(c['reference'])}. 'Top hurts more': "
                 "beyond 2 std of the random draws. The ranking probe was trained on the other speakers' "
                 f"{r['n_rank']} utterances.")


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
