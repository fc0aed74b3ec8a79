"""Make ``tests/data/resemblyzer_reference.npz``: the ``resemblyzer`` package's own inference on the
three synthetic clips of ``tests/test_resemblyzer_reference.py`` (imported from there).

How the reference is made, with the package itself rather than neurohook's port:

* volume: ``resemblyzer.audio.normalize_volume(wav, -30, increase_only=True)``, the normalisation
  step of the package's ``preprocess_wav`` (no resampling: the clips are 16 kHz; no
  ``trim_long_silences``, which the port does not apply either);
* mel: ``resemblyzer.audio.wav_to_mel_spectrogram(wav)`` (librosa's melspectrogram, n_fft 400,
  hop 160, 40 bands), stored for clip 0 as ``mel0`` (frames, 40) float32;
* embedding: ``VoiceEncoder(device="cpu")(torch.from_numpy(mel[None]))``, the network's forward
  on the whole utterance's mel (not ``embed_utterance``'s 1.6 s partial windows, which the port
  does not use), stored as ``embeddings`` (3, 256) float32;
* versions of resemblyzer, librosa, numpy, scipy and torch are stored beside them.

The package imports webrtcvad (a C extension) at import time for its silence trimming, which is not
used here, so a stub module stands in for it. Needs the dev-only tools::

    pip install --no-deps resemblyzer   # the weights; also what neurohook loads
    pip install librosa                 # the package's front-end; not a neurohook dependency

Run from the repository root: ``python benchmarks/make_resemblyzer_reference.py``. It also prints
how far neurohook's port is from the package on all three clips.

The stored file was made with resemblyzer 0.1.4, librosa 0.11.0, numpy 2.4.6, scipy 1.17.1 and
torch 2.9.1 (CPU). librosa >= 0.10 pads the centred STFT with zeros (earlier versions reflected),
so the package's first and last two mel frames depend on the librosa version; the port follows
librosa >= 0.10.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "resemblyzer_reference.npz"


def _versions() -> dict[str, str]:
    return {f"{name}_version": importlib.metadata.version(name) for name in ("resemblyzer", "librosa", "numpy", "scipy", "torch")}


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_resemblyzer_reference import CLIPS, make_clip

    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))  # VAD trimming is not used
    from resemblyzer import VoiceEncoder, audio

    torch.set_num_threads(1)
    package = VoiceEncoder(device="cpu", verbose=False).eval()
    mels, embeddings = [], []
    for params in CLIPS:
        wav = audio.normalize_volume(make_clip(*params), audio.audio_norm_target_dBFS, increase_only=True)
        mel = audio.wav_to_mel_spectrogram(wav.astype(np.float32))
        with torch.no_grad():
            embeddings.append(package(torch.from_numpy(mel[None]))[0].numpy())
        mels.append(mel)
    embeddings = np.stack(embeddings).astype(np.float32)

    from neurohook import models

    port = models.build("resemblyzer")
    for i, params in enumerate(CLIPS):
        w = torch.from_numpy(make_clip(*params))[None]
        with torch.no_grad():
            mel = port.frontend(w, torch.tensor([w.shape[1]]))[0][0].numpy()
            emb = port(w)[0].numpy()
        ref = mels[i]
        d = np.abs(mel - ref) if mel.shape == ref.shape else np.array([np.inf])
        print(f"clip {i}: {w.shape[1]} samples, mel {ref.shape} (port {mel.shape}), "
              f"mel max abs diff {d.max():.3g} (max rel to peak {d.max() / ref.max():.3g}), "
              f"embedding max abs diff {np.abs(emb - embeddings[i]).max():.3g}, cosine {float(emb @ embeddings[i]):.8f}")
    cos = embeddings @ embeddings.T
    print("package cosines between clips:", np.round(cos[np.triu_indices(len(cos), 1)], 4))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    np.savez_compressed(OUT, embeddings=embeddings, mel0=mels[0].astype(np.float32), **{k: np.array(v) for k, v in versions.items()})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {versions}")


if __name__ == "__main__":
    main()
