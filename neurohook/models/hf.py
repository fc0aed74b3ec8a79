"""Hugging Face speech encoders saved in a local folder, as neurohook models (``--model hf:PATH``).

The Recorder needs nothing of this module: it records a ``transformers`` model as it is, with
``rec.batch(ids, attention_mask=mask)`` (or ``lengths=``) around ``model(wave, attention_mask=mask)``,
its layouts inferred and its per-layer lengths following the model's own conv arithmetic (the
feature encoder's ``nn.Conv1d`` s; ``_get_feat_extract_output_lengths`` computes the same).
:func:`load_hf` wraps a saved model so that the ``neurohook extract`` pipeline can call it as every
other model, ``model(waves, lengths)``.

Example::

    model = load_hf("./wav2vec2-base")          # from_pretrained(path, local_files_only=True)
    rec = neurohook.Recorder(model, **neurohook.models.probe_layers(model))

Padding: models whose first conv block uses group norm over time (``feat_extract_norm="group"``:
wav2vec2-base, HuBERT-base) are trained without attention masks, and their outputs change with
zero-padding (as torchaudio's, pytorch/audio#2242). They are given no mask and marked
``padding_invariant = False``: ``neurohook extract`` then runs them one utterance per forward.
Models with ``feat_extract_norm="layer"`` get the attention mask and may be batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neurohook.errors import UserInputError
from neurohook.models.thirdparty import DiscoveredEncoder

__all__ = ["HFSpeechModel", "INSTALL_HINT", "load_hf"]

INSTALL_HINT = 'pip install "neurohook[hf]"  (or: pip install transformers)'


class HFSpeechModel(DiscoveredEncoder):
    """A Hugging Face wav2vec2-style encoder on waveforms (B, samples) -> last hidden state (B, frames, D).

    Layers are named as in the wrapped model under ``model.`` (``model.encoder.layers.3``).
    """

    def __init__(self, model: nn.Module, source: str = "") -> None:
        super().__init__()
        self.model = model
        self.config = {"name": f"hf:{source}" if source else type(model).__name__}
        self.discover_layers()
        norm = getattr(model.config, "feat_extract_norm", "layer")
        self.uses_attention_mask = norm == "layer"
        self.padding_invariant = self.uses_attention_mask

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, samples), lengths (B,) -> last hidden state (B, frames, D)."""
        lens = self.valid_lengths(waves, lengths)
        mask = None
        if lengths is not None and self.uses_attention_mask:
            mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lens[:, None]).long()
        return self.model(waves, attention_mask=mask).last_hidden_state


def load_hf(path: str | Path, **kwargs: Any) -> HFSpeechModel:
    """``transformers.AutoModel.from_pretrained(path, local_files_only=True)`` wrapped, in eval mode.

    Raises :class:`~neurohook.errors.UserInputError` naming the folder when transformers is missing,
    the folder is not a saved model, or the model is not a wav2vec2-style speech encoder.
    """
    try:
        from transformers import AutoModel
    except ImportError:
        raise UserInputError(f"hf:{path}: Hugging Face models need transformers; install it with `{INSTALL_HINT}`") from None
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserInputError(f"hf:{path}: not a saved Hugging Face model (no config.json in that folder; "
                             "save one with model.save_pretrained(folder))")
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise UserInputError(f"hf:{path}: {str(e).splitlines()[0][:300]}") from None
    try:
        return HFSpeechModel(model, str(path)).eval()
    except TypeError:
        raise UserInputError(f"hf:{path}: {type(model).__name__} is not a wav2vec2-style speech encoder (conv "
                             "feature encoder + transformer layers); record it with neurohook.Recorder directly") from None
