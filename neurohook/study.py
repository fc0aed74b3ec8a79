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
from neurohook.errors import ConfigError, DataError, ResultsFileError

__all__ = ["analyze_model", "verify_model", "write_results", "read_results_file", "labels_of"]

logger = logging.getLogger(__name__)


def labels_of(manifest: Manifest, column: str, ids: Sequence[Any]) -> dict[str, str]:
    """{utt_id: label} of one manifest column for the given ids (empty values left out)."""
    columns = set(manifest.label_columns) | {"speaker", "split"}
    if column not in columns:
        raise DataError(f"manifest has no column {column!r}; label columns are {sorted(columns)}")
    out = {}
    for u in ids:
        try:
            value = manifest[str(u)].label(column)
        except KeyError:
            continue
        if value not in ("", None):
            out[str(u)] = value
    if not out:
        raise DataError(f"no utterance of the features has a value in manifest column {column!r}")
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

    ``tasks``: manifest columns, or ``{task name: column}`` (e.g. ``{"GC": "gender"}``). An SV step
    that the data cannot support (too few speakers or utterances) is recorded as
    ``{"error": reason}`` under ``verification["SV"]`` and logged; the analysis is kept.
    """
    ids = [str(u) for u in features.ids]
    missing = [u for u in ids if u not in manifest]
    if missing:
        raise DataError(f"{len(missing)} utterance(s) of the features are not in the manifest, e.g. {missing[:3]}")
    columns = dict(tasks) if isinstance(tasks, Mapping) else {t: t for t in tasks}
    labels = {task: labels_of(manifest, column, ids) for task, column in columns.items()}
    speakers = labels_of(manifest, speaker_column, ids) if speaker_column else None
    if sv and speakers is None:
        raise ConfigError("speaker verification needs a speaker column (--speaker-column)")
    result = analyze(features, labels, speakers=speakers, rinit_features=rinit_features, **options)
    entry: dict[str, Any] = {
        "n_neurons": int(features.values.shape[1]),
        "layers": list(features.layer_names),
        "layer_sizes": [int(len(features.columns(n))) for n in features.layer_names],
        "analysis": result.to_dict(),
        "verification": {},
    }
    if sv:
        entry["verification"]["SV"] = verify_model(features, manifest, speaker_column, sv_trials)
    return entry


def verify_model(features: Any, manifest: Manifest, speaker_column: str, n_trials: int = 2000) -> dict[str, Any]:
    """Layer-wise EER (and Table 4) of one model as a results entry, or ``{"error": reason}`` when it cannot run."""
    ids = [str(u) for u in features.ids]
    try:
        speakers = labels_of(manifest, speaker_column, ids)
        return _verify(features, speakers, labels_of_optional(manifest, "gender", ids), n_trials).to_dict()
    except DataError as e:
        logger.warning("speaker verification could not run: %s (recorded in the results; the rest is kept)", e)
        return {"error": str(e)}


def labels_of_optional(manifest: Manifest, column: str, ids: Sequence[str]) -> dict[str, str] | None:
    """Like labels_of, or None when the manifest lacks the column."""
    try:
        return labels_of(manifest, column, ids)
    except DataError:
        return None


def _verify(features: Any, speakers: Mapping[str, str], genders: Mapping[str, str] | None, n_trials: int) -> Any:
    """Layer-wise EER on trials of half the speakers; Table 4 with a proxy probe trained on the other half."""
    spk = sorted(set(speakers.values()))
    if len(spk) < 2:
        raise DataError(f"speaker verification needs at least 2 speakers, the features have {len(spk)}")
    rng = np.random.default_rng(0)
    probe_spk = set(rng.permutation(spk)[: len(spk) // 2].tolist())
    trial_ids = [u for u in features.ids if str(u) in speakers and speakers[str(u)] not in probe_spk]
    probe_ids = [u for u in features.ids if str(u) in speakers and speakers[str(u)] in probe_spk]
    same_gender = genders is not None and all(str(u) in genders for u in trial_ids)
    per_speaker = np.unique([speakers[str(u)] for u in trial_ids], return_counts=True)[1]
    available = int((per_speaker * (per_speaker - 1) // 2).sum())
    if available == 0:
        raise DataError(f"speaker verification needs speakers with 2 or more utterances; the {len(per_speaker)} "
                        "trial speakers have one each")
    trials = verification.make_trials(
        [str(u) for u in trial_ids], [speakers[str(u)] for u in trial_ids],
        genders=[genders[str(u)] for u in trial_ids] if same_gender else None, same_gender=same_gender,
        n_target=min(n_trials // 2, available), seed=0)
    probe_features = features.select_ids(probe_ids) if len(probe_spk) >= 2 else None
    return verification.evaluate(features, trials, probe_features=probe_features,
                                 probe_speakers=[speakers[str(u)] for u in probe_ids] if probe_features is not None else None)


def read_results_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a results file, ResultsFileError naming the file when it is not one.

    A file written by :meth:`AnalysisResult.save` (``{"tasks": ...}``) becomes one model named after the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(path, "no such file") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ResultsFileError(path, f"not a readable results file ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and "models" not in data and isinstance(data.get("tasks"), dict):
        data = {"models": {path.stem: {"analysis": data}}}
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ResultsFileError(path, "not a neurohook results file (expected a JSON object with a 'models' mapping)")
    return data


def write_results(
    models: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], merge: bool = True, **extra: Any
) -> Path:
    """Write (or extend, when ``merge`` and the file exists) results.json atomically; returns its path.

    ``extra`` top-level keys (e.g. the settings of the run) are stored beside ``models``. An existing
    file that is not a results file raises ResultsFileError and is left as it is.
    """
    path = Path(path)
    data: dict[str, Any] = {"neurohook_version": __version__, "models": {}}
    if merge and path.exists():
        data = read_results_file(path)
        data["neurohook_version"] = __version__
    data["models"].update(models)
    data.update(extra)
    atomic_write_text(path, json.dumps(data, indent=1))
    return path
