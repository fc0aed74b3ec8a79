"""The Resemblyzer GE2E speaker encoder rebuilt on torchaudio, with its 3-layer LSTM split per layer.

The pretrained weights ship inside the PyPI wheel ``resemblyzer`` (``resemblyzer/pretrained.pt``).
Install them without the package's heavy dependencies::

    pip install --no-deps resemblyzer

The file is found through the installed distribution's metadata; the ``resemblyzer`` package
itself (which needs librosa and webrtcvad) is never imported.

Front-end: volume raised to -30 dBFS (never lowered), mel power spectrogram (n_fft 400, hop 160,
centred frames with zero padding, 40 bands, Slaney scale and norm, not log): as the package's
``wav_to_mel_spectrogram`` under librosa >= 0.10, whose STFT pads with zeros (librosa < 0.10 padded
by reflection, which changes only the first and last two frames). Network: LSTM 40 -> 256 x 3
(``lstm.layers.0..2``), ``projection`` = ReLU(Linear 256 -> 256) of the last layer's final hidden
state, L2-normalised.
The reference recipe's silence trimming (webrtcvad) and 1.6 s partial windows are not applied:
the whole utterance is encoded at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from neurohook.hooks.rnn import split_rnn
from neurohook.models.base import ProbeLayers, SpeechModel
from neurohook.models.wheels import wheel_file

__all__ = ["INSTALL_HINT", "ResemblyzerEncoder", "ResemblyzerMel", "build_resemblyzer", "weights_path"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps resemblyzer"


def weights_path() -> Path:
    """Path of ``resemblyzer/pretrained.pt`` inside the installed wheel (package not imported)."""
    return wheel_file("resemblyzer", ("resemblyzer", "pretrained.pt"), INSTALL_HINT,
                      "resemblyzer: the pretrained speaker encoder")


class ResemblyzerMel(nn.Module):
    """Resemblyzer front-end: (B, T), lengths (B,) -> mel power frames (B, N, 40), frame lengths (B,)."""

    hop = 160
    #: Fewest samples accepted: n_fft // 2 + 1 (the first centred frame holds half a window of signal).
    min_samples = 201

    def __init__(self, target_dbfs: float = -30.0) -> None:
        super().__init__()
        self.target_dbfs = target_dbfs
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=16000, n_fft=400, hop_length=160, n_mels=40, power=2.0, norm="slaney", mel_scale="slaney",
            pad_mode="constant",  # librosa >= 0.10's default, as the package's own front-end today
        )

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) for valid samples (B,) (centred STFT): samples // 160 + 1."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def normalize_volume(self, wave: Tensor) -> Tensor:
        """Raise one utterance (T,) to ``target_dbfs`` RMS (never lower it), as the reference recipe."""
        rms = torch.sqrt(torch.mean(wave.double() ** 2))
        if float(rms) <= 0:
            return wave
        change = self.target_dbfs - 20 * torch.log10(rms)
        return wave if float(change) < 0 else wave * (10 ** (change / 20)).to(wave.dtype)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Each utterance on its valid samples only; padded frames are zero."""
        fl = self.frame_lengths(lengths)
        out = waves.new_zeros(waves.shape[0], int(fl.max()), 40)
        for b in range(waves.shape[0]):
            w = self.normalize_volume(waves[b, : int(lengths[b])])
            out[b, : int(fl[b])] = self.mel(w).T
        return out, fl


class _Projection(nn.Module):
    """ReLU(Linear(256 -> 256)) of the final hidden state (B, 256)."""

    def __init__(self, hidden: int, embedding: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, embedding)
        self.relu = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        """(B, hidden) -> (B, embedding), non-negative."""
        return self.relu(self.linear(h))


class ResemblyzerEncoder(SpeechModel):
    """Waveforms (B, samples) -> unit-norm speaker embeddings (B, 256)."""

    name = "resemblyzer"

    def __init__(self, hidden: int = 256, embedding: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        self.config = {"name": "resemblyzer", "hidden": hidden, "embedding": embedding, "num_layers": num_layers}
        self.frontend = ResemblyzerMel()
        self.lstm = split_rnn(nn.LSTM(40, hidden, num_layers, batch_first=True))
        self.projection = _Projection(hidden, embedding)

    def load_reference_state(self, state: dict[str, Tensor]) -> None:
        """Load a Resemblyzer ``model_state`` (keys lstm.*_l{k}, linear.*; similarity_* ignored)."""
        mine: dict[str, Tensor] = {}
        for k in range(len(self.lstm.layers)):
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                key = f"lstm.{p}_l{k}"
                if key not in state:
                    raise KeyError(f"resemblyzer: weights lack {key!r} (have {sorted(state)[:8]}...)")
                mine[f"lstm.layers.{k}.{p}_l0"] = state[key]
        mine["projection.linear.weight"] = state["linear.weight"]
        mine["projection.linear.bias"] = state["linear.bias"]
        missing, unexpected = self.load_state_dict(mine, strict=False)
        missing = [k for k in missing if not k.startswith("frontend.")]  # front-end buffers are fixed
        if missing or unexpected:
            raise KeyError(f"resemblyzer: weights do not fit: missing {missing}, unexpected {unexpected}")

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Mel frames (B,) for valid samples (B,)."""
        return self.frontend.frame_lengths(lengths)

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid frames (B,) of the LSTM layers (ones for the utterance-level projection)."""
        if layer == "projection":
            return torch.ones_like(lengths)
        if layer == "lstm" or layer.startswith("lstm.layers."):
            return self.frame_lengths(lengths)
        raise KeyError(f"resemblyzer: no layer {layer!r}; use lstm.layers.<k> or projection")

    def probe_spec(self) -> ProbeLayers:
        """LSTM layers 1-3 (mean-pooled over valid frames) and the projection (ReLU output)."""
        names = [f"lstm.layers.{k}" for k in range(len(self.lstm.layers))]
        overrides = {n: {"lengths": self.lengths_fn(n)} for n in names}
        return ProbeLayers([*names, "projection"], "mean", overrides)

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> L2-normalised embeddings (B, 256)."""
        lens = self.valid_lengths(waves, lengths)
        mels, fl = self.frontend(waves, lens)
        whole = bool((fl == mels.shape[1]).all())
        x = mels if whole else pack_padded_sequence(mels, fl.cpu(), batch_first=True, enforce_sorted=False)
        for layer in self.lstm.layers:  # the last layer's output at each last valid frame: its final state
            x, _ = layer(x)  # (h_n[-1] of the package), read from the output an ablation edits
        out = x if whole else pad_packed_sequence(x, batch_first=True)[0]
        e = self.projection(out[torch.arange(out.shape[0]), fl - 1])  # one utterance's fl broadcasts (prefix sharing)
        return e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)


def build_resemblyzer(pretrained: bool = True, **kwargs: Any) -> ResemblyzerEncoder:
    """The encoder with the wheel's pretrained weights (``pretrained=False``: random weights)."""
    model = ResemblyzerEncoder(**kwargs)
    if pretrained:
        path = weights_path()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.load_reference_state(ckpt["model_state"])
        logger.info("resemblyzer: loaded pretrained weights from %s (step %s)", path, ckpt.get("step"))
    model.eval()
    return model
