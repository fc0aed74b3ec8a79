"""Ablation and erasure inside the running model, against hand-built models whose outputs read known
channels, a trained tiny classifier, scikit-learn probes and the definition of LEACE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from neurohook.ablate import Ablation, units_of
from neurohook.erasure import Erasure, fit_eraser, random_eraser
from neurohook.hooks import LayerNotFoundError, Recorder
from neurohook.intervene import ablation_curve, accuracy, macro_f1


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class ReadsChannels(nn.Module):
    """Conv1d encoder (BDT); the output is the time-mean of channels 2 and 5 only, weighted 1 and -2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv1d(4, 8, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.enc(x)  # (B, 8, T)
        return (h[:, 2] - 2 * h[:, 5]).mean(dim=1, keepdim=True)


def record(model: nn.Module, layers, x: torch.Tensor, pooling: str = "stats", **kw):
    with Recorder(model, layers, pooling, **kw) as rec, rec.batch([f"u{i}" for i in range(len(x))]), torch.no_grad():
        model(x)
    return rec.features()


def test_ablating_the_read_channels_removes_their_contribution_and_others_change_nothing():
    model, x = ReadsChannels(), torch.randn(6, 4, 20)
    feats = record(model, "enc", x)  # stats: columns 0-7 mean, 8-15 std of the 8 channels
    with torch.no_grad():
        before = model(x)
        with Ablation(model, feats, neurons=[2, 8 + 5, 5]):  # channel 2's mean, channel 5's std and mean
            gone = model(x)
        with Ablation(model, feats, neurons=[0, 1, 3, 4, 6, 7, 8, 15]):  # every other channel
            same = model(x)
        with Ablation(model, feats, neurons=[2, 5], mode="mean"):
            at_mean = model(x)
    assert units_of(feats, [2, 13, 5]) == {"enc": pytest.approx(np.array([2, 5]))}
    assert torch.count_nonzero(gone) == 0  # both read channels zeroed on every frame
    assert torch.equal(same, before)  # bit-identical
    mean = feats.values[:, [2, 5]].mean(axis=0)  # each channel's mean activation over the reference set
    np.testing.assert_allclose(at_mean.numpy(), np.full((6, 1), mean[0] - 2 * mean[1]), rtol=1e-5, atol=1e-6)
    assert hook_count(model) == 0 and torch.equal(model(x).detach(), before)


def test_the_model_is_restored_after_an_exception_and_gradients_flow():
    model, x = ReadsChannels(), torch.randn(3, 4, 12, requires_grad=True)
    feats = record(model, "enc", x.detach())
    with pytest.raises(RuntimeError, match="boom"):
        with Ablation(model, feats, neurons=[2]):
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    with Ablation(model, feats, neurons=[2]):
        model(x).sum().backward()
    g = model.enc.weight.grad
    assert g[2].abs().sum() == 0 and g[5].abs().sum() > 0  # the ablated channel gets no gradient
    with torch.inference_mode(), Ablation(model, feats, neurons=[5]):
        assert model(x).shape == (3, 1)


class Layouts(nn.Module):
    """One module of each layout the Recorder supports, in sequence (the output concatenates all)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv2d = nn.Conv2d(1, 3, 3, padding=1)  # BCFT: units (3 channels, 6 bins)
        self.btd = nn.Linear(18, 5)  # (B, T, 5)
        self.lstm = nn.LSTM(5, 4)  # TBD, tuple output
        self.bd = nn.Linear(4, 3)  # (B, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 6 bins, T)
        h = self.conv2d(x[:, None])  # (B, 3, 6, T)
        h = self.btd(h.permute(0, 3, 1, 2).flatten(2))  # (B, T, 5)
        h, _ = self.lstm(h.transpose(0, 1))  # (T, B, 4)
        return self.bd(h.mean(dim=0))


LAYERS = {"conv2d": (3, 6), "btd": (5,), "lstm": (4,), "bd": (3,)}


class Capture:
    """The selected output of each module, as frames (B, T, *F), kept by a plain hook."""

    def __init__(self, model: nn.Module) -> None:
        self.out: dict[str, torch.Tensor] = {}
        from neurohook.hooks.layouts import to_frames

        lay = {"conv2d": "BCFT", "btd": "BTD", "lstm": "TBD", "bd": "BD"}
        self.h = [getattr(model, n).register_forward_hook(
            lambda m, a, o, n=n: self.out.__setitem__(n, to_frames(o[0] if isinstance(o, tuple) else o, lay[n])))
            for n in LAYERS]

    def close(self) -> None:
        for h in self.h:
            h.remove()


@pytest.mark.parametrize("layer", list(LAYERS))
def test_every_layout_ablates_exactly_the_chosen_units(layer):
    model, x = Layouts(), torch.randn(2, 6, 9)
    feats = record(model, list(LAYERS), x, pooling="mean", overrides={"btd": {"layout": "BTD"}})
    cols = feats.columns(layer)
    chosen = cols[[0, len(cols) - 1]]
    with torch.no_grad(), Ablation(model, feats, neurons=chosen):  # the layouts the Recorder read (features' spans)
        cap = Capture(model)  # registered after the ablation's hooks: sees the edited outputs
        model(x)
    cap.close()
    frames = cap.out[layer].flatten(2)  # (B, T, units)
    units = [feats.unit(c)[1] for c in chosen]
    assert torch.count_nonzero(frames[..., units]) == 0
    others = [u for u in range(frames.shape[-1]) if u not in units]
    assert torch.count_nonzero(frames[..., others]) == frames[..., others].numel()


def test_errors_name_the_column_and_the_layer():
    model, x = ReadsChannels(), torch.randn(2, 4, 10)
    feats = record(model, "enc", x)
    with pytest.raises(ValueError, match="neuron column 99 is not a column"):
        Ablation(model, feats, neurons=[99])
    other = record(Layouts(), "bd", torch.randn(2, 6, 9), pooling="mean")
    with pytest.raises(LayerNotFoundError, match="'bd'"):
        Ablation(model, other, neurons=[0])


class TinyClassifier(nn.Module):
    """Frames (B, T, 12) -> Linear 32 + ReLU ("enc") -> time mean -> Linear 3 ("head")."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.enc = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.enc(x).mean(dim=1))


def trained_tiny(n: int = 600):
    """Trained on frames whose class signal sits in 3 input dims that only hidden units 0-5 can see
    (the other 26 see the 9 noise dims): the units the model uses are known."""
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 15, 12, generator=g)
    x[:, :, :3] += 1.0 * torch.nn.functional.one_hot(y, 3)[:, None, :]
    model = TinyClassifier()
    sees = torch.zeros(32, 12)
    sees[:6, :3], sees[6:, 3:] = 1, 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        with torch.no_grad():
            model.enc[0].weight *= sees
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        model.enc[0].weight *= sees
    return model.eval(), x, y


def test_top_k_of_the_models_own_probe_ranking_hurts_more_than_random_k():
    from neurohook import ranking
    from neurohook.probe import LinearProbe

    model, x, y = trained_tiny()
    ids = [f"u{i}" for i in range(len(y))]
    with Recorder(model, "enc", "mean", layout="BTD") as rec, torch.no_grad():
        for a in range(0, len(y), 200):
            with rec.batch(ids[a : a + 200]):
                model(x[a : a + 200])
    feats = rec.features()
    probe = LinearProbe().fit(feats.values, y.numpy())
    order = ranking.neuron_ordering(probe.coef_).order
    data = [(ids[a : a + 100], x[a : a + 100], None) for a in range(0, len(y), 100)]
    labels = dict(zip(ids, y.tolist()))
    assert set(order[:4].tolist()) <= set(range(6))  # the probe ranks the seeing units first
    # k >= 3: units 0, 1, 4 and 5 carry the class about equally, so which two rank first after unit 4
    # turns on the last digits of a weakly penalised probe's weights, and two of them are partly redundant
    run = dict(ks=[3, 4], metric=accuracy(labels), draws=5, features=feats, mode="mean")
    curve = ablation_curve(model, data, order, **run)
    assert curve.reference > 0.9
    assert curve.top[-1] < curve.random[-1] - 2 * curve.random_std[-1], curve  # beyond the draws' spread at k = 4
    assert curve.top[-1] < curve.reference - 0.2 and curve.bottom[-1] == curve.reference
    assert all(hi < 0 for lo, hi in curve.top_minus_random_ci)  # paired interval of top - random excludes 0
    assert curve.reference_ci[0] <= curve.reference <= curve.reference_ci[1]
    for point, ci in zip(curve.top + curve.random, curve.top_ci + curve.random_ci):
        assert ci[0] <= point + 1e-9 and point - 1e-9 <= ci[1]
    looped = ablation_curve(model, data, order, max_replicas=1, share_prefix=False, **run)
    assert looped.to_dict() == curve.to_dict()  # prefix sharing equals one plain forward per variant
    replicated = ablation_curve(model, data, order, share_prefix=False, **run)
    assert replicated.to_dict() == curve.to_dict()  # and the batch replicated, one mask per replica
    f1 = ablation_curve(model, data[:2], order, ks=[4], metric=macro_f1(labels), draws=2, features=feats)
    assert f1.metric == "macro_f1" and 0 <= f1.top[0] <= f1.reference <= 1


def planted_concepts(n: int = 2000, d: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    gender, lang = rng.integers(0, 2, n), rng.integers(0, 3, n)
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3
    X[:, :4] += np.outer(2 * gender - 1, [1.5, -1.0, 0.5, 0.8])  # gender on 4 mixed directions
    X[:, 10:13] += np.eye(3)[lang] * 1.5
    return X, gender, lang


def best_linear_probe(X, y):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    n = len(y) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 2, 6), cv=3, max_iter=500))
        return ref.fit(X[:n], y[:n]).score(X[n:], y[n:])


def test_leace_erases_the_concept_and_nothing_else():
    X, gender, lang = planted_concepts()
    eraser = fit_eraser(X, gender)
    E = eraser.transform(X)
    assert eraser.rank == 1  # two classes: one direction
    Zc = np.eye(2)[gender] - np.eye(2)[gender].mean(axis=0)
    np.testing.assert_allclose((E - E.mean(0)).T @ Zc / len(X), 0, atol=1e-10)  # the definition: no cross-covariance
    assert best_linear_probe(X, gender) > 0.95
    assert best_linear_probe(E, gender) <= max(np.mean(gender), 1 - np.mean(gender)) + 0.02 + 0.03  # chance (+ noise)
    assert best_linear_probe(E, lang) >= best_linear_probe(X, lang) - 0.02  # an independent property survives
    np.testing.assert_allclose(eraser.transform(E), E, atol=1e-9)  # erasing twice = erasing once
    rnd = random_eraser(X, 1, seed=0)
    assert best_linear_probe(rnd.transform(X), gender) > 0.9  # a random direction of the same rank leaves gender


def test_constant_columns_stay_constant_so_a_z_scoring_probe_cannot_resurrect_the_concept():
    from neurohook.probe import LinearProbe

    X, gender, _ = planted_concepts(n=600)
    X = np.concatenate([X, np.full((600, 10), 3.0), np.zeros((600, 10))], axis=1)  # dead units, as ReLU layers have
    X = X[:, np.random.default_rng(1).permutation(50)]  # interleaved with the live ones
    dead = X.std(axis=0) == 0
    E = fit_eraser(X, gender).transform(X)
    assert (E[:, dead] == X[:, dead]).all()  # exactly: rounding residue there would carry the erased direction
    probe = LinearProbe(l2=1e-4).fit(E, gender)  # z-scores every column: any residue would be unit variance
    assert probe.score(E, gender) <= max(np.mean(gender), 1 - np.mean(gender)) + 0.05


def test_live_erasure_on_a_mean_pooled_layer_equals_erasing_the_pooled_features():
    model, x, y = trained_tiny(300)
    ids = [f"u{i}" for i in range(len(y))]
    feats = record(model, "enc", x, pooling="mean", layout="BTD")
    eraser = fit_eraser(feats.values, y.numpy())
    with Erasure(model, "enc", eraser, layout="BTD"):
        live = record(model, "enc", x, pooling="mean", layout="BTD")
    assert hook_count(model) == 0
    np.testing.assert_allclose(live.values, eraser.transform(feats.values), atol=2e-5)
    assert live.ids == ids


class DictAndSplitLSTM(nn.Module):
    """A dict-returning encoder (BCTF 2-D conv inside) and a 2-layer LSTM split into per-layer modules."""

    class Enc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"hidden": self.conv(x[:, None]), "aux": x}  # (B, 2, T, 4): BCTF

    def __init__(self) -> None:
        super().__init__()
        from neurohook.hooks import split_rnn

        torch.manual_seed(4)
        self.enc = self.Enc()
        self.rnn = split_rnn(nn.LSTM(8, 3, num_layers=2, batch_first=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, 4)
        h = self.enc(x)["hidden"].permute(0, 2, 1, 3).flatten(2)  # (B, T, 8)
        return self.rnn(h)[0].mean(dim=1)


def test_dict_outputs_bctf_and_split_lstm_layers_are_ablated_in_place_of_their_units():
    model, x = DictAndSplitLSTM(), torch.randn(3, 7, 4)
    layers = ["enc", "rnn.layers.0", "rnn.layers.1"]
    feats = record(model, layers, x, pooling="mean", output="hidden", overrides={"rnn.layers.*": {"output": 0}, "enc": {"layout": "BCTF"}},
                   conv2d_layout="BCTF")
    assert [s.layout for s in feats.layers] == ["BCTF", "BTD", "BTD"]
    seen: dict[str, torch.Tensor] = {}
    for layer in layers:
        cols = feats.columns(layer)[[1, 2]]
        with torch.no_grad(), Ablation(model, feats, neurons=cols, output="hidden" if layer == "enc" else 0,
                                       conv2d_layout="BCTF"):
            module = model.get_submodule(layer)
            h = module.register_forward_hook(lambda m, a, o, n=layer: seen.__setitem__(n, o["hidden"] if n == "enc" else o[0]))
            model(x)
            h.remove()
        out = seen[layer]
        frames = out.permute(0, 2, 1, 3).flatten(2) if layer == "enc" else out  # (B, T, units)
        units = [feats.unit(c)[1] for c in cols]
        assert torch.count_nonzero(frames[..., units]) == 0, layer
        assert torch.count_nonzero(frames) == frames.numel() - frames[..., units].numel(), layer
    assert hook_count(model) == 0


def test_an_embeddings_eer_under_ablation_matches_a_direct_computation():
    from neurohook.intervene import sv_eer
    from neurohook.verification import cosine_scores, eer, make_trials

    model, x, y = trained_tiny(300)
    ids = [f"u{i}" for i in range(len(y))]
    feats = record(model, "enc", x, pooling="mean", layout="BTD")
    trials = make_trials(ids, y.tolist(), n_target=300, seed=0)
    embed = lambda m, w, lengths: m.enc(w).mean(dim=1)  # the pooled hidden layer as the embedding
    data = [(ids[a : a + 100], x[a : a + 100], None) for a in range(0, len(y), 100)]
    order = np.arange(32)
    curve = ablation_curve(model, data, order, ks=[6], metric=sv_eer(trials), draws=2, features=feats, forward=embed)
    with torch.no_grad():
        plain = model.enc(x).mean(dim=1).numpy()
        with Ablation(model, feats, neurons=order[:6]):
            cut = model.enc(x).mean(dim=1).numpy()
    assert curve.metric == "eer"
    assert curve.reference == pytest.approx(eer(cosine_scores(plain, ids, trials), trials.target))
    assert curve.top[0] == pytest.approx(eer(cosine_scores(cut, ids, trials), trials.target))
    assert curve.top[0] > curve.reference + 0.1  # units 0-5 carry the class ("speaker") signal


def test_curve_intervals_have_the_binomial_width_and_are_paired_across_variants():
    from neurohook.intervene import replicates, sv_eer
    from neurohook.verification import make_trials

    rng = np.random.default_rng(0)
    n = 1000
    ids = [f"u{i}" for i in range(n)]
    labels = dict(zip(ids, rng.integers(0, 2, n).tolist()))
    truth = np.array([labels[u] for u in ids])
    right = rng.random(n) < 0.7  # a classifier right on 70 % of the utterances
    outputs = np.eye(2)[np.where(right, truth, 1 - truth)]
    vectorised = accuracy(labels)
    generic = lambda o, i: vectorised(o, i)  # no replicates attribute: rows resampled, metric called
    se = np.sqrt(right.mean() * (1 - right.mean()) / n)
    for metric in (vectorised, generic):
        reps = replicates(metric, [outputs, outputs, outputs[::-1]], ids, n_boot=400, seed=1)
        assert reps.shape == (400, 3)
        assert np.array_equal(reps[:, 0], reps[:, 1])  # one resample for every variant
        width = np.subtract(*np.quantile(reps[:, 0], [0.975, 0.025]))
        assert width == pytest.approx(2 * 1.96 * se, rel=0.2)
    speakers = np.repeat(np.arange(20), n // 20)  # whole speakers resampled: wider when they differ
    right_by_speaker = np.repeat(rng.random(20) < 0.7, n // 20)
    clustered = np.eye(2)[np.where(right_by_speaker, truth, 1 - truth)]
    by_utt = replicates(vectorised, [clustered], ids, n_boot=400, seed=1)[:, 0].std()
    by_spk = replicates(vectorised, [clustered], ids, groups=speakers, n_boot=400, seed=1)[:, 0].std()
    assert by_spk > 3 * by_utt
    emb = rng.standard_normal((n, 8)) + np.eye(8)[speakers % 8] * 2
    trials = make_trials(ids, speakers.tolist(), n_target=500, seed=0)
    eer_reps = replicates(sv_eer(trials), [emb, emb], ids, n_boot=50, seed=0)
    assert np.array_equal(eer_reps[:, 0], eer_reps[:, 1]) and eer_reps.std() > 0
