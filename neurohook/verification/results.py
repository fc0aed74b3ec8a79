"""Result classes of speaker verification, JSON-ready through :mod:`neurohook.codec` (``to_dict`` / ``from_dict``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neurohook.codec import JSONResult


__all__ = ["LayerEER", "LayerwiseVerification", "NeuronSubsetEER", "NeuronVerification", "VerificationResult"]


@dataclass
class LayerEER(JSONResult):
    """EER and normalised minDCF of one layer (or ALL); eer_ci is the bootstrap interval if asked for."""

    name: str
    n_neurons: int
    eer: float
    min_dcf: float
    eer_ci: tuple[float, float] | None = None


@dataclass
class LayerwiseVerification(JSONResult):
    """Layer-wise SV results (Figure 5): each recorded layer in map order, then ALL."""

    layers: list[LayerEER]
    best_layer: str  # the recorded layer (ALL excluded) of lowest EER, first on ties
    n_trials: int
    n_target: int
    n_nontarget: int
    p_target: float = 0.01
    c_miss: float = 1.0
    c_fa: float = 1.0

    def get(self, name: str) -> LayerEER:
        """The entry of one layer (or ALL) by name."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"no layer {name!r}; have {[e.name for e in self.layers]}")

    @property
    def eers(self) -> dict[str, float]:
        """EER per layer name, ALL included."""
        return {e.name: e.eer for e in self.layers}


@dataclass
class NeuronSubsetEER(JSONResult):
    """EER with the top / random / bottom N% neurons of a layer: means (and std) over runs."""

    percent: float
    n_neurons: int
    eer_top: float
    eer_random: float
    eer_bottom: float
    eer_top_std: float = 0.0
    eer_random_std: float = 0.0
    eer_bottom_std: float = 0.0


@dataclass
class NeuronVerification(JSONResult):
    """Neuron-level SV (Table 4) on the best layer Lb; neuron indices are columns of the full values."""

    layer: str
    layer_start: int
    layer_end: int
    eer_layer: float  # EER(Lb) with all its neurons
    subsets: list[NeuronSubsetEER]
    tolerance: float
    minimal_percent: float | None  # smallest N% whose top-N% EER <= eer_layer + tolerance
    minimal_neurons: list[int]  # that set, in ranking order (first run), [] if none
    order: list[int]  # the first run's ranking of all Lb neurons, most important first
    n_probe_speakers: int
    n_probe_utterances: int
    probe_train_accuracy: float | None = None  # mean over runs, on the probe's own training set
    runs: int = 1
    seed: int = 0

    def subset(self, percent: float) -> NeuronSubsetEER:
        """The entry for one percentage."""
        for s in self.subsets:
            if s.percent == percent:
                return s
        raise KeyError(f"no subset for {percent}%; have {[s.percent for s in self.subsets]}")

    def table4_row(self) -> dict[str, Any]:
        """Table 4's columns: Lb, EER(Lb), Neu_t, EER_t, EER_r, EER_b (EERs in %; None if no minimal set)."""
        row: dict[str, Any] = {"Lb": self.layer, "EER(Lb)": 100 * self.eer_layer, "Neu_t": self.minimal_percent}
        if self.minimal_percent is None:
            row.update({"EER_t": None, "EER_r": None, "EER_b": None})
        else:
            s = self.subset(self.minimal_percent)
            row.update({"EER_t": 100 * s.eer_top, "EER_r": 100 * s.eer_random, "EER_b": 100 * s.eer_bottom})
        return row


@dataclass
class VerificationResult(JSONResult):
    """Everything T2:SV reports for one trial list: layer-wise EERs and, if run, the neuron level."""

    layerwise: LayerwiseVerification
    neurons: NeuronVerification | None = None

