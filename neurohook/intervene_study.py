"""The "encoded vs used" study of one model over a manifest, and what erasing a property costs it.

* :func:`encoded_vs_used` — a tuned probe ranks the neurons of ``features`` for a property on the
  training speakers; the model's own metric (its head's accuracy on that property, or its embedding's
  speaker-verification EER) is then measured on held-out speakers with the top / bottom / random k
  neurons ablated in the running model (:func:`neurohook.intervene.ablation_curve`). Verdict: the
  model *uses* the probe's top neurons where top-k hurts more than random-k, by a paired difference
  whose 95% interval (test speakers and random draws resampled) excludes 0 and beyond two standard
  deviations of the random draws, for at least half of the k values.
* :func:`erasure_cost` — LEACE (:mod:`neurohook.erasure`) fitted on one layer's features of the
  training utterances: a probe's accuracy on the property before / after erasure, and the model's SV
  EER with the eraser applied live, beside a random direction of the same rank.

Example::

    used = encoded_vs_used(model, manifest, feats, "accent", metric="accuracy")
    cost = erasure_cost(model, manifest, feats, "gender", layer="fc1")
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np
import torch

from neurohook import ranking
from neurohook.data.batching import make_loader
from neurohook.data.splits import seed_streams, train_test_split
from neurohook.erasure import Erasure, fit_eraser, random_eraser
from neurohook.errors import DataError
from neurohook.features import Features
from neurohook.intervals import percentile_interval, replicate_means
from neurohook.intervene import ablation_curve, accuracy, sv_eer
from neurohook.probe import LinearProbe

__all__ = ["encoded_vs_used", "erasure_cost"]


def _rows(manifest: Any, features: Features, column: str, speaker_column: str) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Feature rows with a label in ``column`` (and a speaker): (rows, ids, labels, speakers)."""
    ids = [str(u) for u in features.ids]
    keep = [i for i, u in enumerate(ids) if u in manifest and manifest[u].label(column) and manifest[u].label(speaker_column)]
    if not keep:
        raise DataError(f"no utterance of the features has a {column!r} and a {speaker_column!r} label in the manifest")
    y = np.array([manifest[ids[i]].label(column) for i in keep])
    spk = np.array([manifest[ids[i]].label(speaker_column) for i in keep])
    return np.array(keep), [ids[i] for i in keep], y, spk


def _layouts(model: Any, features: Features) -> dict[str, str]:
    """Each layer's output layout: as the features recorded it, else from ``probe_layers(model)``'s
    overrides (features written before spans stored their layout)."""
    from neurohook.hooks.layers import matches
    from neurohook.models import probe_layers

    out = {s.name: s.layout for s in features.layers if s.layout not in ("", "packed")}
    try:
        overrides = probe_layers(model).overrides or {}
    except TypeError:
        return out
    for key, opts in overrides.items():
        for s in features.layers:
            if matches(key, s.name) and "layout" in opts and s.name not in out:
                out[s.name] = opts["layout"]
    return out


def _embed(model: Any):
    """The model's embedding as the forward of an SV metric (``model.embed``), else its output."""
    if hasattr(model, "embed"):
        return lambda m, waves, lengths: m.embed(waves, lengths)
    return None


def encoded_vs_used(model: Any, manifest: Any, features: Features, column: str, *, metric: str = "accuracy",
                    speaker_column: str = "speaker", ks: Sequence[int] | None = None, draws: int = 3, seed: int = 0,
                    test_size: float = 0.4, max_test: int = 200, batch_size: int = 8,
                    max_replicas: int | None = None) -> dict[str, Any]:
    """Ablation curve of the model's own ``metric`` ("accuracy" of its head on ``column``'s classes, or
    "eer" of its embedding on trials among the test speakers) for the neurons a probe on ``column`` ranks.

    ``max_replicas``: variants per forward (default all, :func:`neurohook.intervene.ablation_curve`).
    """
    rows, ids, y, spk = _rows(manifest, features, column, speaker_column)
    strata = np.zeros(len(y)) if metric == "eer" else y  # SV: any speakers; accuracy: stratified by class
    tr, te = train_test_split(strata, test_size, seed_streams(seed).split, spk)
    X = np.asarray(features.values)[rows]
    probe = LinearProbe().fit(X[tr], y[tr], groups=spk[tr])
    constant = (X[tr] == X[tr][:1]).all(axis=0)
    order = ranking.neuron_ordering(probe.coef_).order
    order = order[~constant[order]]  # dead neurons are no one's top, bottom or random pick
    pick = np.sort(np.random.default_rng(seed).choice(te, size=min(max_test, len(te)), replace=False))
    test_ids = [ids[i] for i in pick]
    forward = None
    if metric == "accuracy":
        classes = list(getattr(model, "extra", {}).get("classes") or [])
        if not classes:
            raise DataError("metric 'accuracy' needs the model's head classes (a neurohook checkpoint trained on "
                            f"{column!r}); use metric 'eer' for an embedding model")
        index = {c: i for i, c in enumerate(classes)}
        test_ids = [u for u, i in zip(test_ids, pick) if y[i] in index]
        fn = accuracy({u: index[manifest[u].label(column)] for u in test_ids})
    elif metric == "eer":
        from neurohook.verification import make_trials

        fn = sv_eer(make_trials(test_ids, [manifest[u].label(speaker_column) for u in test_ids], seed=seed))  # every target pair
        forward = _embed(model)
    else:
        raise DataError(f"metric must be 'accuracy' or 'eer', got {metric!r}")
    D = len(order)
    ks = list(ks) if ks else np.unique(np.geomspace(max(1, D // 200), D // 2, 5).round().astype(int)).tolist()
    loader = list(make_loader(manifest.select(test_ids), batch_size=batch_size))
    speakers = {u: manifest[u].label(speaker_column) for u in test_ids}
    curve = ablation_curve(model, loader, order, ks, fn, draws, features=features, seed=seed, forward=forward,
                           mode="mean", layout=_layouts(model, features), max_replicas=max_replicas, groups=speakers)
    sign = -1 if metric == "accuracy" else 1  # accuracy falls, EER rises when used neurons go
    hurts = [sign * (t - r) > 2 * s and min(sign * lo, sign * hi) > 0
             for t, r, s, (lo, hi) in zip(curve.top, curve.random, curve.random_std, curve.top_minus_random_ci)]
    return {"task": column, "metric": metric, "n_rank": int(len(tr)), "n_test": len(test_ids), "probe_l2": probe.l2_,
            "curve": curve.to_dict(), "top_hurts_more": hurts,
            "verdict": "uses its top neurons" if sum(hurts) * 2 >= len(hurts) else "not shown to use its top neurons"}


def _acc_ci(right: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    reps = replicate_means([right.astype(float)], [groups], seed=0)[:, 0]
    return {"acc": float(right.mean()), "ci": list(percentile_interval(reps))}


def erasure_cost(model: Any, manifest: Any, features: Features, column: str, layer: str, *,
                 speaker_column: str = "speaker", seed: int = 0, test_size: float = 0.4,
                 batch_size: int = 16) -> dict[str, Any]:
    """LEACE of ``column`` at ``layer`` (fitted on the training speakers' rows of that layer's mean or
    value columns): probe accuracy on the layer before / after erasure and after a random direction of
    the same rank, and the model's SV EER on trials among the test speakers with each eraser live (and how
    well a probe reads the property from the embedding then: what the layers above re-create)."""
    from neurohook.verification import bootstrap_ci, cosine_scores, eer, make_trials

    rows, ids, y, spk = _rows(manifest, features, column, speaker_column)
    tr, te = train_test_split(y, test_size, seed_streams(seed).split, spk)
    span = next((s for s in features.layers if s.name == layer), None)
    if span is None:
        raise DataError(f"--layer {layer!r} is not a layer of the features ({', '.join(features.layer_names)})")
    cols = np.arange(span.start, span.start + span.units)  # the first statistic: the mean (or the value of a (B, D) layer)
    if span.statistics[0] not in ("mean", "value"):
        raise DataError(f"layer {layer!r} is pooled by {span.pooling!r}: erasure needs its mean (frames are erased)")
    X = np.asarray(features.values)[rows][:, cols]
    leace = fit_eraser(X[tr], y[tr])
    control = random_eraser(X[tr], leace.rank, seed=seed)

    def probe_on(Z: np.ndarray) -> dict[str, Any]:
        p = LinearProbe().fit(Z[tr], y[tr], groups=spk[tr])
        return _acc_ci(p.predict(Z[te]) == y[te], spk[te])

    out: dict[str, Any] = {"task": column, "layer": layer, "rank": leace.rank, "n_train": int(len(tr)),
                           "n_test": int(len(te)), "majority": float(max(np.mean(y[te] == c) for c in np.unique(y))),
                           "probe": {"none": probe_on(X), "leace": probe_on(leace.transform(X)),
                                     "random_direction": probe_on(control.transform(X))}, "sv_eer": {}}
    test_ids = [ids[i] for i in te]
    trials = make_trials(test_ids, list(spk[te]), seed=seed)  # every target pair, as many non-targets
    loader = list(make_loader(manifest.select(test_ids), batch_size=batch_size))
    forward = _embed(model) or (lambda m, w, lengths: m(w, lengths))
    for name, eraser in (("none", None), ("leace", leace), ("random_direction", control)):
        emb: dict[str, np.ndarray] = {}
        live = Erasure(model, layer, eraser, layout=_layouts(model, features).get(layer)) if eraser else nullcontext()
        with torch.no_grad(), live:
            for b_ids, waves, lengths in loader:
                emb.update(zip(b_ids, forward(model, waves, lengths).float().numpy()))
        E = np.stack([emb[u] for u in test_ids])
        scores = cosine_scores(E, test_ids, trials)
        out["sv_eer"][name] = {"eer": eer(scores, trials.target), "ci": list(bootstrap_ci(scores, trials.target))}
        a, b = train_test_split(y[te], 0.5, seed, spk[te])  # half of the test speakers train an embedding probe
        p = LinearProbe().fit(E[a], y[te][a], groups=spk[te][a])
        out.setdefault("embedding_probe", {})[name] = _acc_ci(p.predict(E[b]) == y[te][b], spk[te][b])
    return out
