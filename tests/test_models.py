"""Tests of neurohook.models: shapes, paper neuron counts, exact lengths, Resemblyzer, training, checkpoints."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch
from torch import nn

import neurohook
from neurohook import models
from neurohook.models.resemblyzer import ResemblyzerEncoder, weights_path
from neurohook.models.wheels import WeightsNotFoundError
from neurohook.models.train import train_steps


def _waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded random 'speech' (B, max) with zeros past each length, and lengths (B,)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        x[b, :n] = 0.1 * torch.randn(n, generator=g)
    return x, torch.tensor(lengths)


def _record(model: nn.Module, wave: torch.Tensor, lengths: torch.Tensor | None, ids: list[str] | None = None, **spec_kwargs):
    """Run model under a Recorder over probe_layers(model); returns (features, recorder)."""
    ids = ids or [f"u{i}" for i in range(wave.shape[0])]
    rec = neurohook.Recorder(model, **models.probe_layers(model, **spec_kwargs))
    with rec, torch.no_grad():
        with rec.batch(ids, lengths=lengths):
            model(wave, lengths)
    return rec.features(), rec


# ----------------------------------------------------------------------------- paper counts
@pytest.mark.parametrize("name,expected", [("adi-cnn", 11100), ("sre-cnn", 11100), ("st-base", 2304), ("st-large", 9216)])
def test_paper_neuron_counts(name: str, expected: int) -> None:
    model = models.build(name, size="paper", seed=0).eval()
    wave, lengths = _waves([4000, 3000])
    feats, _ = _record(model, wave, lengths)
    assert feats.values.shape == (2, expected)
    assert torch.isfinite(torch.as_tensor(feats.values)).all()


def test_small_presets_shapes_and_counts() -> None:
    wave, lengths = _waves([8000, 5000])
    cnn = models.build("adi-cnn", size="small", num_classes=5, seed=0).eval()
    cfg = cnn.config
    assert cnn(wave, lengths).shape == (2, 5)
    assert cnn.embed(wave, lengths).shape == (2, cfg["fc"][1])
    feats, _ = _record(cnn, wave, lengths)
    assert feats.values.shape[1] == 2 * sum(cfg["channels"]) + sum(cfg["fc"])

    for name, layers in (("st-base", 3), ("st-large", 12)):
        st = models.build(name, size="small", seed=0).eval()
        out = st(wave, lengths)
        frames = 8000 // 160 + 1
        assert out.shape == (2, math.ceil(frames / 3), st.config["hidden"])
        feats, _ = _record(st, wave, lengths)
        assert feats.values.shape[1] == layers * st.config["hidden"]


def test_cnn_lengths_match_unpadded_runs() -> None:
    """Per-layer lengths equal each utterance's own conv output length, and padded pooling equals unpadded."""
    model = models.build("sre-cnn", size="small", num_classes=3, seed=1).eval()
    wave, lengths = _waves([9000, 6100, 3333], seed=2)
    batch_feats, rec = _record(model, wave, lengths)
    for b in range(3):
        single = wave[b : b + 1, : int(lengths[b])]
        shapes: dict[str, int] = {}
        hooks = [getattr(model, n).register_forward_hook(lambda m, a, o, n=n: shapes.__setitem__(n, o.shape[-1])) for n in ("conv1", "conv2", "conv3", "conv4")]
        one, _ = _record(model, single, None, ids=["x"])
        for h in hooks:
            h.remove()
        for n, t in shapes.items():
            assert int(rec.last_lengths[n][b]) == t, (n, b)
        torch.testing.assert_close(torch.as_tensor(batch_feats.values[b]), torch.as_tensor(one.values[0]), rtol=1e-4, atol=1e-4)


def test_transformer_padding_is_masked() -> None:
    model = models.build("st-base", size="small", seed=0).eval()
    wave, lengths = _waves([8000, 4321], seed=3)
    batch_feats, rec = _record(model, wave, lengths)
    one, _ = _record(model, wave[1:, :4321], None, ids=["x"])
    assert int(rec.last_lengths["encoder.layers.0"][1]) == math.ceil((4321 // 160 + 1) / 3)
    torch.testing.assert_close(torch.as_tensor(batch_feats.values[1]), torch.as_tensor(one.values[0]), rtol=1e-4, atol=1e-4)


def test_reinitialize_is_seeded_and_changes_weights() -> None:
    model = models.build("adi-cnn", size="small", num_classes=2, seed=0)
    a, b, c = models.reinitialize(model, 1), models.reinitialize(model, 1), models.reinitialize(model, 2)
    w = "conv1.conv.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], model.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_describe_lists_layers_with_shapes() -> None:
    model = models.build("adi-cnn", size="small", num_classes=4, seed=0)
    wave, lengths = _waves([6400, 6400])
    info = {i.name: i for i in models.describe(model, (wave, lengths))}
    frames = 6400 // 160 + 1
    assert info["conv1"].output_shape == (2, 128, frames - 4)
    assert info["conv2"].output_shape == (2, 128, (frames - 4 - 7) // 2 + 1)
    assert info["fc2"].output_shape == (2, 96)
    assert model.training  # mode restored
    other = nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 5, stride=2))
    names = [(i.name, i.output_shape) for i in models.describe(other, torch.zeros(1, 3, 20))]
    assert names == [("0", (1, 8, 18)), ("2", (1, 4, 7))]
    with pytest.raises(TypeError, match="describe"):
        models.probe_layers(other)


# -------------------------------------------------------------------------------- resemblyzer
def _reference_encoder(state: dict[str, torch.Tensor]) -> tuple[nn.LSTM, nn.Linear]:
    lstm, lin = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    lin.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
    return lstm, lin


def test_split_lstm_equals_original() -> None:
    torch.manual_seed(0)
    lstm, lin = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()} | {f"linear.{k}": v for k, v in lin.state_dict().items()}
    model = ResemblyzerEncoder().eval()
    model.load_reference_state(state)
    wave, lengths = _waves([8000, 5600], seed=4)
    with torch.no_grad():
        got = model(wave, lengths)
        for b in range(2):
            mels, _ = model.frontend(wave[b : b + 1, : int(lengths[b])], lengths[b : b + 1])
            out, (h, _) = lstm(mels)
            e = torch.relu(lin(h[-1]))
            torch.testing.assert_close(got[b], (e / e.norm())[0], rtol=0, atol=1e-6)
            split_out, _ = model.lstm(mels)
            torch.testing.assert_close(split_out, out, rtol=0, atol=1e-6)


def test_resemblyzer_missing_wheel_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps resemblyzer"):
        weights_path()


def _resemblyzer_or_skip():
    try:
        weights_path()
    except WeightsNotFoundError as e:
        pytest.skip(f"Resemblyzer weights absent ({e})")
    return models.build("resemblyzer")


def test_resemblyzer_pretrained_same_voice_closer(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _resemblyzer_or_skip()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from neurohook.corpus import build_corpus
    from neurohook.data import load_record, pad_batch, read_manifest

    man = read_manifest(build_corpus(size="tiny", seed=0))
    recs = [r for r in man if r.label("language") in ("en", "es", "de")]
    waves, lengths = pad_batch([load_record(r, sample_rate=16000) for r in recs])
    with torch.no_grad():
        emb = model(waves, lengths)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(recs)), rtol=0, atol=1e-5)
    cos = emb @ emb.T
    same = [float(cos[i, j]) for i in range(len(recs)) for j in range(i + 1, len(recs)) if recs[i].speaker == recs[j].speaker]
    diff = [float(cos[i, j]) for i in range(len(recs)) for j in range(i + 1, len(recs)) if recs[i].speaker != recs[j].speaker]
    assert same and diff
    assert sum(same) / len(same) > sum(diff) / len(diff)
    feats, rec = _record(model, waves[:3], lengths[:3])
    assert feats.values.shape == (3, 4 * 256)
    assert [int(x) for x in rec.last_lengths["lstm.layers.2"]] == [int(n) // 160 + 1 for n in lengths[:3]]


# ------------------------------------------------------------------------------------ training
def test_training_steps_lower_the_loss() -> None:
    wave, _ = _waves([8000] * 4, seed=5)
    cnn = models.build("adi-cnn", size="small", num_classes=2, seed=0)
    losses = train_steps(cnn, "accent", wave, torch.tensor([0, 1, 0, 1]), steps=6, lr=1e-3)
    assert losses[-1] < losses[0]

    st = models.build("st-base", size="small", seed=0)

    def eval_loss() -> float:
        st.eval()
        with torch.no_grad():
            return float(st.pretrain_loss(wave, generator=torch.Generator().manual_seed(7)))

    before = eval_loss()
    train_steps(st, "reconstruction", wave, steps=6, lr=1e-3)
    assert eval_loss() < before


@pytest.mark.parametrize("name", ["sre-cnn", "st-large"])
def test_checkpoint_round_trip(tmp_path, name: str) -> None:
    model = models.build(name, size="small", seed=3).eval()
    path = models.save(model, tmp_path / "m.pt", metrics={"eer": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert raw["name"] == name and raw["config"] == model.config
    loaded = models.load(path)
    assert loaded.metrics == {"eer": 0.5}
    wave, lengths = _waves([6000, 4000])
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave, lengths), model(wave, lengths), rtol=0, atol=0)


# ---------------------------------------------------------------------------------- torchaudio
@pytest.mark.parametrize("name", ["wav2vec2_base", "hubert_base", "wavlm_base"])
def test_torchaudio_layer_lengths_match_extract_features(name: str) -> None:
    model = models.build(name, seed=0)
    wave, lengths = _waves([16000, 9999], seed=6)
    inner = model.model
    with torch.no_grad():
        # torchaudio's own lengths, block by block and after the whole extractor
        x, ref = wave[:, None, :], lengths.clone()
        per_block = []
        for block in inner.feature_extractor.conv_layers:
            x, ref = block(x, ref)
            per_block.append(ref.clone())
        if name == "wavlm_base":  # extract_features(lengths) fails upstream (pytorch/audio#3700)
            _, final = inner.feature_extractor(wave, lengths)
        else:
            outs, final = inner.extract_features(wave, lengths)
            assert len(outs) == len(inner.encoder.transformer.layers)
    assert torch.equal(final, per_block[-1])
    feats, rec = _record(model, wave, lengths)
    spec = models.probe_layers(model)
    assert len(spec.layers) == len(per_block) + len(inner.encoder.transformer.layers)
    for i, block_lengths in enumerate(per_block):
        assert torch.equal(rec.last_lengths[f"model.feature_extractor.conv_layers.{i}"], block_lengths)
    for layer in spec.layers[len(per_block) :]:
        assert torch.equal(rec.last_lengths[layer], final), layer
    assert feats.values.shape == (2, 512 * len(per_block) + 768 * len(inner.encoder.transformer.layers))


def test_probe_layers_on_raw_torchaudio_model() -> None:
    import torchaudio

    raw = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 2, 2)], extractor_conv_bias=False,
        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
    ).eval()
    spec = models.probe_layers(raw, include_cnn=False)
    assert spec.layers == ["encoder.transformer.layers.0", "encoder.transformer.layers.1"]
    wave, lengths = _waves([4000, 2500])
    feats, rec = _record(raw, wave, lengths, include_cnn=False)
    with torch.no_grad():
        _, ref = raw(wave, lengths)
    assert torch.equal(rec.last_lengths["encoder.transformer.layers.1"], ref)
    assert feats.values.shape == (2, 64)


def test_a_freshly_trained_model_carries_what_its_checkpoint_does(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neurohook.corpus import build_corpus
    from neurohook.models import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    manifest = build_corpus(size="tiny", seed=0, progress=False)
    result = train.train("sre-cnn", manifest=manifest, out=tmp_path / "sre.pt", epochs=1, size="small")
    loaded = models.load(result.checkpoint)
    assert result.model.extra["classes"] == loaded.extra["classes"] and len(loaded.extra["classes"]) >= 2
    assert result.model.metrics == loaded.metrics


def test_crepe_frame_conv_equals_conv2d_k_by_1() -> None:
    """CREPE's blocks run Conv1d over each frame; torchcrepe runs Conv2d (k x 1) over (N, C, H, 1)."""
    import torch.nn.functional as F
    from neurohook.models.crepe import _FrameConv

    torch.manual_seed(0)
    block = _FrameConv(3, 5, 8, 2, (3, 4), 32).eval()
    nn.init.normal_(block.bn.running_mean)
    x = torch.randn(2, 3, 4 * 32)  # 2 utterances, 4 frames of 32 positions
    frames = x.reshape(2, 3, 4, 32).transpose(1, 2).reshape(8, 3, 32, 1)
    ref = F.conv2d(F.pad(frames, (0, 0, 3, 4)), block.conv.weight[..., None], block.conv.bias, stride=(2, 1))
    ref = F.max_pool2d(F.batch_norm(torch.relu(ref), block.bn.running_mean, block.bn.running_var, block.bn.weight,
                                    block.bn.bias, eps=block.bn.eps), (2, 1), (2, 1))[..., 0]
    ref = ref.reshape(2, 4, 5, block.h_out).transpose(1, 2).reshape(2, 5, 4 * block.h_out)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-6)


def test_pesto_toeplitz_matrix_equals_its_convolution() -> None:
    """PESTO's fc is the package's padded one-channel Conv1d, computed as one matrix product."""
    import torch.nn.functional as F
    from neurohook.models.pesto import _Toeplitz

    torch.manual_seed(0)
    fc = _Toeplitz(bins=7, channels=3, out=5)
    nn.init.normal_(fc.conv.weight)
    x = torch.randn(2, 3, 4 * 7)  # 2 utterances, 4 frames of 7 bins, 3 channels
    frames = x.reshape(2, 3, 4, 7).transpose(1, 2).reshape(8, 1, 21)
    ref = F.conv1d(frames, fc.conv.weight, padding=4).reshape(2, 4, 5)
    torch.testing.assert_close(fc(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(padding=3), dict(stride=4), dict(dilation=2, padding=2, groups=2), dict(bias=False)])
def test_channels_last_conv1d_equals_conv1d(kwargs: dict) -> None:
    from neurohook.models.base import ChannelsLastConv1d

    torch.manual_seed(0)
    fast = ChannelsLastConv1d(4, 6, 7, **kwargs)
    plain = nn.Conv1d(4, 6, 7, **kwargs)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 4, 50, requires_grad=True)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    fast(x).square().sum().backward()  # trainable as a Conv1d
    grad = x.grad.clone()
    x.grad = None
    plain(x).square().sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-4)
