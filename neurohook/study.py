"""One model's full study from Features and a labelled manifest, as an entry of ``results.json``.

``results.json`` holds ``{"neurohook_version", "models": {name: entry}}`` where an entry is
``{"n_neurons", "layers", "layer_sizes", "analysis": AnalysisResult.to_dict(),
"verification": {trial set: VerificationResult.to_dict()}}``; :mod:`neurohook.report` reads it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook.atomic import atomic_write_text
from neurohook import __version__, verification
from neurohook.analysis import analyze
from neurohook.data.manifest import Manifest

__all__ = ["analyze_model", "write_results", "labels_of"]

logger = logging.getLogger(__name__)


def labels_of(manifest: Manifest, column: str, ids: Sequence[Any]) -> dict[str, str]:
    """{utt_id: label} of one manifest column for the given ids (empty values left out)."""
    columns = set(manifest.label_columns) | {"speaker", "split"}
    if column not in columns:
        raise ValueError(f"manifest has no column {column!r}; label columns are {sorted(columns)}")
    out = {}
    for u in ids:
        try:
            value = manifest[str(u)].label(column)
        except KeyError:
            continue
        if value not in ("", None):
            out[str(u)] = value
    if not out:
        raise ValueError(f"no utterance of the features has a value in manifest column {column!r}")
    return out


def analyze_model(
    features: Any,
    manifest: Manifest,
    tasks: Sequence[str] | Mapping[str, str],
    *,
    speaker_column: str | None = "speaker",
    sv: bool = False,
    rinit_features: Any = None,
    sv_trials: int = 2000,
    **options: Any,
) -> dict[str, Any]:
    """Layer-wise and neuron-level analysis of every task, plus optional SV, for one model.

    ``tasks``: manifest columns, or ``{task name: column}`` (e.g. ``{"GC": "gender"}``).
    """
    ids = [str(u) for u in features.ids]
    missing = [u for u in ids if u not in manifest]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) of the features are not in the manifest, e.g. {missing[:3]}")
    columns = dict(tasks) if isinstance(tasks, Mapping) else {t: t for t in tasks}
    labels = {task: labels_of(manifest, column, ids) for task, column in columns.items()}
    speakers = labels_of(manifest, speaker_column, ids) if speaker_column else None
    result = analyze(features, labels, speakers=speakers, rinit_features=rinit_features, **options)
    entry: dict[str, Any] = {
        "n_neurons": int(features.values.shape[1]),
        "layers": list(features.layer_names),
        "layer_sizes": [int(len(features.columns(n))) for n in features.layer_names],
        "analysis": result.to_dict(),
        "verification": {},
    }
    if sv:
        if speakers is None:
            raise ValueError("speaker verification needs a speaker column")
        entry["verification"]["SV"] = _verify(features, speakers, labels_of_optional(manifest, "gender", ids), sv_trials).to_dict()
    return entry


def labels_of_optional(manifest: Manifest, column: str, ids: Sequence[str]) -> dict[str, str] | None:
    """Like labels_of, or None when the manifest lacks the column."""
    try:
        return labels_of(manifest, column, ids)
    except ValueError:
        return None


def _verify(features: Any, speakers: Mapping[str, str], genders: Mapping[str, str] | None, n_trials: int) -> Any:
    """Layer-wise EER on trials of half the speakers; Table 4 with a proxy probe trained on the other half."""
    spk = sorted(set(speakers.values()))
    rng = np.random.default_rng(0)
    probe_spk = set(rng.permutation(spk)[: len(spk) // 2].tolist())
    trial_ids = [u for u in features.ids if str(u) in speakers and speakers[str(u)] not in probe_spk]
    probe_ids = [u for u in features.ids if str(u) in speakers and speakers[str(u)] in probe_spk]
    same_gender = genders is not None and all(str(u) in genders for u in trial_ids)
    per_speaker = np.unique([speakers[str(u)] for u in trial_ids], return_counts=True)[1]
    available = int((per_speaker * (per_speaker - 1) // 2).sum())
    trials = verification.make_trials(
        [str(u) for u in trial_ids], [speakers[str(u)] for u in trial_ids],
        genders=[genders[str(u)] for u in trial_ids] if same_gender else None, same_gender=same_gender,
        n_target=min(n_trials // 2, available), seed=0)
    probe_features = features.select_ids(probe_ids) if len(probe_spk) >= 2 else None
    return verification.evaluate(features, trials, probe_features=probe_features,
                                 probe_speakers=[speakers[str(u)] for u in probe_ids] if probe_features is not None else None)


def write_results(
    models: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], merge: bool = True, **extra: Any
) -> Path:
    """Write (or extend, when ``merge`` and the file exists) results.json atomically; returns its path.

    ``extra`` top-level keys (e.g. the settings of the run) are stored beside ``models``.
    """
    path = Path(path)
    data: dict[str, Any] = {"neurohook_version": __version__, "models": {}}
    if merge and path.exists():
        data = json.loads(path.read_text())
        data["neurohook_version"] = __version__
    data["models"].update(models)
    data.update(extra)
    atomic_write_text(path, json.dumps(data, indent=1))
    return path
