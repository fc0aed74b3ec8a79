"""Silero VAD (v6, 16 kHz) as eager PyTorch modules, so that forward hooks see its layers.

The pretrained model ships inside the PyPI wheel ``silero-vad``; install it without its
dependencies (the package itself is never imported)::

    pip install --no-deps silero-vad

Weights: ``silero_vad/data/silero_vad.jit`` holds the model that the package runs
(``load_silero_vad()``, and the same weights as its ONNX files). Its tensors are read with a
restricted unpickler (:func:`neurohook.models.wheels.read_archive`: tensors, plain containers and inert placeholders only;
no TorchScript or Python code is compiled or run). ``weights="safetensors"`` loads
``silero_vad/data/silero_vad_16k.safetensors`` instead, the file shipped for the tinygrad port:
in silero-vad 6.2.3 it holds *different* weights (probabilities differ from the package's by
up to ~0.2; upstream issue snakers4/silero-vad#768), so it is not the default.

Front-end (:class:`SileroSTFT`): the utterance is cut into 512-sample windows, each with the 64
samples before it as context (zeros before the start), i.e. exactly the package's streaming
``model(chunk, 16000)`` calls; each 576-sample chunk is reflect-padded by 64 on the right and
transformed by a fixed STFT-as-convolution (periodic Hann, n_fft 256, hop 128) into magnitudes
(129 bins x 4 sub-frames). Network: ``encoder.0..3`` = Conv1d(k3, pad 1)+ReLU per window with
channels 129->128->64->64->128 and strides 1, 2, 2, 1 (sub-frames 4, 2, 1, 1 per window); ``lstm`` = the
package's LSTMCell (128) run over the windows as a one-layer LSTM (same equations, state carried
from window to window as in streaming, zero at the start of every forward as after
``reset_states()``); ``head`` = sigmoid(Linear(ReLU(h))) -> speech probability
per window, (B, windows). Only complete windows count: ``lengths // 512`` per utterance.

Layer outputs: the front-end and each encoder block give (B, C, windows x sub-frames) (layout
"BDT", window-major: the sub-frames of window 0, then of window 1, ...), so channels are the
neurons and mean pooling averages over every sub-frame of the valid windows (= the mean over
windows of each window's channel means); ``lstm`` gives the hidden state per window (B, W, 128).

Checked (tests/test_pretrained.py): probabilities equal those of the package's TorchScript model
called chunk by chunk (``reset_states()`` per utterance) within 1e-4 (measured ~3e-7), and pooled
features of a zero-padded batch equal those of each utterance alone.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurohook.models.base import ProbeLayers, SpeechModel
from neurohook.models.wheels import read_torchscript_tensors, wheel_file

__all__ = ["INSTALL_HINT", "SileroSTFT", "SileroVAD", "build_silero", "weights_path"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps silero-vad"
WINDOW = 512
CONTEXT = 64
_FILES = {"jit": "silero_vad.jit", "safetensors": "silero_vad_16k.safetensors"}


def weights_path(kind: str = "jit") -> Path:
    """Path of the silero-vad weights (``"jit"`` or ``"safetensors"``) inside the installed wheel."""
    if kind not in _FILES:
        raise ValueError(f"silero-vad: weights must be one of {sorted(_FILES)}, got {kind!r}")
    return wheel_file("silero-vad", ("silero_vad", "data", _FILES[kind]), INSTALL_HINT, "silero-vad: the pretrained VAD")


# ------------------------------------------------------------------------------------------- model
def _stft_basis(n_fft: int = 256) -> Tensor:
    """(2 * (n_fft // 2 + 1), 1, n_fft): real then imaginary DFT rows times a periodic Hann window."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    ang = 2 * math.pi * k * n / n_fft
    return torch.cat([torch.cos(ang) * win, -torch.sin(ang) * win]).float()[:, None, :]


class SileroSTFT(nn.Module):
    """Waveforms (B, S) -> STFT magnitudes (B, 129, 4 x (S // 512)): 4 sub-frames per 512-sample window."""

    hop = WINDOW
    min_samples = WINDOW
    subframes = 4

    def __init__(self, n_fft: int = 256, stride: int = 128) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("basis", _stft_basis(n_fft))

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Complete windows (B,) for valid samples (B,)."""
        return torch.div(lengths, WINDOW, rounding_mode="floor")

    def forward(self, waves: Tensor) -> Tensor:
        """Each window with its 64-sample context, reflect-padded right by 64, then |STFT|."""
        b, windows = waves.shape[0], waves.shape[1] // WINDOW
        x = F.pad(waves[:, : windows * WINDOW], (CONTEXT, 0))
        chunks = x.unfold(1, CONTEXT + WINDOW, WINDOW).reshape(b * windows, 1, CONTEXT + WINDOW)
        spec = F.conv1d(F.pad(chunks, (0, CONTEXT), mode="reflect"), self.basis, stride=self.stride)
        half = spec.shape[1] // 2
        mag = torch.sqrt(spec[:, :half] ** 2 + spec[:, half:] ** 2)  # (B * W, 129, 4)
        return _join(mag, b)


def _split(x: Tensor, t: int) -> Tensor:
    """(B, C, W * t) -> (B * W, C, t): the sub-frames of each window as one sequence."""
    b, c, n = x.shape
    return x.reshape(b, c, n // t, t).transpose(1, 2).reshape(b * (n // t), c, t)


def _join(y: Tensor, b: int) -> Tensor:
    """(B * W, C, t) -> (B, C, W * t), window-major; the inverse of :func:`_split`."""
    bw, c, t = y.shape
    return y.reshape(b, bw // b, c, t).transpose(1, 2).reshape(b, c, (bw // b) * t)


class _WindowConv(nn.Module):
    """Conv1d(k3, pad 1) + ReLU within every window: (B, C_in, W * t_in) -> (B, C_out, W * t_out)."""

    def __init__(self, c_in: int, c_out: int, stride: int, t_in: int) -> None:
        super().__init__()
        self.t_in = t_in
        self.t_out = (t_in - 1) // stride + 1
        self.conv = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return _join(torch.relu(self.conv(_split(x, self.t_in))), x.shape[0])


class SileroVAD(SpeechModel):
    """Waveforms (B, samples) at 16 kHz -> speech probability per complete 512-sample window (B, W)."""

    name = "silero-vad"
    ENCODER = ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.config = {"name": self.name, "hidden": hidden}
        self.frontend = SileroSTFT()
        self.encoder = nn.ModuleList()
        t = self.frontend.subframes
        for spec in self.ENCODER:
            self.encoder.append(_WindowConv(*spec, t_in=t))
            t = self.encoder[-1].t_out
        self.lstm = nn.LSTM(self.ENCODER[-1][1], hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def load_reference_state(self, state: dict[str, Tensor]) -> None:
        """Load the package's tensors: TorchScript names (``_model.encoder.k.reparam_conv.*``, ...)
        or safetensors names (``stft_conv.weight``, ``conv{k+1}.*``, ``lstm_cell.*``, ``final_conv.*``)."""
        jit = "_model.decoder.rnn.weight_ih" in state
        names = {"frontend.basis": "_model.stft.forward_basis_buffer" if jit else "stft_conv.weight",
                 "head.weight": "_model.decoder.decoder.2.weight" if jit else "final_conv.weight",
                 "head.bias": "_model.decoder.decoder.2.bias" if jit else "final_conv.bias"}
        for k in range(len(self.encoder)):
            for p in ("weight", "bias"):
                names[f"encoder.{k}.conv.{p}"] = f"_model.encoder.{k}.reparam_conv.{p}" if jit else f"conv{k + 1}.{p}"
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"lstm.{p}_l0"] = f"_model.decoder.rnn.{p}" if jit else f"lstm_cell.{p}"
        missing = sorted(v for v in names.values() if v not in state)
        if missing:
            raise KeyError(f"silero-vad: weights lack {missing} (have {sorted(state)[:6]}...)")
        mine = {k: state[v].reshape(1, -1) if k == "head.weight" else state[v] for k, v in names.items()}
        self.load_state_dict(mine, strict=True)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Complete 512-sample windows (B,) for valid samples (B,)."""
        return self.frontend.frame_lengths(lengths)

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid frames (B,): complete windows x sub-frames (front-end, encoder blocks) or windows."""
        windows = self.frame_lengths(lengths)
        if layer == "frontend":
            return windows * self.frontend.subframes
        if layer.startswith("encoder.") and layer[8:].isdigit() and int(layer[8:]) < len(self.encoder):
            return windows * self.encoder[int(layer[8:])].t_out
        if layer in ("lstm", "head"):
            return windows
        raise KeyError(f"silero-vad: no layer {layer!r}; use frontend, encoder.<k>, lstm or head")

    def probe_spec(self) -> ProbeLayers:
        """``encoder.0..3`` (channels over the sub-frames of the valid windows) and ``lstm`` (hidden
        state per window), mean-pooled: 128 + 64 + 64 + 128 + 128 = 512 neurons."""
        names = [f"encoder.{k}" for k in range(len(self.encoder))]
        overrides: dict[str, dict[str, Any]] = {n: {"layout": "BDT", "lengths": self.lengths_fn(n)} for n in names}
        overrides["lstm"] = {"lengths": self.lengths_fn("lstm")}
        return ProbeLayers([*names, "lstm"], "mean", overrides)

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> probabilities (B, samples // 512); windows past an
        utterance's ``lengths // 512`` see its padding and are not valid."""
        self.valid_lengths(waves, lengths)
        x = self.frontend(waves)
        for block in self.encoder:
            x = block(x)
        h, _ = self.lstm(x.transpose(1, 2))  # (B, W, hidden): the streaming state over windows
        return torch.sigmoid(self.head(torch.relu(h))).squeeze(-1)


def build_silero(pretrained: bool = True, weights: str = "jit", **kwargs: Any) -> SileroVAD:
    """Silero VAD with the wheel's weights (``weights`` "jit" or "safetensors"; ``pretrained=False``:
    random weights, the fixed STFT basis computed)."""
    path = weights_path(weights) if pretrained else None  # a missing wheel fails before building
    model = SileroVAD(**kwargs)
    if path is not None:
        if weights == "jit":
            state = read_torchscript_tensors(path)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
        model.load_reference_state(state)
        logger.info("silero-vad: loaded pretrained weights from %s", path)
    return model.eval()
