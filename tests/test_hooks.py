"""Recorder against naive references that keep each layer's full output and pool it in float64."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchaudio
from torch import nn

from neurohook.features import Features
from neurohook.hooks import LayerNotFoundError, Recorder, find_layers, split_rnn


# ------------------------------------------------------------------------------------ helpers
def naive_pool(x: torch.Tensor, lengths: list[int] | torch.Tensor, mode: str) -> np.ndarray:
    """Pool frames x (B, T, D) in float64 keeping only the first lengths[b] frames."""
    rows = []
    for b, n in enumerate([int(v) for v in lengths]):
        f = x[b, :n].double().reshape(n, -1)
        mean, std = f.mean(0), f.std(0, unbiased=False)
        rows.append({"mean": mean, "std": std, "stats": torch.cat([mean, std]), "max": f.amax(0)}[mode])
    return torch.stack(rows).numpy()


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Max abs error over max abs reference."""
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


class Keep:
    """Naive reference recorder: keeps the full output of each module (the thing neurohook avoids)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            m.register_forward_hook(lambda mod, a, o, n=n: self.out.__setitem__(n, (o[0] if isinstance(o, tuple) else o).detach().clone()))
            for n, m in modules.items()
        ]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward / pre-forward hooks registered anywhere in the model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------------------- the paper's CNN
class PaperCNN(nn.Module):
    """Appendix A.1 CNN: Conv1d k=5,7,1,1 strides 1,2,1,1, masked statistics pooling, FC, FC."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 32, 32, 48), fc: tuple[int, int] = (48, 24), n_in: int = 40) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.conv1 = nn.Conv1d(n_in, w1, 5, stride=1)
        self.conv2 = nn.Conv1d(w1, w2, 7, stride=2)
        self.conv3 = nn.Conv1d(w2, w3, 1)
        self.conv4 = nn.Conv1d(w3, w4, 1)
        self.fc1 = nn.Linear(2 * w4, fc[0])
        self.fc2 = nn.Linear(fc[0], fc[1])

    @staticmethod
    def frames(n: torch.Tensor) -> torch.Tensor:
        """Valid frames after the conv stack, computed by hand."""
        return torch.div(n - 4 - 7, 2, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        n = self.frames(lengths)
        mask = (torch.arange(x.shape[2])[None, :] < n[:, None]).unsqueeze(1).float()
        mean = (x * mask).sum(2) / n[:, None]
        std = (((x - mean[:, :, None]) * mask) ** 2).sum(2).div(n[:, None]).sqrt()
        h = torch.relu(self.fc1(torch.cat([mean, std], 1)))
        return self.fc2(h)


def test_paper_cnn_stats_pooling_matches_reference() -> None:
    torch.manual_seed(0)
    model = PaperCNN().eval()
    lengths = torch.tensor([120, 57, 31])
    x = torch.randn(3, 40, 120)
    names = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    keep = Keep({n: getattr(model, n) for n in names})
    with torch.no_grad():
        plain = model(x, lengths)
    keep.close()
    rec = Recorder(model, names, pooling="stats")
    with rec, rec.batch(["a", "b", "c"], lengths=lengths), torch.no_grad():
        recorded = model(x, lengths)
    assert torch.equal(plain, recorded)
    feats = rec.features()
    assert feats.values.shape == (3, 2 * (32 + 32 + 32 + 48) + 48 + 24)
    hand = {"conv1": lengths - 4, "conv2": PaperCNN.frames(lengths)}
    hand["conv3"] = hand["conv4"] = hand["conv2"]
    for n in names[:4]:
        assert torch.equal(rec.last_lengths[n], hand[n]), n
        ref = naive_pool(keep.out[n].transpose(1, 2), hand[n], "stats")
        assert rel_err(feats.select_layers(n).values, ref) <= 1e-5
    for n in ("fc1", "fc2"):  # utterance-level outputs pass through unchanged
        span = [s for s in feats.layers if s.name == n][0]
        assert span.pooling == "none"
        np.testing.assert_array_equal(feats.select_layers(n).values, keep.out[n].numpy())
    assert feats.unit(0) == ("conv1", 0, "mean") and feats.unit(32) == ("conv1", 0, "std")


def record_both_ways(model: nn.Module, recorder_args: dict, batches: list, monkeypatch) -> list[bool]:
    """Record ``batches`` (ids, input, lengths) with the Recorder's compiled path and with it switched
    off; assert both give bit-equal features and equal last lengths; return, per layer call, whether the
    compiled path took it."""
    taken: list[bool] = []
    original = Recorder._store_compiled

    def counted(self: Recorder, layer, output) -> bool:
        taken.append(original(self, layer, output))
        return taken[-1]

    def record() -> tuple[Features, dict]:
        rec = Recorder(model, **recorder_args)
        lengths = {}
        with rec, torch.no_grad():
            for ids, x, n in batches:
                with rec.batch(ids, lengths=n):
                    model(x, n)
                lengths.update({k: v.clone() for k, v in rec.last_lengths.items() if v is not None})
        return rec.features(), lengths

    monkeypatch.setattr(Recorder, "_store_compiled", counted)
    compiled, lengths = record()
    monkeypatch.setattr(Recorder, "_store_compiled", lambda *args: False)
    tensor_path, tensor_lengths = record()
    assert compiled.ids == tensor_path.ids
    np.testing.assert_array_equal(compiled.values, tensor_path.values)
    assert lengths.keys() == tensor_lengths.keys() and all(torch.equal(lengths[k], tensor_lengths[k]) for k in lengths)
    return taken


@pytest.mark.parametrize("name, options", [("sre-cnn", {"size": "small"}), ("wav2vec2_base", {})])
def test_compiled_path_equals_the_tensor_path_and_is_taken(name: str, options: dict, monkeypatch) -> None:
    """The compiled path (CPU float32 (B, D, T), (B, T, D) and (B, D) outputs, alone or first in a tuple,
    lengths from the models' overrides, rows not seen before) records bit for bit what the tensor path
    records, storage growing past its first 16 rows; it is taken from a layer's second batch on, and
    not for ids seen before (merged)."""
    from neurohook.models import build, probe_layers

    torch.manual_seed(0)
    model = build(name, **options).eval()
    spec = probe_layers(model)
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(6):  # 20 new utterances in 5 batches, then batch 0's ids again
        n = torch.randint(4000, 9000, (4,), generator=g)
        batches.append(([f"u{4 * (b % 5) + i}" for i in range(4)], torch.randn(4, int(n.max()), generator=g) * 0.1, n))
    taken = record_both_ways(model, dict(spec), batches, monkeypatch)
    layers = len(spec.layers)
    assert taken == [False] * layers + [True] * 4 * layers + [False] * layers


def test_compiled_path_takes_lengths_followed_through_the_convolutions(monkeypatch) -> None:
    """A model without length overrides (lengths traced through its strided convolutions) takes the
    compiled path too, from the second batch on, with what the tensor path records."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    batches = [([f"u{3 * b + i}" for i in range(3)], torch.randn(3, 40, 120, generator=g),
                torch.randint(31, 121, (3,), generator=g)) for b in range(3)]
    names = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    taken = record_both_ways(PaperCNN().eval(), {"layers": names, "pooling": "stats", "input_time_axis": 2}, batches,
                             monkeypatch)
    assert taken == [False] * 6 + [True] * 12


def test_paper_cnn_full_size_has_11100_neurons() -> None:
    torch.manual_seed(0)
    model = PaperCNN((1000, 1000, 1000, 1500), (1500, 600)).eval()
    rec = Recorder(model, ["conv*", "fc*"], pooling="stats")
    with rec, rec.batch([0], lengths=[24]), torch.no_grad():
        model(torch.randn(1, 40, 24), torch.tensor([24]))
    assert rec.features().values.shape == (1, 11100)


# ------------------------------------------------------------------------------- torchaudio
@pytest.fixture(scope="module")
def w2v() -> nn.Module:
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_base().eval()


def test_layer_globs_on_wav2vec2(w2v: nn.Module) -> None:
    assert [n for n, _ in find_layers(w2v, "encoder.transformer.layers.*")] == [
        f"encoder.transformer.layers.{i}" for i in range(12)
    ]
    deep = find_layers(w2v, "encoder.transformer.layers.**")
    assert len(deep) > 100
    assert [n for n, _ in find_layers(w2v, "**.attention.out_proj")][:2] == [
        "encoder.transformer.layers.0.attention.out_proj",
        "encoder.transformer.layers.1.attention.out_proj",
    ]
    layer3 = w2v.encoder.transformer.layers[3]
    assert find_layers(w2v, [layer3, "encoder.transformer.layers.3"]) == [("encoder.transformer.layers.3", layer3)]


def test_unknown_layer_lists_close_matches(w2v: nn.Module) -> None:
    with pytest.raises(LayerNotFoundError, match=r"close matches: \['encoder.transformer.layer_norm"):
        Recorder(w2v, "encoder.transformer.layer_nrom")
    with pytest.raises(LayerNotFoundError, match="matches no layer.*encoder.transformer.layers"):
        Recorder(w2v, "encoder.transformer.layer.*")


@pytest.mark.parametrize("builder", ["wav2vec2_base", "hubert_base"])
def test_torchaudio_layers_and_lengths_match_extract_features(builder: str, w2v: nn.Module) -> None:
    torch.manual_seed(1)
    model = w2v if builder == "wav2vec2_base" else torchaudio.models.hubert_base().eval()
    wave = torch.randn(3, 12000)
    lengths = torch.tensor([12000, 7000, 4100])
    with torch.no_grad():
        layers, ref_lengths = model.extract_features(wave, lengths)
        plain, _ = model(wave, lengths)
    # per-block conv lengths as torchaudio's own ConvLayerBlock reports them
    conv_lengths: dict[str, torch.Tensor] = {}
    handles = [
        blk.register_forward_hook(lambda m, a, o, i=i: conv_lengths.__setitem__(f"feature_extractor.conv_layers.{i}", o[1]))
        for i, blk in enumerate(model.feature_extractor.conv_layers)
    ]
    with torch.no_grad():
        model(wave, lengths)
    for h in handles:
        h.remove()
    rec = Recorder(
        model,
        ["feature_extractor.conv_layers.*", "encoder.transformer.layers.*"],
        pooling="stats",
        overrides={"feature_extractor.**": {"pooling": "mean"}},
    )
    with rec, rec.batch(["u1", "u2", "u3"], lengths=lengths), torch.inference_mode():
        recorded, _ = model(wave, lengths)
    assert torch.equal(plain, recorded)
    feats = rec.features()
    for name, n in conv_lengths.items():
        assert torch.equal(rec.last_lengths[name], n), name
    for i, frames in enumerate(layers):
        name = f"encoder.transformer.layers.{i}"
        assert torch.equal(rec.last_lengths[name], ref_lengths), name
        assert rel_err(feats.select_layers(name).values, naive_pool(frames, ref_lengths, "stats")) <= 1e-5, name
    assert feats.values.shape == (3, 7 * 512 + 12 * 2 * 768)
    assert hook_count(model) == 0


def test_wavlm_records_without_lengths() -> None:
    torch.manual_seed(2)
    model = torchaudio.models.wavlm_base().eval()
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        layers, _ = model.extract_features(wave)
    rec = Recorder(model, "encoder.transformer.layers.*")
    with rec, rec.batch(["a", "b"]), torch.no_grad():
        model(wave)  # wavlm_base with lengths raises AssertionError upstream; none are needed here
    feats = rec.features()
    for i, frames in enumerate(layers):
        ref = naive_pool(frames, [frames.shape[1]] * 2, "mean")
        assert rel_err(feats.select_layers(f"encoder.transformer.layers.{i}").values, ref) <= 1e-5


# ------------------------------------------------------------------ transformer encoder, LSTM
class TinyTransformer(nn.Module):
    """Batch-first nn.TransformerEncoder over (B, T, 12) inputs with a key padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.proj(x), src_key_padding_mask=pad)
        return self.head(h.mean(1))


def test_transformer_encoder_stats_and_padding_mask() -> None:
    torch.manual_seed(3)
    model = TinyTransformer().eval()
    x = torch.randn(3, 21, 12)
    lengths = torch.tensor([21, 13, 4])
    pad = torch.arange(21)[None] >= lengths[:, None]
    keep = Keep({f"encoder.layers.{i}": model.encoder.layers[i] for i in range(2)})
    with torch.no_grad():
        plain = model(x, pad)
    keep.close()
    rec = Recorder(model, "encoder.layers.*", pooling="stats")
    with rec, rec.batch([10, 11, 12], padding_mask=pad), torch.no_grad():
        recorded = model(x, pad)
    assert torch.equal(plain, recorded)
    feats = rec.features()
    assert feats.ids == [10, 11, 12]
    for name, out in keep.out.items():
        assert rel_err(feats.select_layers(name).values, naive_pool(out, lengths, "stats")) <= 1e-5


def test_training_mode_outputs_and_gradients_unchanged() -> None:
    model = TinyTransformer().train()
    x = torch.randn(2, 9, 12)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    grads = []
    outs = []
    for use in (False, True):
        model.zero_grad()
        torch.manual_seed(5)  # same dropout masks
        rec = Recorder(model, ["encoder.layers.*", "proj"], pooling="stats", layout="BTD")
        if use:
            with rec, rec.batch(["a", "b"], lengths=[9, 6]):
                out = model(x, pad)
        else:
            out = model(x, pad)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_split_lstm_equals_original_and_records_every_layer() -> None:
    torch.manual_seed(6)
    lstm = nn.LSTM(10, 14, num_layers=3, batch_first=True, bidirectional=True)
    split = split_rnn(lstm)
    x = torch.randn(3, 25, 10)
    h0 = torch.randn(6, 3, 14), torch.randn(6, 3, 14)
    a, (ha, ca) = lstm(x, h0)
    b, (hb, cb) = split(x, h0)
    for u, v in ((a, b), (ha, hb), (ca, cb)):
        assert (u - v).abs().max() <= 1e-6
    assert split.layers[1].weight_hh_l0 is lstm.weight_hh_l1  # shared, not copied
    gru = nn.GRU(10, 8, num_layers=2)
    (ga, gh), (gb, gk) = gru(x.transpose(0, 1)), split_rnn(gru)(x.transpose(0, 1))
    assert (ga - gb).abs().max() <= 1e-6 and (gh - gk).abs().max() <= 1e-6

    model = nn.Sequential()
    model.add_module("rnn", split)
    lengths = torch.tensor([25, 18, 3])
    keep = Keep({f"rnn.layers.{i}": split.layers[i] for i in range(3)})
    with torch.no_grad():
        model(x)
    keep.close()
    rec = Recorder(model, "rnn.layers.*", pooling="mean")
    with rec, rec.batch(["x", "y", "z"], lengths=lengths), torch.no_grad():
        model(x)
    feats = rec.features()
    for name, out in keep.out.items():
        assert rel_err(feats.select_layers(name).values, naive_pool(out, lengths, "mean")) <= 1e-5

    # packed sequences carry their own exact lengths
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    rec2 = Recorder(model, "rnn.layers.2", pooling="mean")
    with rec2, rec2.batch(["x", "y", "z"]), torch.no_grad():
        out_packed, _ = model(packed)
    assert torch.equal(rec2.last_lengths["rnn.layers.2"], lengths)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True)
    assert rel_err(rec2.features().values, naive_pool(padded, lengths, "mean")) <= 1e-5


# ------------------------------------------------------------------ streaming, dtypes, wrappers
class Framewise(nn.Module):
    """Per-frame model (kernel-1 convs) so chunked inference is exact: input (B, 8, T)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(8, 16, 1)
        self.c2 = nn.Conv1d(16, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def test_chunked_streaming_equals_one_shot_under_dataparallel() -> None:
    torch.manual_seed(7)
    inner = Framewise()
    model = nn.DataParallel(inner)
    x = torch.randn(3, 8, 50)
    lengths = [50, 31, 9]
    one = Recorder(model, ["c1", "c2"], pooling="stats")
    with one, one.batch(["a", "b", "c"], lengths=lengths), torch.no_grad():
        model(x)
    stream = Recorder(model, ["c1", "c2"], pooling="stats")
    with stream, torch.no_grad():
        for start in range(0, 50, 16):
            piece = x[:, :, start : start + 16]
            plens = [max(0, min(n, start + 16) - start) for n in lengths]
            with stream.batch(["c", "a", "b"], lengths=[plens[2], plens[0], plens[1]]):
                model(piece[[2, 0, 1]])
    a, b = one.features(), stream.features()
    assert b.ids == ["c", "a", "b"]
    np.testing.assert_allclose(b.select_ids(["a", "b", "c"]).values, a.values, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ref = naive_pool(inner.c2(torch.relu(inner.c1(x))).transpose(1, 2), lengths, "stats")
    assert rel_err(a.select_layers("c2").values, ref) <= 1e-5


def test_distributed_data_parallel_wrapper(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        inner = Framewise()
        model = nn.parallel.DistributedDataParallel(inner)
        x = torch.randn(2, 8, 12)
        rec = Recorder(model, "c2", pooling="stats")
        with rec, rec.batch(["a", "b"], lengths=[12, 5]), torch.no_grad():
            out = model(x)
        assert rel_err(rec.features().values, naive_pool(out.transpose(1, 2), [12, 5], "stats")) <= 1e-5
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model(dtype: torch.dtype) -> None:
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)
    x = torch.randn(2, 30, 8).to(dtype)
    keep = Keep({"2": model[2]})
    with torch.no_grad():
        model(x)
    keep.close()
    rec = Recorder(model, "2", pooling="stats", layout="BTD")
    with rec, rec.batch(["p", "q"], lengths=[30, 11]), torch.no_grad():
        model(x)
    values = rec.features().values
    assert values.dtype == np.float32
    assert rel_err(values, naive_pool(keep.out["2"], [30, 11], "stats")) <= 1e-5


# ------------------------------------------------------------------------------ other layouts
class Spectro2d(nn.Module):
    """2-D conv over (B, 1, F=10, T) with time stride 2: neurons are (channel, frequency) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=(3, 5), stride=(1, 2), padding=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_conv2d_layout_and_length_arithmetic() -> None:
    torch.manual_seed(9)
    model = Spectro2d()
    x = torch.randn(2, 1, 10, 40)
    lengths = torch.tensor([40, 23])
    with torch.no_grad():
        out = model(x)  # (B, C=3, F=10, T')
    rec = Recorder(model, "conv", pooling="mean", input_time_axis=-1)
    with rec, rec.batch(["a", "b"], lengths=lengths), torch.no_grad():
        model(x)
    expect = torch.div(lengths + 2 - 4 - 1, 2, rounding_mode="floor") + 1
    assert torch.equal(rec.last_lengths["conv"], expect)
    ref = naive_pool(out.permute(0, 3, 1, 2).reshape(2, out.shape[3], -1), expect, "mean")
    feats = rec.features()
    assert feats.values.shape == (2, 30)
    assert rel_err(feats.values, ref) <= 1e-5
    assert feats.layers[0].unit_shape == (3, 10)


class Decimate(nn.Module):
    """Opaque downsampling (slicing) with no conv arithmetic to follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, ::2]


def test_proportional_fallback_warns_and_adapter_lengths_are_exact() -> None:
    model = nn.Sequential(nn.Linear(4, 4), Decimate())
    x = torch.randn(2, 20, 4)
    rec = Recorder(model, "1", layout="BTD")
    with pytest.warns(RuntimeWarning, match="'1'"):
        with rec, rec.batch(["a", "b"], lengths=[20, 7]):
            model(x)
    assert rec.last_lengths["1"].tolist() == [10, 4]
    exact = Recorder(model, "1", layout="BTD", overrides={"1": {"lengths": lambda n: (n + 1) // 2}})
    with exact, exact.batch(["a", "b"], lengths=[20, 7]):
        y = model(x)
    assert exact.last_lengths["1"].tolist() == [10, 4]
    assert rel_err(exact.features().values, naive_pool(y.detach(), [10, 4], "mean")) <= 1e-5


def test_lengths_overrides_are_clamped_to_the_layers_frames() -> None:
    """An override's lengths outside [0, frames] are clamped, whether computed in the pre-hook or not."""
    model = nn.Sequential(nn.Linear(4, 4), Decimate())
    x = torch.randn(3, 20, 4)
    rec = Recorder(model, "1", layout="BTD", overrides={"1": {"lengths": lambda n: n - 8}})  # 12, -1, 2
    with rec, rec.batch(["a", "b", "c"], lengths=[20, 7, 10]):
        y = model(x)
    assert rec.last_lengths["1"].tolist() == [10, 0, 2]
    with pytest.raises(ValueError, match=r"saw no valid frame of utterances \['b'\]"):
        rec.features()
    with rec, rec.batch(["d"], lengths=[20]):  # the model's input only: the layer called directly
        rec.model[1](y[:1])
    assert rec.last_lengths["1"].tolist() == [5]  # 12 clamped to the 5 frames of this output


def test_output_selection_dict_and_callable() -> None:
    class DictOut(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"hidden": x * 2, "aux": x + 1}

    model = nn.Sequential(DictOut())
    x = torch.randn(1, 5, 3)
    for output, scale in ((None, 2), ("aux", None), (lambda o: o["aux"] * 0, 0)):
        rec = Recorder(model, "0", layout="BTD", output=output)
        with rec, rec.batch(["u"]):
            model(x)
        want = (x + 1) if scale is None else x * scale
        np.testing.assert_allclose(rec.features().values[0], want[0].mean(0).numpy(), rtol=1e-6, atol=1e-7)


def test_unknown_layout_error_names_layer_and_shape() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    rec = Recorder(model, "0")
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) with output shape \(2, 7, 4\)"):
        with rec, rec.batch(["a", "b"]):
            model(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="unknown layout 'BXT'"):
        Recorder(model, "0", overrides={"0": {"layout": "BXT"}})


# ------------------------------------------------------------------------ hook lifecycle, misc
def test_hooks_removed_after_block_exception_and_interrupt() -> None:
    model = Framewise()
    rec = Recorder(model, ["c1", "c2"])
    with rec:
        assert hook_count(model) > 0
    assert hook_count(model) == 0
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with rec, rec.batch(["a"]):
                assert hook_count(model) > 0
                raise exc()
        assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="outside `with rec.batch"):
        with rec:
            model(torch.randn(1, 8, 4))
    assert hook_count(model) == 0


def test_profiler_sees_record_function_ranges() -> None:
    model = Framewise()
    rec = Recorder(model, ["c1", "c2"])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with rec, rec.batch(["a"]):
            model(torch.randn(1, 8, 4))
    names = {e.name for e in prof.events()}
    assert {"neurohook/c1", "neurohook/c2"} <= names


# ------------------------------------------------------------------------------------ Features
def small_features(ids: list[str], seed: int) -> Features:
    model = Framewise()
    torch.manual_seed(seed)
    rec = Recorder(model, ["c1", "c2"], pooling="stats", overrides={"c1": {"pooling": "max"}})
    with rec, rec.batch(ids, lengths=[6] * len(ids)), torch.no_grad():
        model(torch.randn(len(ids), 8, 6))
    return rec.features()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_features_save_load_roundtrip_atomic(tmp_path, suffix: str) -> None:
    feats = small_features(["a", "b"], 0)
    path = feats.save(tmp_path / f"f{suffix}")
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    back = Features.load(path)
    np.testing.assert_array_equal(back.values, feats.values)
    assert back.ids == feats.ids and back.layers == feats.layers
    assert [back.unit(i) for i in (0, 16, 17, 22)] == [("c1", 0, "max"), ("c2", 0, "mean"), ("c2", 1, "mean"), ("c2", 0, "std")]


def test_features_concat_and_selection() -> None:
    a, b = small_features(["a", "b"], 0), small_features(["c"], 1)
    both = Features.concat([a, b])
    assert both.ids == ["a", "b", "c"] and both.values.shape == (3, 16 + 12)
    np.testing.assert_array_equal(both.values[2], b.values[0])
    with pytest.raises(ValueError, match="unique"):
        Features.concat([a, a])
    c2 = both.select_layers("c2")
    assert c2.values.shape == (3, 12) and c2.layers[0].name == "c2" and c2.unit(6) == ("c2", 0, "std")
    picked = both.select_neurons([20, 3])
    assert picked.unit(0) == ("c2", 4, "mean") and picked.unit(1) == ("c1", 3, "max")
    np.testing.assert_array_equal(picked.values, both.values[:, [20, 3]])
    with pytest.raises(KeyError, match="no layer 'c3'"):
        both.select_layers("c3")


def test_frame_lengths_follow_a_strided_conv_and_fall_back_to_scaling_by_hand() -> None:
    from neurohook.hooks.frame_lengths import input_time_length, scaled_lengths, trace_lengths

    lengths = torch.tensor([100, 37, 0])
    wave = torch.zeros(3, 100)
    table = {input_time_length(wave, lengths): lengths}
    conv = nn.Conv1d(1, 2, kernel_size=5, stride=2)
    x = wave[:, None]
    trace_lengths(conv, x, conv(x), table)
    assert table[48].tolist() == [48, 17, 0]  # (n - 5) // 2 + 1, never below 0
    assert scaled_lengths(table, 50).tolist() == [50, 18, 0]  # 37 * 50 / 100 = 18.5 rounds to even; 0 stays 0
    assert scaled_lengths({100: torch.tensor([1])}, 10).tolist() == [1]  # any input frame keeps one
    with pytest.raises(ValueError, match="cannot tell the time axis"):
        input_time_length(torch.zeros(3, 100, 100), lengths)
