"""Prefix sharing (neurohook.branching): variants fork from the unedited trunk at their first edited
layer; checked against replicating the input and against one plain forward per variant."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from neurohook.ablate import Ablation, unit_masks
from neurohook.branching import BranchError, Branches
from neurohook.hooks import Recorder
from neurohook.intervene import ablation_curve


def logit0(outputs: np.ndarray, ids) -> float:
    """A continuous metric: the mean first output (any difference between two ways shows)."""
    return float(outputs[:, 0].mean())


def features_of(model, layers, data, **kw):
    with Recorder(model, layers, **kw) as rec, torch.no_grad():
        for ids, x, lengths in data:
            with rec.batch(ids, lengths=lengths):
                model(x, lengths)
    return rec.features()


class Chain(nn.Module):
    """Frames (B, T, 6) -> a -> b -> c (Linear + ReLU each) -> time mean over valid frames -> head (2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = (nn.Sequential(nn.Linear(i, 16), nn.ReLU()) for i in (6, 16, 16))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.c(self.b(self.a(x)))
        if lengths is None:
            return self.head(h.mean(dim=1))
        valid = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).float()[..., None]  # the model's own (B,) lengths
        return self.head((h * valid).sum(dim=1) / lengths[:, None])


def chain_data(n: int = 12, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 9, 6, generator=g)
    lengths = torch.tensor([9 - i % 4 for i in range(n)])
    ids = [f"u{i}" for i in range(n)]
    return [(ids[a : a + batch], x[a : a + batch], lengths[a : a + batch]) for a in range(0, n, batch)]


def test_prefix_sharing_equals_replication_and_the_plain_loop_for_every_variant():
    model, data = Chain().eval(), chain_data()
    feats = features_of(model, ["a", "b", "c"], data, pooling="mean", layout="BTD")
    order = np.random.default_rng(0).permutation(feats.shape[1])
    run = dict(ks=[1, 5, 20, 40], metric=logit0, draws=3, features=feats, n_boot=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: this model fits prefix sharing
        shared = ablation_curve(model, data, order, mode="mean", **run)
    looped = ablation_curve(model, data, order, mode="mean", share_prefix=False, max_replicas=1, **run)
    for key in ("top", "bottom", "random", "random_draws", "top_ci", "top_minus_random_ci"):
        np.testing.assert_allclose(getattr(shared, key), getattr(looped, key), rtol=1e-5, atol=1e-6, err_msg=key)
    assert shared.reference == pytest.approx(looped.reference, rel=1e-6)
    assert shared.top[-1] != pytest.approx(shared.reference)  # the variants do change the output


def test_layers_before_a_variants_first_edited_layer_run_once_per_utterance():
    model, data = Chain().eval(), chain_data()
    feats = features_of(model, ["a", "b", "c"], data, pooling="mean", layout="BTD")
    cols = feats.columns("c")
    variants = [[], cols[:3], cols[3:9], cols[9:10]]  # only layer c is edited
    rows: dict[str, list[int]] = {"a": [], "b": [], "head": []}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: rows[n].append(o.shape[0])) for n in rows]
    ids, x, lengths = data[0]
    with torch.no_grad(), Branches(model, feats, masks=unit_masks(feats, variants)) as br:
        br.start(1)
        out = br.split(model(x[:1], lengths[:1]))
    for h in handles:
        h.remove()
    assert rows == {"a": [1], "b": [1], "head": [4]}  # a and b once; after c one row per variant
    with torch.no_grad():
        for r, cols_r in enumerate(variants):
            with Ablation(model, feats, neurons=cols_r):
                np.testing.assert_allclose(out[r].numpy(), model(x[:1], lengths[:1]).numpy(), rtol=1e-6, atol=1e-7)


class TwoBranches(nn.Module):
    """Two parallel encoders of the same input, summed: the second's input never meets the first's rows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.left, self.right = nn.Linear(6, 8), nn.Linear(6, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head((self.left(x) + self.right(x)).mean(dim=1))


def test_a_model_that_does_not_fit_falls_back_to_replication_with_a_warning():
    model, data = TwoBranches().eval(), chain_data()
    feats = features_of(model, ["left", "right"], data, pooling="mean", layout="BTD")
    ids, x, lengths = data[0]
    masks = unit_masks(feats, [[0, 1], [9, 10]])  # variant 0 edits left, variant 1 right
    with torch.no_grad(), Branches(model, feats, masks=masks) as br, pytest.raises(BranchError, match="'right'"):
        br.start(1)
        model(x[:1])
    order = np.random.default_rng(0).permutation(feats.shape[1])
    run = dict(ks=[2, 8], metric=logit0, draws=2, features=feats, n_boot=0)
    with pytest.warns(UserWarning, match="replicating the input"):
        shared = ablation_curve(model, data, order, **run)
    looped = ablation_curve(model, data, order, share_prefix=False, max_replicas=1, **run)
    np.testing.assert_allclose(shared.top + shared.random, looped.top + looped.random, rtol=1e-6)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_adi_cnn_curves_agree_both_ways_on_padded_batches():
    from neurohook.models import build, probe_layers

    model = build("adi-cnn", "small", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(6, 8000, generator=g) * 0.1
    lengths = torch.tensor([8000, 7000, 6400, 8000, 5000, 7600])
    ids = [f"u{i}" for i in range(6)]
    data = [(ids[a : a + 3], waves[a : a + 3], lengths[a : a + 3]) for a in (0, 3)]
    spec = probe_layers(model)
    feats = features_of(model, spec.layers, data, pooling=spec.pooling, overrides=spec.overrides)
    order = np.random.default_rng(0).permutation(feats.shape[1])
    run = dict(ks=[5, 100, 600], metric=logit0, draws=2, features=feats, n_boot=0, mode="mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = ablation_curve(model, data, order, **run)
    replicated = ablation_curve(model, data, order, share_prefix=False, **run)
    np.testing.assert_allclose(shared.top + shared.bottom + shared.random,
                               replicated.top + replicated.bottom + replicated.random, rtol=1e-4, atol=1e-5)


def test_resemblyzer_fits_prefix_sharing_and_its_last_lstm_layer_reaches_the_embedding():
    from neurohook.models import build, probe_layers

    model = build("resemblyzer", pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(4, 12000, generator=g) * 0.1
    lengths = torch.tensor([12000, 9000, 12000, 7000])
    data = [([f"u{i}" for i in range(a, a + 2)], waves[a : a + 2], lengths[a : a + 2]) for a in (0, 2)]
    spec = probe_layers(model)
    feats = features_of(model, spec.layers, data, pooling=spec.pooling, overrides=spec.overrides)
    last = feats.columns("lstm.layers.2")
    with torch.no_grad():
        plain = model(waves, lengths)
        with Ablation(model, feats, neurons=last[:64]):
            cut = model(waves, lengths)
    assert (plain - cut).abs().max() > 1e-3  # the embedding reads the last layer's (edited) output
    order = np.random.default_rng(0).permutation(feats.shape[1])
    run = dict(ks=[4, 200], metric=logit0, draws=2, features=feats, n_boot=0,
               forward=lambda m, w, n: m.embed(w, n) if hasattr(m, "embed") else m(w, n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = ablation_curve(model, data, order, **run)
    looped = ablation_curve(model, data, order, share_prefix=False, max_replicas=1, **run)  # packs: one per forward
    np.testing.assert_allclose(shared.top + shared.random, looped.top + looped.random, rtol=1e-4, atol=1e-5)
