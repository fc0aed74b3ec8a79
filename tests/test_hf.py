"""Hugging Face speech encoders (random configs, nothing downloaded): layouts inferred, lengths from the
attention mask or lengths, pooled features equal to the model's own hidden states over valid frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurohook
from neurohook import models

transformers = pytest.importorskip("transformers", reason="the Hugging Face tests need the hf extra (transformers)")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
             conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
FAMILIES = ["Wav2Vec2", "Hubert", "WavLM", "Data2VecAudio"]


def small_model(family: str, norm: str = "layer"):
    config = getattr(transformers, f"{family}Config")(**SMALL, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")
    torch.manual_seed(0)
    return getattr(transformers, f"{family}Model")(config).eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(3, 4000, generator=g)
    lengths = torch.tensor([4000, 2900, 1500])
    wave[torch.arange(4000)[None, :] >= lengths[:, None]] = 0
    mask = (torch.arange(4000)[None, :] < lengths[:, None]).long()
    return wave, lengths, mask


def hf_lengths(model, lengths):
    return model._get_feat_extract_output_lengths(lengths)


@pytest.mark.parametrize("family", FAMILIES)
def test_pooled_layers_equal_the_models_own_hidden_states_over_valid_frames(family):
    model = small_model(family)
    wave, lengths, mask = batch()
    spec = models.probe_layers(model)
    assert spec.layers[-2:] == ["encoder.layers.0", "encoder.layers.1"]
    with neurohook.Recorder(model, spec.layers, "mean") as rec, torch.no_grad():  # no overrides: inferred
        with rec.batch(["a", "b", "c"], attention_mask=mask):
            out = model(wave, attention_mask=mask, output_hidden_states=True)
    feats = rec.features()
    frames = hf_lengths(model, lengths)
    assert torch.equal(rec.last_lengths["encoder.layers.0"], frames)
    # hidden_states[1] is layer 0's output (a stable-layer-norm model's last one is after the final norm)
    cols = feats.columns("encoder.layers.0")
    want = np.stack([out.hidden_states[1][i, : frames[i]].mean(0).numpy() for i in range(3)])
    np.testing.assert_allclose(feats.values[:, cols], want, rtol=1e-5, atol=1e-5)
    conv0 = feats.columns("feature_extractor.conv_layers.0")
    assert len(np.arange(feats.values.shape[1])[conv0]) == 16


@pytest.mark.parametrize("family", ["Wav2Vec2", "WavLM"])
def test_lengths_attention_mask_and_the_probe_layers_lengths_agree(family):
    model = small_model(family)
    wave, lengths, mask = batch(1)
    spec = models.probe_layers(model)
    runs = []
    for how in ("lengths", "attention_mask", "overrides"):
        kw = dict(overrides=spec.overrides) if how == "overrides" else {}
        with neurohook.Recorder(model, spec.layers, "mean", **kw) as rec, torch.no_grad():
            with rec.batch(["a", "b", "c"], **({"attention_mask": mask} if how == "attention_mask" else {"lengths": lengths})):
                model(wave, attention_mask=mask)
        runs.append(rec.features().values)
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=0)
    np.testing.assert_allclose(runs[0], runs[2], rtol=1e-6, atol=1e-6)


def test_a_bad_attention_mask_names_the_convention():
    model = small_model("Wav2Vec2")
    wave, lengths, mask = batch()
    with neurohook.Recorder(model, "encoder.layers.*") as rec:
        with pytest.raises(ValueError, match="attention_mask must be 1 at valid steps"):
            with rec.batch(["a", "b", "c"], attention_mask=1 - mask):
                pass
        with pytest.raises(ValueError, match="one of lengths, padding_mask and attention_mask"):
            with rec.batch(["a", "b", "c"], lengths=lengths, attention_mask=mask):
                pass


def test_whisper_encoder_layers_are_inferred_with_lengths_through_its_convolutions():
    config = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                        num_mel_bins=20, max_source_positions=50, decoder_layers=1,
                                        decoder_attention_heads=2, decoder_ffn_dim=64)
    torch.manual_seed(0)
    enc = transformers.models.whisper.modeling_whisper.WhisperEncoder(config).eval()
    mel = torch.randn(2, 20, 100)  # Whisper pads to max_source_positions * 2 mel frames
    frames = torch.tensor([100, 61])
    with neurohook.Recorder(enc, "layers.*", "mean") as rec, torch.no_grad():
        with rec.batch(["a", "b"], lengths=frames):
            out = enc(mel, output_hidden_states=True)
    valid = (frames - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1
    assert torch.equal(rec.last_lengths["layers.0"], valid)
    want = np.stack([out.hidden_states[1][i, : valid[i]].mean(0).numpy() for i in range(2)])
    np.testing.assert_allclose(rec.features().values[:, :32], want, rtol=1e-5, atol=1e-5)


def test_extract_loads_a_saved_model_offline_and_group_norm_models_run_alone(tmp_path):
    from neurohook.models.hf import load_hf
    from neurohook.errors import UserInputError

    small_model("Wav2Vec2", "group").save_pretrained(tmp_path / "w2v")
    model = load_hf(tmp_path / "w2v")
    assert not model.padding_invariant and not model.uses_attention_mask
    wave, lengths, _ = batch()
    spec = models.probe_layers(model)
    assert spec.layers[-1] == "model.encoder.layers.1"
    with neurohook.Recorder(model, **spec) as rec, torch.no_grad():
        for i in range(3):
            with rec.batch([f"u{i}"], lengths=lengths[i : i + 1]):
                model(wave[i : i + 1, : lengths[i]], lengths[i : i + 1])
    alone = rec.features().values
    with torch.no_grad():
        ref = model.model(wave[2:3, : lengths[2]], output_hidden_states=True).hidden_states[2][0].mean(0).numpy()
    np.testing.assert_allclose(alone[2, -32:], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserInputError, match="no config.json"):
        load_hf(tmp_path / "missing")


def test_cli_extract_records_a_saved_hugging_face_model_and_names_a_bad_folder(tmp_path, capsys):
    from helpers import assert_one_line, cli, write_corpus
    from neurohook.features import Features

    small_model("Wav2Vec2", "layer").save_pretrained(tmp_path / "w2v")
    manifest = write_corpus(tmp_path / "corpus", n=4)
    code, err = cli(capsys, "extract", "--model", f"hf:{tmp_path / 'w2v'}", "--manifest", manifest,
                    "--out", tmp_path / "out")
    assert code == 0, err
    feats = Features.load(tmp_path / "out" / "features.npz")
    assert feats.values.shape == (4, 3 * 16 + 2 * 32) and feats.layer_names[-1] == "model.encoder.layers.1"
    code, err = cli(capsys, "extract", "--model", f"hf:{tmp_path / 'nowhere'}", "--manifest", manifest,
                    "--out", tmp_path / "out2")
    assert_one_line(code, err, "nowhere", "config.json")


def test_the_readme_quick_start_runs_as_written_on_torchaudio_and_hugging_face_models():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    quick = readme[readme.index("## Quick start"):]
    blocks = re.findall(r"```python\n(.*?)```", quick, re.S)[:2]
    assert "torchaudio.models.wav2vec2_base" in blocks[0] and "Wav2Vec2Model" in blocks[1]
    for code in blocks:
        scope: dict = {}
        torch.manual_seed(0)
        exec(compile(code, "README.md", "exec"), scope)
        shown = re.findall(r"# \((\d+), (\d+)\) tensor\(\[(\d+), (\d+)\]\)", code)[-1]  # what the README says it prints
        rec = scope["rec"]
        layer = [n for n in rec.layer_names if re.search(r"(encoder|transformer)\.layers\.0$", n)][0]
        assert rec.features().values.shape == (int(shown[0]), int(shown[1]))
        assert rec.last_lengths[layer].tolist() == [int(shown[2]), int(shown[3])]


def test_describe_prints_a_table_with_the_layouts_the_recorder_infers():
    model = small_model("WavLM")
    wave, _, mask = batch()
    table = models.describe(model, {"input_values": wave, "attention_mask": mask})
    rows = {i.name: i for i in table}
    assert rows["encoder.layers.0"].layout == "BTD" and rows["encoder.layers.0"].output_shape[0] == (3, 199, 32)
    assert rows["feature_extractor.conv_layers.0"].layout == "BDT"
    text = str(table).splitlines()
    assert text[0].split() == ["layer", "type", "output", "shape", "layout", "parameters"]
    assert any(line.startswith("encoder.layers.1 ") and " BTD " in line for line in text)
