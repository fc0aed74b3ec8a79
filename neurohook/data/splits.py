"""Every train/test split of neurohook, and the random streams of one analysis seed.

- :func:`seed_streams`: one ``numpy.random.SeedSequence`` per seed spawns an independent seed for
  each random purpose (the split, the control labels, the random masks, the minimal-set draws, the
  SV trials, the bootstrap intervals), so that no two purposes share a random stream.
- :func:`pick_test_groups`: the one rule that chooses a test side: from each stratum of groups (the
  speakers of a class, or its utterances), a seeded ``test_size`` share, at least one of a stratum of
  two or more, never all of it.
- :func:`train_test_split` (row indices; stratified, or speaker-disjoint), :func:`speaker_disjoint_split`
  (a manifest, optionally class-balanced), :func:`speaker_holdout` (unseen test speakers) and
  :func:`balance` build on it; the built-in corpus's ``split`` column does too.

Example::

    train, test = train_test_split(labels, test_size=0.4, seed=seed_streams(0).split, speakers=speakers)
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from neurohook.errors import DataError
from neurohook.data.manifest import Manifest

__all__ = ["SeedStreams", "Split", "SplitError", "balance", "pick_test_groups", "seed_streams", "speaker_disjoint_split",
           "speaker_holdout", "train_dev_folds", "train_dev_split", "train_test_split"]

logger = logging.getLogger(__name__)


class SeedStreams(NamedTuple):
    """Independent seeds (unsigned 32-bit integers) for each random purpose of one analysis seed."""

    split: int
    control: int
    masks: int
    minimal: int
    trials: int
    intervals: int  # bootstrap replicates (spawned after the others: they do not depend on it)
    dev: int  # the dev part of the training rows (added after the others: the streams above are unchanged)
    check: int  # the halves and random sets of the cross-fitted ranking check (added last)


def seed_streams(seed: int) -> SeedStreams:
    """The purposes' seeds spawned from ``numpy.random.SeedSequence(seed)`` (same seed, same streams)."""
    children = np.random.SeedSequence(seed).spawn(len(SeedStreams._fields))
    return SeedStreams(*(int(c.generate_state(1)[0]) for c in children))


def pick_test_groups(strata: Mapping[Any, Sequence[Any]], test_size: float, rng: np.random.Generator,
                     minimum: int = 1) -> set[Any]:
    """Groups on the test side: from each stratum of n >= 2 groups, ``min(n - 1, max(minimum, round(test_size * n)))``.

    Strata are visited in sorted order and their groups shuffled by ``rng``, so a seed gives one split.
    A stratum of one group stays on the training side.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    test: set[Any] = set()
    for key in sorted(strata, key=str):
        groups = sorted(strata[key], key=str)
        if len(groups) < 2:
            continue
        order = rng.permutation(len(groups))
        k = min(len(groups) - 1, max(minimum, int(round(test_size * len(groups)))))
        test.update(groups[i] for i in order[:k])
    return test


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

    The speaker-disjoint :func:`train_test_split` of the manifest's ``label`` and ``speaker`` columns
    (without a speaker, every utterance is its own). With ``balanced`` each side keeps the same number
    of utterances per class. Raises :class:`SplitError` when a class cannot be on both sides (e.g. all
    its utterances come from one speaker).
    """
    ids = manifest.ids
    labels = np.array(manifest.labels(label), dtype=object).astype(str)
    speakers = np.array([r.speaker or r.utt_id for r in manifest], dtype=object).astype(str)
    try:
        tr, te = train_test_split(labels, test_fraction, seed, speakers)
    except DataError as e:
        raise SplitError(f"cannot split {label!r} speaker-disjointly: {e}") from None
    train_ids, test_ids = [ids[i] for i in tr], [ids[i] for i in te]
    if balanced:
        train_ids = balance(manifest.select(train_ids), label, seed)
        test_ids = balance(manifest.select(test_ids), label, seed + 1)
    return Split(train_ids, test_ids)


def speaker_holdout(manifest: Manifest, test_fraction: float = 0.2, seed: int = 0, minimum: int = 2) -> Split:
    """Unseen test speakers (for speaker ID / verification): a seeded share of all speakers, at least ``minimum``."""
    speakers = sorted({r.speaker or r.utt_id for r in manifest})
    test = pick_test_groups({"all": speakers}, test_fraction, np.random.default_rng(seed), minimum)
    return Split([r.utt_id for r in manifest if (r.speaker or r.utt_id) not in test],
                 [r.utt_id for r in manifest if (r.speaker or r.utt_id) in test])


def train_test_split(
    labels: Any, test_size: float = 0.4, seed: int = 0, speakers: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of a stratified split of labels (N,); speaker-disjoint when speakers (N,) given.

    Stratified: each class contributes ``test_size`` of its rows to the test part. Speaker-disjoint:
    whole speakers go to one side, chosen per class of the speaker's most frequent label (ties: the
    smallest). Either way :func:`pick_test_groups` draws the test side (at least one of a class with
    two or more, never all of them).
    """
    labels = np.asarray(labels)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    if speakers is None:
        groups = np.arange(len(labels))  # every utterance its own group
    else:
        speakers = np.asarray(speakers)
        if len(speakers) != len(labels):
            raise ValueError(f"speakers has {len(speakers)} entries but labels has {len(labels)}")
        groups = np.unique(speakers, return_inverse=True)[1]
    strata = _strata(labels, groups)
    test = np.isin(groups, sorted(pick_test_groups(strata, test_size, rng)))
    _check_splittable(labels, speakers)
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"the split left an empty {'training' if len(train_idx) == 0 else 'test'} part "
                         f"({len(labels)} utterances, test_size={test_size}{', by speaker' if speakers is not None else ''})")
    for part, idx in (("training", train_idx), ("test", test_idx)):
        missing = sorted(set(np.unique(labels).tolist()) - set(np.unique(labels[idx]).tolist()))
        if missing:
            raise DataError(f"class(es) {missing[:5]} absent from the {part} split: give more utterances of them"
                             f"{' or more speakers' if speakers is not None else ''}")
    return train_idx, test_idx


def train_dev_split(labels: Any, dev_size: float = 0.25, seed: int = 0, speakers: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, dev) of training rows: every choice (λ, sizes, best layers) is made on dev.

    Speaker-disjoint with ``speakers`` (N,) when every class has two training speakers; otherwise
    stratified over utterances (logged), as :func:`train_test_split`. DataError when a class has one row.
    """
    if speakers is not None:
        try:
            return train_test_split(labels, dev_size, seed, speakers)
        except DataError as err:
            logger.info("dev split by utterance, not by speaker: %s", err)
    return train_test_split(labels, dev_size, seed, None)


def train_dev_folds(labels: Any, folds: int = 3, dev_size: float = 0.25, seed: int = 0,
                    speakers: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row indices [(fit, dev), ...] of training rows, one pair per fold: what l2 is chosen on.

    ``folds=1`` is :func:`train_dev_split` (one dev part of ``dev_size``). ``folds=k > 1`` deals the
    groups (speakers; utterances without them) of each stratum (the class of a speaker's most
    frequent label) round robin, in a seeded order, over k dev parts, so that every row is on a dev
    side once and every class on every side. When some class has fewer than k speakers the groups
    are utterances, when fewer than k utterances the one split of ``dev_size`` is returned (logged).

    Example: ``fit, dev = train_dev_folds(y, 3, seed=0, speakers=spk)[0]`` (the first of three folds:
    about a third of each class's speakers on dev).
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    labels = np.asarray(labels)
    if folds > 1:
        for who in (speakers, None):
            groups = np.arange(len(labels)) if who is None else np.unique(np.asarray(who), return_inverse=True)[1]
            strata = _strata(labels, groups)
            if len(strata) == len(np.unique(labels)) and min(len(v) for v in strata.values()) >= folds:
                return _dealt_folds(groups, strata, folds, np.random.default_rng(seed))
            if who is not None:
                logger.info("dev folds by utterance, not by speaker: a class has fewer than %d speakers", folds)
        logger.info("one dev split, not %d folds: a class has fewer than %d utterances", folds, folds)
    return [train_dev_split(labels, dev_size, seed, speakers)]


def _dealt_folds(groups: np.ndarray, strata: Mapping[Any, list[int]], folds: int,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, dev) rows per fold, each stratum's groups dealt over the folds in a seeded order."""
    fold_of = np.empty(groups.max() + 1, dtype=np.int64)
    start = 0
    for key in sorted(strata, key=str):
        members = sorted(strata[key])
        for i, j in enumerate(rng.permutation(len(members))):
            fold_of[members[j]] = (start + i) % folds
        start += len(members)  # the next stratum starts where this one stopped: folds of equal size
    fold = fold_of[groups]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]


def _strata(labels: np.ndarray, groups: np.ndarray) -> dict[Any, list[int]]:
    """Groups (ints) by stratum: the most frequent label of each group's rows."""
    strata: dict[Any, list[int]] = {}
    for g in np.unique(groups):
        strata.setdefault(_mode(labels[groups == g]), []).append(int(g))
    return strata


def _check_splittable(labels: np.ndarray, speakers: np.ndarray | None) -> None:
    """DataError naming the classes with fewer than 2 utterances (or speakers): one is needed per part."""
    if speakers is None:
        classes, counts = np.unique(labels, return_counts=True)
        unit = "utterance"
    else:
        pairs = np.unique(np.stack([labels.astype(str), speakers.astype(str)]), axis=1)
        classes, counts = np.unique(pairs[0], return_counts=True)
        unit = "speaker"
    few = classes[counts < 2].tolist()
    if few:
        raise DataError(f"class(es) {few[:5]} have only one {unit} ({len(few)} of {len(classes)} classes): each "
                        f"class needs at least 2 {unit}s, one for training and one for testing; drop or merge them")


def _mode(values: np.ndarray) -> Any:
    """The most frequent value (the smallest on ties)."""
    u, c = np.unique(values, return_counts=True)
    return u[np.argmax(c)]
