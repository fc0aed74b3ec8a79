"""Seeded train/test splits: stratified by a label, speaker-disjoint, balanced per class."""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from neurohook.errors import DataError
from neurohook.data.manifest import Manifest

__all__ = ["Split", "SplitError", "balance", "speaker_disjoint_split"]

_LOG = logging.getLogger(__name__)


class SplitError(DataError):
    """A split with the requested properties cannot be made from this manifest."""


@dataclass(frozen=True)
class Split:
    """Utterance ids of the train and test sides."""

    train: list[str]
    test: list[str]

    def assignment(self) -> dict[str, str]:
        """``{utt_id: "train" | "test"}`` (for :meth:`Manifest.with_split`)."""
        return {**{u: "train" for u in self.train}, **{u: "test" for u in self.test}}


def balance(manifest: Manifest, label: str, seed: int = 0) -> list[str]:
    """Ids with every class downsampled to the rarest class's count, spread over speakers (seeded).

    Utterances are drawn round-robin across a class's speakers (in seeded order) so that no
    speaker dominates what is kept.
    """
    rng = random.Random(seed)
    by_class: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in manifest:
        by_class[r.label(label)][r.speaker or r.utt_id].append(r.utt_id)
    if not by_class:
        return []
    n = min(sum(len(v) for v in spk.values()) for spk in by_class.values())
    keep: set[str] = set()
    for cls in sorted(by_class):
        queues = []
        for s in sorted(by_class[cls]):
            q = list(by_class[cls][s])
            rng.shuffle(q)
            queues.append(q)
        rng.shuffle(queues)
        taken = 0
        while taken < n:
            for q in queues:
                if q and taken < n:
                    keep.add(q.pop())
                    taken += 1
    return [u for u in manifest.ids if u in keep]


def speaker_disjoint_split(
    manifest: Manifest,
    label: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    balanced: bool = True,
) -> Split:
    """Split so no speaker is on both sides, each class on both sides, optionally class-balanced.

    Speakers are stratified by their most frequent ``label`` value (ties: the smallest value) and,
    within each stratum, a seeded ``test_fraction`` of them (at least one) goes to test. Without a
    ``speaker`` column every utterance is its own speaker. With ``balanced`` each side keeps the
    same number of utterances per class. Raises :class:`SplitError` when a class cannot be on both
    sides (e.g. all its utterances come from one speaker).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    spk_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in manifest:
        spk_counts[r.speaker or r.utt_id][r.label(label)] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for spk, counts in spk_counts.items():
        top = max(counts.values())
        strata[min(c for c, k in counts.items() if k == top)].append(spk)
    test_spk: set[str] = set()
    for cls in sorted(strata):
        spks = sorted(strata[cls])
        rng.shuffle(spks)
        if len(spks) < 2:
            _LOG.debug("class %r: only speaker %s; it goes to train", cls, spks)
            continue
        k = min(len(spks) - 1, max(1, round(test_fraction * len(spks))))
        test_spk.update(spks[:k])
    train_ids = [r.utt_id for r in manifest if (r.speaker or r.utt_id) not in test_spk]
    test_ids = [r.utt_id for r in manifest if (r.speaker or r.utt_id) in test_spk]
    classes = set(manifest.labels(label))
    problems = []
    for side, ids in (("train", train_ids), ("test", test_ids)):
        missing = classes - {manifest[u].label(label) for u in ids}
        if missing:
            problems.append(f"{side} side has no utterance of class(es) {sorted(missing)}")
    if problems:
        detail = {c: len(v) for c, v in sorted(strata.items())}
        raise SplitError(
            f"cannot split {label!r} speaker-disjointly: {'; '.join(problems)} "
            f"(speakers per class: {detail}; each class needs >= 2 speakers)"
        )
    if balanced:
        train_ids = balance(manifest.select(train_ids), label, seed)
        test_ids = balance(manifest.select(test_ids), label, seed + 1)
    return Split(train_ids, test_ids)
