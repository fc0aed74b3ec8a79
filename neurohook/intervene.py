"""From "encoded" to "used": a ranking's neurons ablated in the running model, scored on the model's own task.

:func:`ablation_curve` measures, for each k, the model's own metric with the top-k, bottom-k and
random-k neurons of a ranking ablated (:class:`neurohook.Ablation`), random over several draws. All
variants of one utterance run in one forward by prefix sharing (:mod:`neurohook.branching`): the
layers before a variant's first edited layer run once for all, so a curve over late layers costs
little more than one plain pass, and one over every layer (random draws touch the first layers) about
a third of one forward per variant (``benchmarks/bench_intervene.py``: measured ratios in README).
Where a model's forward does not fit, each utterance is replicated along the batch axis instead,
replica r ablating variant r's units (``share_prefix=False``: padded batches replicated, ``max_replicas``
variants per forward, 1 the plain loop); compute then grows with the variants.
Metrics map the model outputs of every utterance to one number: :func:`accuracy` and :func:`macro_f1`
of a classifier's logits, :func:`sv_eer` of an embedding on verification trials.

Every point has a 95% interval from one paired bootstrap shared by all variants (:func:`replicates`):
test utterances (whole speakers with ``groups``; for EER, target and non-target trials) are resampled,
the same draw for every variant, and the random draws are resampled too. ``top_minus_random_ci`` is
the interval of the paired difference between the top-k and the random-k mean.

Example::

    curve = ablation_curve(model, loader, order, ks=[10, 50, 200], metric=accuracy(accent_of),
                           features=feats, draws=5)
    curve.reference, curve.top, curve.random          # no ablation; per k
    curve.top_minus_random_ci                         # per k: (low, high), paired bootstrap
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from neurohook.ablate import Ablation, layer_means, unit_masks
from neurohook.branching import BranchError, Branches
from neurohook.features import Features
from neurohook.intervals import N_BOOT, percentile_interval, replicate_means
from neurohook.results import JSONResult

__all__ = ["AblationCurve", "ablation_curve", "accuracy", "macro_f1", "replicates", "sv_eer"]

#: Default rows (replicas x batch) per forward: on the 2-core CPU here, adi-cnn on 3 s clips ran a
#: 71-variant curve fastest at 32 rows (4.6 s vs 6.3 s one variant per forward, 4.8-5.0 s at 64-568 rows).
ROWS_PER_FORWARD = 32

Metric = Callable[[np.ndarray, Sequence[Any]], float]  # outputs (N, K), ids (N,) -> one number


def accuracy(labels: Mapping[Any, int]) -> Metric:
    """Share of utterances whose argmax output is their label (class index of the model's head)."""
    def metric(outputs: np.ndarray, ids: Sequence[Any]) -> float:
        y = np.array([labels[u] for u in ids])
        return float(np.mean(outputs.argmax(axis=1) == y))

    def boot(outputs: Sequence[np.ndarray], ids: Sequence[Any], groups: np.ndarray | None, n_boot: int,
             seed: int) -> np.ndarray:
        y = np.array([labels[u] for u in ids])
        right = np.stack([o.argmax(axis=1) == y for o in outputs], axis=1).astype(np.float64)  # (N, R)
        return replicate_means([right], [groups], seed=seed, n_boot=n_boot)
    metric.__name__ = "accuracy"
    metric.replicates = boot  # type: ignore[attr-defined]
    return metric


def macro_f1(labels: Mapping[Any, int]) -> Metric:
    """Macro-averaged F1 of the argmax outputs against the labels (scikit-learn's ``f1_score``)."""
    from sklearn.metrics import f1_score

    def metric(outputs: np.ndarray, ids: Sequence[Any]) -> float:
        y = np.array([labels[u] for u in ids])
        return float(f1_score(y, outputs.argmax(axis=1), average="macro"))
    metric.__name__ = "macro_f1"
    return metric


def sv_eer(trials: Any) -> Metric:
    """Equal error rate of cosine scores between the outputs (embeddings) of each trial's two utterances."""
    from neurohook.verification import cosine_scores, eer

    def scores(outputs: np.ndarray, ids: Sequence[Any]) -> np.ndarray:
        return cosine_scores(np.asarray(outputs, dtype=np.float32), [str(u) for u in ids], trials)

    def metric(outputs: np.ndarray, ids: Sequence[Any]) -> float:
        return float(eer(scores(outputs, ids), trials.target))

    def boot(outputs: Sequence[np.ndarray], ids: Sequence[Any], groups: np.ndarray | None, n_boot: int,
             seed: int) -> np.ndarray:
        # Trials, targets and non-targets apart (as verification.bootstrap_ci; optimistic: trials share
        # utterances), the same draw for every variant.
        rng = np.random.default_rng(seed)
        tar, non = np.flatnonzero(trials.target), np.flatnonzero(~trials.target)
        y = np.r_[np.ones(len(tar), bool), np.zeros(len(non), bool)]
        per = [scores(o, ids) for o in outputs]
        out = np.empty((n_boot, len(per)))
        for b in range(n_boot):
            pick = np.r_[rng.choice(tar, len(tar)), rng.choice(non, len(non))]
            out[b] = [eer(s[pick], y) for s in per]
        return out
    metric.__name__ = "eer"
    metric.replicates = boot  # type: ignore[attr-defined]
    return metric


def replicates(metric: Metric, outputs: Sequence[np.ndarray], ids: Sequence[Any], groups: Sequence[Any] | None = None,
               n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Paired bootstrap replicates (n_boot, R) of ``metric`` on R variants' outputs of the same utterances.

    ``outputs[r]`` (N, C) are variant r's outputs of ``ids`` (N,); ``groups`` (N,) resampling units
    (speakers; default: utterances). Replicate b draws one resample, used for every variant. A metric
    with its own ``replicates`` attribute (:func:`accuracy`, vectorised; :func:`sv_eer`, over trials)
    is asked; any other is called on the resampled rows.
    """
    own = getattr(metric, "replicates", None)
    g = None if groups is None else np.asarray(groups)
    if own is not None:
        return own(outputs, ids, g, n_boot, seed)
    rng = np.random.default_rng(seed)
    codes = np.arange(len(ids)) if g is None else np.unique(g, return_inverse=True)[1]
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    ids_arr = np.asarray(ids, dtype=object)
    out = np.empty((n_boot, len(outputs)))
    for b in range(n_boot):
        rows = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        out[b] = [metric(o[rows], list(ids_arr[rows])) for o in outputs]
    return out


@dataclass
class AblationCurve(JSONResult):
    """The model's own metric under ablation of a ranking's top / bottom / random k neurons."""

    metric: str
    ks: list[int]
    reference: float  # no ablation
    top: list[float]  # per k
    bottom: list[float]
    random: list[float]  # mean over draws
    random_std: list[float]  # spread over draws
    random_draws: list[list[float]] = field(default_factory=list)  # (k, draws)
    mode: str = "zero"
    # 95% intervals, (low, high): the reference, per k each curve, and the paired top - random difference
    reference_ci: list[float] = field(default_factory=list)
    top_ci: list[list[float]] = field(default_factory=list)
    bottom_ci: list[list[float]] = field(default_factory=list)
    random_ci: list[list[float]] = field(default_factory=list)
    top_minus_random_ci: list[list[float]] = field(default_factory=list)


def _intervals(reps: np.ndarray, n_ks: int, draws: int, seed: int) -> dict[str, Any]:
    """Intervals of an AblationCurve from paired replicates (n_boot, 1 + n_ks * (2 + draws)); the random
    draws are resampled per replicate too (their mean's interval covers which sets were drawn)."""
    n_boot = len(reps)
    per_k = reps[:, 1:].reshape(n_boot, n_ks, 2 + draws)
    pick = np.random.default_rng(seed).integers(0, draws, (n_boot, n_ks, draws))
    rand = np.take_along_axis(per_k[:, :, 2:], pick, axis=2).mean(axis=2)  # (n_boot, n_ks)
    def ci(r: np.ndarray) -> list[float]:
        return list(percentile_interval(r))

    return {"reference_ci": ci(reps[:, 0]), "top_ci": [ci(per_k[:, j, 0]) for j in range(n_ks)],
            "bottom_ci": [ci(per_k[:, j, 1]) for j in range(n_ks)], "random_ci": [ci(rand[:, j]) for j in range(n_ks)],
            "top_minus_random_ci": [ci(per_k[:, j, 0] - rand[:, j]) for j in range(n_ks)]}


def _variants(ranking: np.ndarray, ks: Sequence[int], draws: int, seed: int) -> list[np.ndarray]:
    """Column sets: none, then per k top, bottom and ``draws`` random sets (from the ranked columns)."""
    rng = np.random.default_rng(seed)
    out = [np.zeros(0, np.int64)]
    for k in ks:
        out += [ranking[:k], ranking[len(ranking) - k :]]
        out += [np.sort(rng.choice(ranking, size=k, replace=False)) for _ in range(draws)]
    return out


def _default_forward(model: nn.Module, wave: Tensor, lengths: Tensor | None) -> Tensor:
    out = model(wave, lengths)
    return out[0] if isinstance(out, (tuple, list)) else out


def _replicated(model: nn.Module, forward: Callable, wave: Tensor, lengths: Tensor | None, masks: dict[str, np.ndarray],
                r: int, options: dict[str, Any]) -> list[np.ndarray]:
    """Outputs (B, C) of r variants: the batch replicated r times, replica j ablating masks' row j."""
    B = wave.shape[0]
    waves = wave.repeat(r, *([1] * (wave.dim() - 1)))
    lens = None if lengths is None else lengths.repeat(r)
    with torch.no_grad(), Ablation(model, masks=masks, **options):
        out = forward(model, waves, lens).detach().float().cpu().numpy()
    return [out[j * B : (j + 1) * B] for j in range(r)]


def _utterances(wave: Tensor, lengths: Tensor | None) -> list[tuple[Tensor, Tensor | None]]:
    """A batch as single utterances (B = 1), a (B, S) batch trimmed to each length (no padding)."""
    if lengths is None:
        return [(wave[i : i + 1], None) for i in range(wave.shape[0])]
    return [(wave[i : i + 1, : int(n)] if wave.dim() == 2 else wave[i : i + 1], lengths[i : i + 1])
            for i, n in enumerate(lengths.tolist())]


def _branched(model: nn.Module, forward: Callable, wave: Tensor, lengths: Tensor | None, masks: dict[str, np.ndarray],
              r: int, options: dict[str, Any], check: bool = False) -> list[np.ndarray]:
    """Outputs (B, C) of r variants by prefix sharing (:class:`neurohook.branching.Branches`). ``check``:
    also run three variants replicated and raise BranchError where the two ways disagree (beyond
    float32 rounding)."""
    with torch.no_grad(), Branches(model, masks=masks, **options) as br:
        br.start(wave.shape[0])
        outs = [o.detach().float().cpu().numpy() for o in br.split(forward(model, wave, lengths))]
    if check:
        pick = sorted({0, r // 2, r - 1})
        ref = _replicated(model, forward, wave, lengths, {k: m[pick] for k, m in masks.items()}, len(pick), options)
        for j, o in zip(pick, ref):
            scale = float(np.abs(o).max()) or 1.0
            if not np.allclose(outs[j], o, rtol=1e-4, atol=1e-4 * scale):
                raise BranchError(f"variant {j}: prefix sharing gives other outputs than replication "
                                  f"(max difference {float(np.abs(outs[j] - o).max()):.3g})")
    return outs


def ablation_curve(model: nn.Module, data: Iterable[tuple[Sequence[Any], Tensor, Tensor | None]], ranking: Any,
                   ks: Sequence[int], metric: Metric, draws: int = 5, *, features: Features, mode: str = "zero",
                   means: Mapping[str, Any] | None = None, seed: int = 0,
                   forward: Callable[[nn.Module, Tensor, Tensor | None], Tensor] | None = None,
                   max_replicas: int | None = None, groups: Mapping[Any, Any] | None = None, n_boot: int = N_BOOT,
                   share_prefix: bool = True, **ablation_options: Any) -> AblationCurve:
    """The model's ``metric`` with the top-k, bottom-k and ``draws`` random-k columns of ``ranking`` ablated.

    ``data`` yields (ids, waves (B, ...), lengths (B,) or None); ``ranking`` (K,) Features columns, best
    first; ``forward(model, waves, lengths)`` returns the outputs the metric reads, (B, C) logits or
    (B, E) embeddings (default: ``model(waves, lengths)``, item 0 of a tuple). All variants are
    1 + len(ks) * (2 + draws). ``share_prefix``: run them by prefix sharing (:mod:`neurohook.branching`,
    one utterance per forward, all variants at once unless ``max_replicas``), checked on the first batch
    against replication and replaced by it (with a warning) where the model does not fit. Otherwise
    (or then) the batch is replicated, ``max_replicas`` variants per forward (default
    ``ROWS_PER_FORWARD // B``; 1 is the plain loop). ``groups`` maps ids to resampling units of the
    intervals (speakers; default: utterances), ``n_boot`` their replicates (0: none).
    ``ablation_options`` go to :class:`Ablation`.
    """
    order = np.asarray(ranking, dtype=np.int64).reshape(-1)
    if any(not 0 < k <= len(order) for k in ks):
        raise ValueError(f"ks must lie in [1, {len(order)}] (the ranking's length), got {list(ks)}")
    forward = forward or _default_forward
    if mode == "mean" and means is None:
        means = layer_means(features)  # once, not per forward
    options = dict(features=features, mode=mode, means=means, **ablation_options)
    variants = _variants(order, ks, draws, seed)
    masks = unit_masks(features, variants)
    R = len(variants)
    outputs: list[list[np.ndarray]] = [[] for _ in range(R)]
    ids: list[Any] = []
    branch, first = share_prefix, True
    for batch_ids, wave, lengths in data:
        ids += list(batch_ids)
        for w, n in _utterances(wave, lengths) if share_prefix else [(wave, lengths)]:
            default = R if branch else max(1, ROWS_PER_FORWARD // w.shape[0])
            step = default if max_replicas is None else max(1, int(max_replicas))
            for a in range(0, R, step):
                r = min(step, R - a)
                part = {layer: m[a : a + r] for layer, m in masks.items()}
                outs = None
                if branch:
                    try:
                        outs = _branched(model, forward, w, n, part, r, options, check=first)
                    except RuntimeError as e:  # BranchError, or the model's own shape error
                        warnings.warn(f"prefix sharing does not fit this model ({e}); replicating the input instead",
                                      stacklevel=2)
                        branch = False
                    first = False
                if outs is None:
                    outs = _replicated(model, forward, w, n, part, r, options)
                for j, o in enumerate(outs):
                    outputs[a + j].append(o)
    stacked = [np.concatenate(o) for o in outputs]
    scores = [metric(o, ids) for o in stacked]
    per_k = np.array(scores[1:]).reshape(len(ks), 2 + draws)
    rand = per_k[:, 2:]
    cis: dict[str, Any] = {}
    if n_boot > 0:
        g = None if groups is None else [groups[u] for u in ids]
        cis = _intervals(replicates(metric, stacked, ids, g, n_boot, seed), len(ks), draws, seed)
    return AblationCurve(getattr(metric, "__name__", "metric"), [int(k) for k in ks], scores[0], per_k[:, 0].tolist(),
                         per_k[:, 1].tolist(), rand.mean(axis=1).tolist(), rand.std(axis=1).tolist(), rand.tolist(), mode,
                         **cis)
