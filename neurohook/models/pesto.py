"""PESTO pitch estimator (checkpoint ``mir-1k_g7``) as hookable eager modules.

The pretrained weights ship inside the PyPI wheel ``pesto-pitch`` (``pesto/weights/mir-1k_g7.ckpt``).
Install it without its dependencies; the package itself is never imported::

    pip install --no-deps pesto-pitch

The checkpoint holds omegaconf objects (its hyper-parameters), so ``torch.load(weights_only=True)``
refuses it; it is read with the restricted unpickler of :func:`neurohook.models.wheels.read_archive`
(omegaconf classes become inert placeholders; nothing from the file is run), and its architecture
fields are checked against this port. The older ``mir-1k.ckpt`` (no confidence head, other layer
names) is not supported.

Front-end (:class:`PestoCQT`, the package's HCQT with one harmonic): variable-Q CQT (fmin 27.5 Hz
shifted to centre the bins, 3 bins per semitone, 251 bins, gamma 7, Hann windows, L1-normalised
kernels of width 4096) as a strided convolution, hop 160 (10 ms at 16 kHz), each utterance
reflect-padded by 2048 on its own samples (so at least 2049 samples), "librosa" scaling by
sqrt(kernel length), 20 log10 |CQT| -> (B, 1 + samples // 160, 251) dB. As in the package, the
network sees dB x ln(10) / 10, cropped to bins 16..234 (219 bins), and the confidence head the
power 10^(dB / 10). Network, per frame: LayerNorm(1 x 219); ``conv1`` = Conv1d(1 -> 40, k39) +
LeakyReLU(0.3); ``prefilt.0``, ``prefilt.1`` = the same 40 -> 40 with residual sums; ``mix.0..3``
= 1x1 convs 40 -> 30 -> 30 -> 10 -> 3 + LeakyReLU; ``fc`` = Toeplitz linear (657 -> 384 logits);
softmax, rolled by the checkpoint's shift -> activations (B, frames, 384) over 128 semitones.
``confidence`` = the package's voicing head. Dropout (0.2) only in training mode.

Layer outputs: conv blocks give (B, C, frames x 219) (layout "BDT", frame-major: the 219 CQT bins
of frame 0, then of frame 1, ...), so mean pooling gives each channel's mean over bins and frames;
``fc`` gives the 384 logits per frame.

Checked (tests/test_pretrained.py): activations, confidence and pitch equal those of the package's
own ``pesto.load_model("mir-1k_g7", 10., 16000)`` within 1e-4 (when omegaconf is installed;
measured: activations and pitch bit-equal, confidence 1.2e-7, volume 4e-7 relative; the CQT kernels
bit-equal), and pooled features of a zero-padded batch equal those of each utterance alone.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurohook.models.base import ChannelsLastConv1d, ProbeLayers, SpeechModel
from neurohook.models.wheels import Inert, read_archive, wheel_file

__all__ = ["INSTALL_HINT", "PestoCQT", "PestoPitch", "alwa", "build_pesto",
           "cqt_kernels", "read_checkpoint", "weights_path"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps pesto-pitch"
_EPS = torch.finfo(torch.float32).eps


def weights_path(checkpoint: str = "mir-1k_g7") -> Path:
    """Path of ``pesto/weights/<checkpoint>.ckpt`` inside the installed wheel (package not imported)."""
    return wheel_file("pesto-pitch", ("pesto", "weights", f"{checkpoint}.ckpt"), INSTALL_HINT,
                      "pesto: the pretrained pitch estimator")


def _plain(obj: Any) -> Any:
    """omegaconf containers and nodes (as :class:`Inert`) -> plain dicts, lists and values."""
    if isinstance(obj, Inert):
        state = vars(obj)
        return _plain(state["_content"]) if "_content" in state else _plain(state.get("_val", None))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A PESTO checkpoint as plain values: ``state_dict``, ``hparams``, ``hcqt_params`` (no code run)."""
    ck = read_archive(path, ("omegaconf.", "typing.Any"))
    return {"state_dict": dict(ck["state_dict"]), "hparams": _plain(ck["hparams"]), "hcqt_params": _plain(ck["hcqt_params"])}


def cqt_kernels(sr: int, fmin: float, n_bins: int, bins_per_octave: int, gamma: float) -> tuple[Tensor, Tensor]:
    """The package's (nnAudio's) time-domain CQT kernels: weight (2 n_bins, 1, width) [real; -imag] and lengths (n_bins,)."""
    weight, lengths = _cqt_kernels(sr, fmin, n_bins, bins_per_octave, gamma)
    return weight.clone(), lengths.clone()


@functools.lru_cache(maxsize=4)
def _cqt_kernels(sr: int, fmin: float, n_bins: int, bins_per_octave: int, gamma: float) -> tuple[Tensor, Tensor]:
    alpha = 2.0 ** (1.0 / bins_per_octave) - 1.0
    freqs = fmin * 2.0 ** (torch.arange(n_bins, dtype=torch.float64) / bins_per_octave)
    lengths = torch.ceil((1.0 / alpha) * sr / (freqs + gamma / alpha))
    width = int(2 ** math.ceil(math.log2(float(lengths.max()))))
    n = lengths[:, None]  # (n_bins, 1); kernel k spans [start_k, start_k + n_k) of the width
    start = torch.ceil(width / 2 - n / 2) - torch.remainder(n, 2)
    pos = torch.arange(width, dtype=torch.float64)[None, :] - start  # 0 .. n_k - 1 inside the kernel
    inside = (pos >= 0) & (pos < n)
    win = 0.5 - 0.5 * torch.cos(2 * math.pi * pos / n)  # periodic Hann of length n_k
    phase = (pos + torch.floor(-n / 2)) * 2 * math.pi * freqs[:, None] / sr
    sig = torch.where(inside, win * torch.exp(1j * phase) / n, torch.zeros((), dtype=torch.complex128))
    kernels = sig / sig.abs().sum(dim=1, keepdim=True)  # L1-normalised
    kernels = kernels.to(torch.complex64)
    return torch.cat([kernels.real, -kernels.imag])[:, None, :].contiguous(), lengths.float()


def alwa(activations: Tensor, bins_per_semitone: int = 3) -> Tensor:
    """Argmax-local weighted average of activations (..., 128 * bps) -> pitch in fractional MIDI semitones."""
    n = activations.shape[-1]
    pitches = torch.arange(n, dtype=activations.dtype, device=activations.device) / bins_per_semitone
    window = torch.arange(1, 2 * bins_per_semitone, device=activations.device) - bins_per_semitone
    idx = (activations.argmax(dim=-1, keepdim=True) + window).clamp(0, n - 1)
    act = activations.gather(-1, idx)
    return (act * pitches.expand_as(activations).gather(-1, idx)).sum(-1) / act.sum(-1)


class PestoCQT(nn.Module):
    """Waveforms (B, S), lengths (B,) -> CQT magnitudes in dB (B, 1 + S // hop, n_bins), frame lengths (B,)."""

    def __init__(self, hop: int = 160, fmin: float = 27.5, bins_per_semitone: int = 3, n_bins: int = 251,
                 gamma: float = 7.0, sr: int = 16000) -> None:
        super().__init__()
        self.hop = hop
        fmin = fmin / 2 ** ((bins_per_semitone - 1) / (24 * bins_per_semitone))  # centre_bins
        weight, lengths = cqt_kernels(sr, fmin, n_bins, 12 * bins_per_semitone, gamma)
        self.register_buffer("weight", weight, persistent=False)  # computed, never loaded
        self.register_buffer("sqrt_lengths", lengths.sqrt()[:, None], persistent=False)
        self.pad = weight.shape[-1] // 2
        #: Reflect padding needs more samples than it pads.
        self.min_samples = self.pad + 1

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) for valid samples (B,): 1 + samples // hop."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Each utterance alone (reflect-padded on its own valid samples, so exactly as unbatched), frames
        past its length zero."""
        frames = self.frame_lengths(lengths)
        cqt = waves.new_zeros(waves.shape[0], self.weight.shape[0], waves.shape[1] // self.hop + 1)
        for b, n in enumerate(lengths.tolist()):
            x = F.pad(waves[b : b + 1, None, :n], (self.pad, self.pad), mode="reflect")
            cqt[b, :, : int(frames[b])] = F.conv1d(x, self.weight, stride=self.hop)[0]
        cqt = cqt.view(waves.shape[0], 2, -1, cqt.shape[-1]) * self.sqrt_lengths
        mag = torch.view_as_complex(cqt.permute(0, 3, 2, 1).contiguous()).abs()  # (B, T, n_bins)
        return mag.clamp(min=_EPS).log10().mul(20), frames


class _Confidence(nn.Module):
    """The package's voicing head: power spectrum per frame (N, 251) -> confidence in [0, 1] (N,)."""

    def __init__(self, n_bins: int = 251) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 39, stride=3)
        self.linear = nn.Linear((n_bins - 39) // 3 + 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        flatness = x.log().mean(dim=-1, keepdim=True).exp() / x.mean(dim=-1, keepdim=True).clamp(min=1e-8)
        h = torch.relu(self.conv(x[:, None]).squeeze(1))
        return torch.sigmoid(self.linear(torch.cat((h, flatness), dim=-1))).squeeze(-1)


class _BinConv(nn.Module):
    """Conv1d over the CQT bins of every frame + LeakyReLU (+ dropout, + input if residual):
    (B, C_in, T * bins) -> (B, C_out, T * bins)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bins: int, slope: float, p_dropout: float,
                 residual: bool = False) -> None:
        super().__init__()
        self.bins, self.residual = bins, residual
        self.conv = ChannelsLastConv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.act = nn.LeakyReLU(slope)
        self.dropout = nn.Dropout(p_dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        h = x.reshape(b, c, n // self.bins, self.bins).transpose(1, 2).reshape(-1, c, self.bins)
        y = self.dropout(self.act(self.conv(h)))
        y = y + h if self.residual else y
        return y.reshape(b, n // self.bins, y.shape[1], self.bins).transpose(1, 2).reshape(b, y.shape[1], n)


class _Toeplitz(nn.Module):
    """The package's ToeplitzLinear per frame: (B, C, T * bins) -> logits (B, T, out), input flattened channel-major.

    The package's Conv1d (kernel ``bins * C + out - 1``, padding ``out - 1``) equals one matrix
    product with the (bins * C, out) Toeplitz matrix of its kernel, built from it at every call: the
    same sums, about 10x faster on CPU than the long one-channel convolution.
    """

    def __init__(self, bins: int, channels: int, out: int) -> None:
        super().__init__()
        self.bins, self.out = bins, out
        self.conv = nn.Conv1d(1, 1, bins * channels + out - 1, padding=out - 1, bias=False)  # holds the kernel

    def matrix(self) -> Tensor:
        """(bins * C, out): entry [i, j] = kernel[i - j + out - 1], so x @ matrix is the padded convolution."""
        kernel = self.conv.weight[0, 0]
        return kernel.unfold(0, len(kernel) - self.out + 1, 1).flip(0).T

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        frames = x.reshape(b, c, n // self.bins, self.bins).transpose(1, 2).reshape(b, n // self.bins, c * self.bins)
        return frames @ self.matrix()


class PestoPitch(SpeechModel):
    """Waveforms (B, samples) at 16 kHz -> pitch activations (B, 1 + samples // 160, 384) over 128 semitones."""

    name = "pesto"

    def __init__(self, channels: tuple[int, ...] = (40, 30, 30, 10, 3), kernel: int = 39, prefilt: int = 2,
                 n_bins: int = 251, crop: int = 16, output_dim: int = 384, slope: float = 0.3,
                 p_dropout: float = 0.2, bins_per_semitone: int = 3, gamma: float = 7.0, hop: int = 160) -> None:
        super().__init__()
        channels = tuple(channels)
        self.config = {"name": self.name, "channels": list(channels), "kernel": kernel, "prefilt": prefilt,
                       "n_bins": n_bins, "crop": crop, "output_dim": output_dim, "slope": slope, "p_dropout": p_dropout,
                       "bins_per_semitone": bins_per_semitone, "gamma": gamma, "hop": hop}
        self.frontend = PestoCQT(hop, bins_per_semitone=bins_per_semitone, n_bins=n_bins, gamma=gamma)
        self.confidence = _Confidence(n_bins)
        self.crop, self.bins_per_semitone = crop, bins_per_semitone
        bins = n_bins - 2 * crop
        self.layernorm = nn.LayerNorm([1, bins])
        self.conv1 = _BinConv(1, channels[0], kernel, bins, slope, p_dropout)
        self.prefilt = nn.ModuleList(
            _BinConv(channels[0], channels[0], kernel, bins, slope, p_dropout, residual=True) for _ in range(prefilt))
        self.mix = nn.ModuleList(
            _BinConv(a, b, 1, bins, slope, p_dropout) for a, b in zip(channels[:-1], channels[1:]))
        self.fc = _Toeplitz(bins, channels[-1], output_dim)
        self.register_buffer("shift", torch.zeros(()))

    def load_reference_state(self, state: dict[str, Tensor]) -> None:
        """Load a PESTO ``state_dict`` (``encoder.*``, ``confidence.*``, ``shift``)."""
        mine: dict[str, Tensor] = {"shift": state["shift"], "fc.conv.weight": state["encoder.fc.weight"]}
        for p in ("weight", "bias"):
            mine[f"layernorm.{p}"] = state[f"encoder.layernorm.{p}"]
            mine[f"conv1.conv.{p}"] = state[f"encoder.conv1.0.{p}"]
            for k in range(len(self.prefilt)):
                mine[f"prefilt.{k}.conv.{p}"] = state[f"encoder.prefilt_layers.{k}.0.{p}"]
            for k in range(len(self.mix)):
                mine[f"mix.{k}.conv.{p}"] = state[f"encoder.conv_layers.{3 * k}.{p}"]
            mine[f"confidence.conv.{p}"] = state[f"confidence.conv.{p}"]
            mine[f"confidence.linear.{p}"] = state[f"confidence.linear.{p}"]
        self.load_state_dict(mine, strict=True)

    @property
    def blocks(self) -> list[str]:
        """Names of the conv blocks in order."""
        return ["conv1", *(f"prefilt.{k}" for k in range(len(self.prefilt))), *(f"mix.{k}" for k in range(len(self.mix)))]

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """CQT frames (B,) for valid samples (B,)."""
        return self.frontend.frame_lengths(lengths)

    def layer_lengths(self, layer: str, lengths: Tensor) -> Tensor:
        """Valid steps (B,): frames x bins (conv blocks), or frames (front-end, fc)."""
        frames = self.frame_lengths(lengths)
        if layer in ("frontend", "fc"):
            return frames
        if layer in self.blocks:
            return frames * self.conv1.bins
        raise KeyError(f"pesto: no layer {layer!r}; use {', '.join(self.blocks)} or fc")

    def probe_spec(self) -> ProbeLayers:
        """The conv blocks (channels over bins and valid frames) and ``fc`` (384 logits per frame), mean-pooled:
        40 x 3 + 30 + 30 + 10 + 3 + 384 = 577 neurons."""
        overrides: dict[str, dict[str, Any]] = {n: {"layout": "BDT", "lengths": self.lengths_fn(n)} for n in self.blocks}
        overrides["fc"] = {"layout": "BTD", "lengths": self.lengths_fn("fc")}
        return ProbeLayers([*self.blocks, "fc"], "mean", overrides)

    def forward(self, waves: Tensor, lengths: Tensor | None = None, *,
                with_confidence: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Waveforms (B, samples), lengths (B,) -> activations (B, T, 384); ``with_confidence``: also the
        voicing confidence (B, T) and volume (summed CQT power) (B, T)."""
        lens = self.valid_lengths(waves, lengths)
        db, _ = self.frontend(waves, lens)  # (B, T, n_bins)
        b, t, n_bins = db.shape
        x = db * (math.log(10) / 10.0)  # natural-log power, as the package's in-place scaling
        energy = x.exp()
        x = self.layernorm(x[..., self.crop : n_bins - self.crop].reshape(b * t, 1, -1))
        x = self.conv1(x.reshape(b, t, -1)[:, None, :].reshape(b, 1, -1))
        for block in [*self.prefilt, *self.mix]:
            x = block(x)
        act = torch.softmax(self.fc(x), dim=-1)
        act = act.roll(-round(float(self.shift) * self.bins_per_semitone), -1)
        if not with_confidence:
            return act
        conf = self.confidence(energy.reshape(b * t, n_bins)).reshape(b, t)
        return act, conf, energy.sum(-1)

    def pitch(self, waves: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pitch (B, T) in Hz (argmax-local weighted average) and voicing confidence (B, T)."""
        act, conf, _ = self(waves, lengths, with_confidence=True)
        semitones = alwa(act, self.bins_per_semitone)
        return 440 * 2 ** ((semitones - 69) / 12), conf


def _config_from(ck: dict[str, Any]) -> dict[str, Any]:
    """PestoPitch keyword arguments from a checkpoint's hyper-parameters (unsupported variants raise)."""
    enc, hq, shift = ck["hparams"]["encoder"], ck["hcqt_params"], ck["hparams"]["pitch_shift"]
    if list(hq.get("harmonics", [1])) != [1] or hq.get("fmin") != 27.5 or not enc.get("residual") \
            or enc.get("activation_fn") != "leaky" or ck["hparams"].get("reduction") != "alwa" \
            or shift["max_steps"] != -shift["min_steps"] or "confidence.conv.weight" not in ck["state_dict"]:
        raise ValueError(f"pesto: unsupported checkpoint variant (hparams {ck['hparams']}, hcqt {hq})")
    return {"channels": tuple(enc["n_chan_layers"]), "kernel": enc["prefilt_kernel_size"],
            "prefilt": enc["n_prefilt_layers"] - 1, "n_bins": hq["n_bins"], "crop": shift["max_steps"],
            "output_dim": enc["output_dim"], "slope": enc["a_lrelu"], "p_dropout": enc["p_dropout"],
            "bins_per_semitone": hq["bins_per_semitone"], "gamma": hq.get("gamma", 0)}


def build_pesto(pretrained: bool = True, checkpoint: str = "mir-1k_g7", **kwargs: Any) -> PestoPitch:
    """PESTO with the wheel's weights (``pretrained=False``: random weights, the fixed CQT kernels computed)."""
    if not pretrained:
        return PestoPitch(**kwargs).eval()
    path = weights_path(checkpoint)
    ck = read_checkpoint(path)
    model = PestoPitch(**{**_config_from(ck), **kwargs})
    model.load_reference_state(ck["state_dict"])
    logger.info("pesto: loaded pretrained weights from %s", path)
    return model.eval()
