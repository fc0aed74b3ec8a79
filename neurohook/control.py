"""Baselines that keep a probe honest (paper sections 3.4 and 5.1, Table 1).

* majority class: predict the training set's most frequent class;
* control task: random labels per utterance with the training set's class distribution, and
  selectivity = Acc(ALL) - Acc_control(ALL) (Hewitt and Liang);
* R.INIT: the same architecture with re-initialised weights (:func:`reinitialize`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch

__all__ = ["majority_accuracy", "majority_class", "control_labels", "selectivity", "reinitialize"]

logger = logging.getLogger(__name__)


def majority_class(y_train: Any) -> Any:
    """y_train's (N,) most frequent class (ties: the smallest): what the majority baseline predicts."""
    classes, counts = np.unique(np.asarray(y_train), return_counts=True)
    return classes[np.argmax(counts)]


def majority_accuracy(y_train: Any, y_test: Any) -> float:
    """Accuracy on y_test (M,) of always predicting :func:`majority_class` of y_train (N,)."""
    return float(np.mean(np.asarray(y_test) == majority_class(y_train)))


def control_labels(y_train: Any, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random labels for a control task: a shuffle of y_train (N,) and n_test draws from its class frequencies.

    The training labels keep their class distribution exactly; each utterance's label is independent
    of its features, so a probe can only reach chance on the test part by memorising.
    """
    rng = np.random.default_rng(seed)
    y_train = np.asarray(y_train)
    classes, counts = np.unique(y_train, return_counts=True)
    return rng.permutation(y_train), rng.choice(classes, size=n_test, p=counts / counts.sum())


def selectivity(accuracy: float, control_accuracy: float) -> float:
    """Acc(task) - Acc(control task), both as fractions."""
    return float(accuracy - control_accuracy)


def reinitialize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A deep copy of model with every parameter re-initialised (seeded), for the R.INIT baseline.

    Modules with ``reset_parameters`` use their own initialiser; any parameter still equal to the
    original afterwards (one no initialiser covers, or a constant init such as LayerNorm's weight of
    a model that never trained) is drawn from N(0, 0.02^2), so no weight of the copy equals the original.
    """
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
            originals = dict(model.named_parameters())
            redrawn = []
            for name, p in fresh.named_parameters():
                if torch.equal(p, originals[name]):
                    p.normal_(0.0, 0.02)
                    redrawn.append(name)
    if redrawn:
        logger.info("R.INIT: %d parameter(s) with no re-initialiser drawn from N(0, 0.02^2): %s", len(redrawn), redrawn[:5])
    return fresh
