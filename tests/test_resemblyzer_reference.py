"""neurohook's Resemblyzer port against the ``resemblyzer`` package's own inference.

``tests/data/resemblyzer_reference.npz`` holds what the package itself computed (with librosa) for
the three synthetic clips of :func:`make_clip`: the mel spectrogram of clip 0 and the whole-utterance
embeddings of all three. It is made by ``benchmarks/make_resemblyzer_reference.py``, which imports
the clips from here; this test needs only numpy, scipy and the wheel's weights, not librosa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from neurohook import models
from neurohook.models.resemblyzer import weights_path
from neurohook.models.wheels import WeightsNotFoundError

REFERENCE = Path(__file__).parent / "data" / "resemblyzer_reference.npz"
SR = 16000
#: (seed, seconds, f0 at start / end in Hz, formants ((centre Hz, bandwidth Hz), ...), peak amplitude).
#: Clip 1 is quiet (about -47 dBFS), so the front-end raises it to -30 dBFS; the others are louder
#: than -30 dBFS and left as they are.
CLIPS = (
    (11, 1.6, 110.0, 140.0, ((700, 90), (1200, 110), (2600, 160)), 0.3),
    (22, 2.2, 210.0, 175.0, ((400, 70), (2100, 120), (2900, 180)), 0.01),
    (33, 2.9, 150.0, 230.0, ((550, 80), (1700, 130)), 0.5),
)


def make_clip(seed: int, seconds: float, f0_start: float, f0_end: float,
              formants: tuple[tuple[float, float], ...], peak: float) -> np.ndarray:
    """A vowel-like float32 clip at 16 kHz: a harmonic complex (linear f0 glide with seeded vibrato,
    harmonics up to 4 kHz with 1/k amplitudes and seeded phases) through two-pole formant
    resonators, scaled to ``peak``, plus seeded noise at 1 % of it, with 50 ms fades."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    vibrato = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 2 * np.pi))
    f0 = (f0_start + (f0_end - f0_start) * t / seconds) * vibrato
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = np.zeros(n)
    for k in range(1, int(4000 // max(f0_start, f0_end)) + 1):
        x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    for centre, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / SR)
        x = lfilter([1.0 - r], [1.0, -2 * r * np.cos(2 * np.pi * centre / SR), r * r], x)
    x = x / np.max(np.abs(x)) * peak + 0.01 * peak * rng.standard_normal(n)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
    return (x * fade).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    try:
        weights_path()
    except WeightsNotFoundError as e:
        pytest.skip(f"Resemblyzer weights absent ({e})")
    return models.build("resemblyzer")


def test_port_matches_package_inference(encoder) -> None:
    ref = np.load(REFERENCE)
    clips = [make_clip(*c) for c in CLIPS]
    with torch.no_grad():
        w0 = torch.from_numpy(clips[0])[None]
        mels, frames = encoder.frontend(w0, torch.tensor([w0.shape[1]]))
        embs = [encoder(torch.from_numpy(w)[None])[0].numpy() for w in clips]
    mel, ref_mel = mels[0].numpy(), ref["mel0"]
    assert mel.shape == ref_mel.shape == (len(clips[0]) // 160 + 1, 40)
    assert int(frames[0]) == ref_mel.shape[0]
    # 1e-4 relative per element, with a floor of 1e-4 of the largest value for the near-zero bins
    np.testing.assert_allclose(mel, ref_mel, rtol=1e-4, atol=1e-4 * float(ref_mel.max()))
    for got, want in zip(embs, ref["embeddings"]):
        assert float(got @ want) / float(np.linalg.norm(got) * np.linalg.norm(want)) > 0.9999
        assert float(np.abs(got - want).max()) < 1e-4
    # the clips are distinct voices to the network, so the check is not vacuous
    e = ref["embeddings"]
    assert float((e @ e.T)[np.triu_indices(len(e), 1)].max()) < 0.99
