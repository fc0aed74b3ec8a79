"""The paper's SV analyses: layer-wise EER (Figure 5) and EER of neuron subsets ranked by a proxy probe (Table 4)."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neurohook.features import Features
from neurohook.errors import DataError
from neurohook import ranking, zscore
from neurohook.verification.constants import ALL, DEFAULT_PERCENTAGES
from neurohook.verification.trials import Trials
from neurohook.verification.scoring import _check_values, _cosine, _dots_and_norms, _layer_slices, _trial_rows, layer_scores
from neurohook.verification.metrics import bootstrap_ci, eer, min_dcf
from neurohook.verification.results import LayerEER, LayerwiseVerification, NeuronSubsetEER, NeuronVerification, VerificationResult

__all__ = ["layerwise_eer", "neuron_eer", "features_layerwise_eer", "features_neuron_eer", "evaluate"]

logger = logging.getLogger(__name__)


def layerwise_eer(
    values: np.ndarray,
    ids: Sequence[str],
    layers: Any,
    trials: Trials,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    n_boot: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> LayerwiseVerification:
    """EER and minDCF of cosine scoring for every layer of values (N, D) and for ALL (Figure 5).

    ``layers`` maps layer names to column ranges (start, end); ``n_boot > 0`` adds a bootstrap
    interval of each EER.
    """
    scores = layer_scores(values, ids, layers, trials)
    slices = _layer_slices(layers)
    sizes = {name: e - s for name, (s, e) in slices.items()}
    sizes[ALL] = sum(sizes.values())
    entries = []
    for name, sc in scores.items():
        ci = bootstrap_ci(sc, trials.target, "eer", n_boot, confidence, seed) if n_boot > 0 else None
        entries.append(LayerEER(name, sizes[name], eer(sc, trials.target), min_dcf(sc, trials.target, p_target, c_miss, c_fa), ci))
        logger.debug("layer %s: EER %.4f", name, entries[-1].eer)
    recorded = [e for e in entries if e.name != ALL]
    best = min(recorded, key=lambda e: e.eer).name  # min() keeps the first of equal EERs
    return LayerwiseVerification(entries, best, len(trials), trials.n_target, trials.n_nontarget, p_target, c_miss, c_fa)


def _default_probe_factory(seed: int) -> Any:
    """neurohook.LinearProbe seeded with ``seed``, when the package provides it."""
    import neurohook

    cls = getattr(neurohook, "LinearProbe", None)
    if cls is None:
        try:
            from neurohook.probe import LinearProbe as cls  # type: ignore[no-redef]
        except ImportError:
            cls = None
    if cls is None:
        raise ValueError(
            "no probe_factory given and neurohook.LinearProbe is not available; pass one, e.g. "
            "probe_factory=lambda seed: sklearn.linear_model.LogisticRegression(max_iter=500, random_state=seed)"
        )
    params = inspect.signature(cls).parameters
    for name in ("seed", "random_state"):
        if name in params:
            return cls(**{name: seed})
    return cls()


def _check_probe_inputs(values: np.ndarray, probe_values: Any, probe_speakers: Sequence[Any], trials: Trials,
                        probe_ids: Sequence[str] | None, speakers: Mapping[str, Any] | None, runs: int,
                        percentages: Sequence[float]) -> np.ndarray:
    """probe_values (M, D) checked against values (N, D), and the proxy probe's speakers against the trials'."""
    probe_values = np.asarray(probe_values)
    if probe_values.ndim != 2 or probe_values.shape[1] != values.shape[1]:
        raise ValueError(f"probe_values must be (M, {values.shape[1]}) like values, got shape {probe_values.shape}")
    if len(probe_speakers) != probe_values.shape[0]:
        raise ValueError(f"probe_values has {probe_values.shape[0]} rows but there are {len(probe_speakers)} probe_speakers")
    if len(set(probe_speakers)) < 2:
        raise DataError("the proxy speaker-identification probe needs at least 2 speakers")
    if not np.isfinite(probe_values).all():
        raise ValueError("probe_values contain NaN or inf")
    if runs < 1:
        raise ValueError(f"runs must be positive, got {runs}")
    if not percentages or any(not 0 < p <= 100 for p in percentages):
        raise ValueError(f"percentages must be in (0, 100], got {list(percentages)}")
    used = set(trials.enrol) | set(trials.test)
    if probe_ids is not None:
        shared = sorted(used & {str(x) for x in probe_ids})
        if shared:
            raise ValueError(f"{len(shared)} utterance(s) both train the probe and appear in the trials, e.g. {shared[:5]}")
    if speakers is not None:
        trial_spk = {speakers[x] for x in used if x in speakers}
        shared_spk = sorted(map(str, trial_spk & set(probe_speakers)))
        if shared_spk:
            raise ValueError(f"the probe must be trained on other speakers than the trials'; shared: {shared_spk[:5]}")
    return probe_values


def _subset_eers(eer_on: Callable[[Any], float], factory: Callable[[int], Any], x_train: np.ndarray,
                 y_train: np.ndarray, width: int, percentages: Sequence[float], runs: int, seed: int,
                 steps: Sequence[float] | None) -> tuple[list[NeuronSubsetEER], list[np.ndarray], list[float]]:
    """EER of the top / random / bottom N% of a ranking by each run's probe: (subsets, orders, train accuracies)."""
    ks = [max(1, int(round(p * width / 100.0))) for p in percentages]
    top, rnd, bot = (np.empty((runs, len(ks))) for _ in range(3))
    accs: list[float] = []
    orders: list[np.ndarray] = []
    for r in range(runs):
        probe = factory(seed + r)
        probe.fit(x_train, y_train)
        if hasattr(probe, "score"):
            accs.append(float(probe.score(x_train, y_train)))
        W = np.ascontiguousarray(np.asarray(probe.coef_, dtype=np.float64))
        if W.ndim != 2 or W.shape[1] != width:
            raise ValueError(f"the probe's coef_ must be (C, {width}), got shape {W.shape}")
        order = ranking.neuron_ordering(W, steps).order
        orders.append(order)
        for i, k in enumerate(ks):
            top[r, i] = eer_on(ranking.select(order, k, "top"))
            rnd[r, i] = eer_on(ranking.select(order, k, "random", seed=seed + r))
            bot[r, i] = eer_on(ranking.select(order, k, "bottom"))
    subsets = [NeuronSubsetEER(float(p), k, float(top[:, i].mean()), float(rnd[:, i].mean()), float(bot[:, i].mean()),
                               float(top[:, i].std()), float(rnd[:, i].std()), float(bot[:, i].std()))
               for i, (p, k) in enumerate(zip(percentages, ks))]
    return subsets, orders, accs


def neuron_eer(
    values: np.ndarray,
    ids: Sequence[str],
    layers: Any,
    trials: Trials,
    probe_values: np.ndarray,
    probe_speakers: Sequence[Any],
    *,
    probe_factory: Callable[[int], Any] | None = None,
    probe_ids: Sequence[str] | None = None,
    speakers: Mapping[str, Any] | None = None,
    layer: str | None = None,
    layerwise: LayerwiseVerification | None = None,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    tolerance: float = 0.01,
    runs: int = 1,
    seed: int = 0,
    standardize: bool | None = None,
    steps: Sequence[float] | None = None,
) -> NeuronVerification:
    """Table 4: EER on trials with the top / random / bottom N% neurons of the best layer Lb.

    values (N, D) / ids score the trials; probe_values (M, D) with probe_speakers (M,) — other
    speakers than the trials' — train the proxy speaker-identification probe on Lb's columns
    (z-normalised with their training statistics when ``standardize``, so |W| compares neurons on
    one scale; the default None does so only for a ``probe_factory``, as neurohook's LinearProbe
    z-normalises its inputs itself). ``probe_factory(seed)`` returns an unfitted estimator with ``fit(X, y)`` and
    ``coef_`` (C, D_Lb), e.g. ``lambda seed: LogisticRegression(random_state=seed)``; the default is
    ``neurohook.LinearProbe``. Neurons are ranked by :func:`neurohook.ranking.neuron_ordering` of
    ``coef_`` and drawn with :func:`neurohook.ranking.select` (k = round(N% x D_Lb), at least 1).
    Lb is ``layer``, else the lowest-EER recorded layer of ``layerwise`` (computed if not given).
    The minimal set is the smallest N% whose top-N% EER is within ``tolerance`` (absolute, as a
    fraction: 0.01 = one EER point) of EER(Lb). ``runs`` repeats probe training and random draws
    with seeds seed, seed+1, ... and averages. ``probe_ids`` / ``speakers`` (trial id -> speaker)
    are optional: when given, utterances / speakers shared with the trials are an error.
    """
    values = _check_values(values, ids)
    probe_values = _check_probe_inputs(values, probe_values, probe_speakers, trials, probe_ids, speakers, runs,
                                       percentages)
    slices = _layer_slices(layers, values.shape[1])
    if layer is None:
        if layerwise is None:
            layerwise = layerwise_eer(values, ids, slices, trials)
        layer = layerwise.best_layer
    if layer not in slices:
        raise ValueError(f"unknown layer {layer!r}; layers are {list(slices)}")
    start, end = slices[layer]
    width = end - start
    a, b = _trial_rows(ids, trials)
    lb = np.ascontiguousarray(values[:, start:end])

    def eer_on(cols: np.ndarray | slice) -> float:
        dots, nsq = _dots_and_norms(lb, a, b, [cols])
        return eer(_cosine(dots[:, 0], nsq[a, 0], nsq[b, 0], f"layer {layer!r} subset"), trials.target)

    eer_layer = eer_on(slice(None))
    factory = probe_factory or _default_probe_factory
    x_train = probe_values[:, start:end].astype(np.float64)
    if standardize if standardize is not None else probe_factory is not None:  # LinearProbe normalises itself
        x_train = zscore.standardize(x_train, *zscore.column_stats(x_train), dtype=np.float64)
    y_train = np.asarray([str(s) for s in probe_speakers])
    subsets, orders, accs = _subset_eers(eer_on, factory, x_train, y_train, width, percentages, runs, seed, steps)
    minimal = next((s for s in sorted(subsets, key=lambda s: s.percent) if s.eer_top <= eer_layer + tolerance), None)
    minimal_neurons = [] if minimal is None else (start + ranking.select(orders[0], minimal.n_neurons, "top")).tolist()
    logger.info(
        "layer %s: EER %.4f with all %d neurons; minimal set %s",
        layer, eer_layer, width, "none" if minimal is None else f"{minimal.percent}% (EER {minimal.eer_top:.4f})",
    )
    return NeuronVerification(
        layer, start, end, eer_layer, subsets, float(tolerance),
        None if minimal is None else minimal.percent, minimal_neurons, (start + orders[0]).tolist(),
        len(set(probe_speakers)), int(probe_values.shape[0]),
        float(np.mean(accs)) if accs else None, runs, seed,
    )


def _unpack(features: Features) -> tuple[np.ndarray, list[str], Any]:
    try:
        return np.asarray(features.values), [str(x) for x in features.ids], features.layers
    except AttributeError as exc:
        raise TypeError(f"expected a Features-like object with .values, .ids and .layers, got {type(features).__name__}") from exc


def features_layerwise_eer(features: Features, trials: Trials, **kwargs: Any) -> LayerwiseVerification:
    """:func:`layerwise_eer` on any object with ``.values`` (N, D), ``.ids`` and ``.layers``."""
    values, ids, layers = _unpack(features)
    return layerwise_eer(values, ids, layers, trials, **kwargs)


def features_neuron_eer(features: Features, trials: Trials, probe_features: Features, probe_speakers: Sequence[Any], **kwargs: Any) -> NeuronVerification:
    """:func:`neuron_eer` on Features-like objects: the trials' features and the probe's (same layers)."""
    values, ids, layers = _unpack(features)
    pvalues, pids, _ = _unpack(probe_features)
    kwargs.setdefault("probe_ids", pids)
    return neuron_eer(values, ids, layers, trials, pvalues, probe_speakers, **kwargs)


def evaluate(
    features: Features,
    trials: Trials,
    *,
    probe_features: Features | None = None,
    probe_speakers: Sequence[Any] | None = None,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    n_boot: int = 0,
    seed: int = 0,
    **neuron_kwargs: Any,
) -> VerificationResult:
    """Task T2:SV on a Features-like object: layer-wise EER, then Table 4 when probe features are given."""
    lw = features_layerwise_eer(features, trials, p_target=p_target, c_miss=c_miss, c_fa=c_fa, n_boot=n_boot, seed=seed)
    nv = None
    if probe_features is not None:
        if probe_speakers is None:
            raise ValueError("probe_features needs probe_speakers")
        nv = features_neuron_eer(features, trials, probe_features, probe_speakers, layerwise=lw, seed=seed, **neuron_kwargs)
    return VerificationResult(lw, nv)
