"""Audio data: manifests, loading, front-ends, length-bucketed batching and speaker-disjoint splits."""

from __future__ import annotations

from neurohook.data.audio import AudioError, ErrorPolicy, energy_vad, load_audio, load_record, resample, to_mono
from neurohook.data.batching import AudioDataset, AudioLoader, BucketBatchSampler, make_loader, pad_batch
from neurohook.data.frontends import FRONTENDS, KaldiFbank, KaldiMFCC, LogMel, MFCC, Waveform, make_frontend
from neurohook.data.manifest import Manifest, ManifestError, Problem, Record, read_manifest
from neurohook.data.splits import Split, SplitError, balance, speaker_disjoint_split

__all__ = [
    "FRONTENDS",
    "AudioDataset",
    "AudioError",
    "AudioLoader",
    "BucketBatchSampler",
    "ErrorPolicy",
    "KaldiFbank",
    "KaldiMFCC",
    "LogMel",
    "MFCC",
    "Manifest",
    "ManifestError",
    "Problem",
    "Record",
    "Split",
    "SplitError",
    "Waveform",
    "balance",
    "energy_vad",
    "load_audio",
    "load_record",
    "make_frontend",
    "make_loader",
    "pad_batch",
    "read_manifest",
    "resample",
    "speaker_disjoint_split",
    "to_mono",
]
