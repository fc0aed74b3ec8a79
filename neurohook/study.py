"""One model's full study from Features and a labelled manifest, as an entry of ``results.json``.

The entry's layout (and the results.json schema around it) is defined in :mod:`neurohook.results`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from neurohook.features import Features
from neurohook import verification
from neurohook.analysis import analyze
from neurohook.data.manifest import Manifest
from neurohook.data.splits import seed_streams
from neurohook.errors import ConfigError, DataError
from neurohook.intervals import N_BOOT

__all__ = ["analyze_model", "verify_model", "labels_of"]

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
    features: Features,
    manifest: Manifest,
    tasks: Sequence[str] | Mapping[str, str],
    *,
    speaker_column: str | None = "speaker",
    sv: bool = False,
    rinit_features: Features | None = None,
    sv_trials: int = 2000,
    split_column: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Layer-wise and neuron-level analysis of every task, plus optional SV, for one model.

    ``tasks``: manifest columns, or ``{task name: column}`` (e.g. ``{"GC": "gender"}``);
    ``split_column``: a manifest column of "train" / "test" fixing the split for every seed. An SV step
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
    if split_column:
        options["split"] = labels_of(manifest, split_column, ids)
    result = analyze(features, labels, speakers=speakers, rinit_features=rinit_features, **options)
    entry: dict[str, Any] = {
        "n_neurons": int(features.shape[1]),
        "layers": list(features.layer_names),
        "layer_sizes": [int(len(features.columns(n))) for n in features.layer_names],
        "analysis": result.to_dict(),
        "verification": {},
    }
    if sv:
        seed = int(list(options.get("seeds", (0,)))[0])
        entry["verification"]["SV"] = verify_model(features, manifest, speaker_column, sv_trials, seed=seed)
    return entry


def verify_model(features: Features, manifest: Manifest, speaker_column: str, n_trials: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """Layer-wise EER (and Table 4) of one model as a results entry, or ``{"error": reason}`` when it cannot run.

    The speakers of the proxy probe and the trials are drawn from ``seed_streams(seed).trials``.
    """
    ids = [str(u) for u in features.ids]
    try:
        speakers = labels_of(manifest, speaker_column, ids)
        return _verify(features, speakers, labels_of_optional(manifest, "gender", ids), n_trials,
                       seed_streams(seed).trials).to_dict()
    except DataError as e:
        logger.warning("speaker verification could not run: %s (recorded in the results; the rest is kept)", e)
        return {"error": str(e)}


def labels_of_optional(manifest: Manifest, column: str, ids: Sequence[str]) -> dict[str, str] | None:
    """Like labels_of, or None when the manifest lacks the column."""
    try:
        return labels_of(manifest, column, ids)
    except DataError:
        return None


def _verify(features: Features, speakers: Mapping[str, str], genders: Mapping[str, str] | None, n_trials: int,
            seed: int) -> Any:
    """Layer-wise EER on trials of half the speakers; Table 4 with a proxy probe trained on the other half."""
    spk = sorted(set(speakers.values()))
    if len(spk) < 2:
        raise DataError(f"speaker verification needs at least 2 speakers, the features have {len(spk)}")
    rng = np.random.default_rng(seed)
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
        n_target=min(n_trials // 2, available), seed=seed)
    probe_features = features.select_ids(probe_ids) if len(probe_spk) >= 2 else None
    return verification.evaluate(features, trials, probe_features=probe_features,
                                 probe_speakers=[speakers[str(u)] for u in probe_ids] if probe_features is not None else None,
                                 n_boot=N_BOOT, seed=seed)
