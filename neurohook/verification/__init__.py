"""Speaker verification probing (the reference paper's task T2:SV, section 4.2, Figure 5, Table 4).

Pieces, each usable alone:

* **Trials** — pairs (enrolment id, test id, target?) read from a file (:func:`read_trials`: VoxCeleb's
  ``1 id10270/x.wav id10270/y.wav`` lines or a CSV with header ``enrol,test,target``) or drawn from a
  labelled set (:func:`make_trials`: no self-pairs; same-gender non-targets, per-language trials,
  balanced counts; seeded and reproducible).
* **Scoring** — cosine similarity of length-normalised embeddings, vectorised over all trials, for
  every layer and for ALL (all layers concatenated, normalised as one vector):
  :func:`cosine_scores`, :func:`layer_scores`.
* **Metrics** — :func:`eer` (exact, O(n log n)), :func:`min_dcf` (normalised), :func:`bootstrap_ci`.
* **Analyses** — :func:`layerwise_eer` (Figure 5) and :func:`neuron_eer` (Table 4: a proxy
  speaker-identification probe trained on other speakers ranks the neurons of the best layer Lb with
  :func:`neurohook.ranking.neuron_ordering`; EER with its top / random / bottom N% neurons), and
  :func:`evaluate` doing both on any ``Features``-like object (``.values``, ``.ids``, ``.layers``).

Everything takes plain arrays: ``values`` (N, D) with one row per utterance, ``ids`` (N,) utterance
ids, and ``layers`` mapping each layer name to its column range ``(start, end)``. Results are
dataclasses with ``to_dict`` / ``from_dict`` (JSON-ready).

Detection conventions (used by every function here): a trial is *accepted* when its score is
``>= threshold``. For a threshold t, FRR(t) (miss rate) is the fraction of target trials with score
< t and FAR(t) (false-alarm rate) the fraction of non-target trials with score >= t. The distinct
operating points are t = every distinct score, plus "reject everything".
"""

from __future__ import annotations

from neurohook.verification.constants import ALL, DEFAULT_PERCENTAGES
from neurohook.verification.trials import Trials, read_trials, write_trials, make_trials
from neurohook.verification.scoring import cosine_scores, layer_scores
from neurohook.verification.metrics import eer, min_dcf, bootstrap_ci
from neurohook.verification.results import LayerEER, LayerwiseVerification, NeuronSubsetEER, NeuronVerification, VerificationResult
from neurohook.verification.analysis import layerwise_eer, neuron_eer, features_layerwise_eer, features_neuron_eer, evaluate

__all__ = [
    "Trials",
    "read_trials",
    "write_trials",
    "make_trials",
    "cosine_scores",
    "layer_scores",
    "eer",
    "min_dcf",
    "bootstrap_ci",
    "LayerEER",
    "LayerwiseVerification",
    "NeuronSubsetEER",
    "NeuronVerification",
    "VerificationResult",
    "layerwise_eer",
    "neuron_eer",
    "features_layerwise_eer",
    "features_neuron_eer",
    "evaluate",
    "ALL",
    "DEFAULT_PERCENTAGES",
]
