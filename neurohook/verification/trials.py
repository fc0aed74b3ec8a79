"""Verification trials: pairs (enrolment id, test id, target?) read from a file, written, or drawn from a labelled set."""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from neurohook.errors import DataError
from neurohook.verification.metrics import _as_labels

__all__ = ["Trials", "read_trials", "write_trials", "make_trials"]

logger = logging.getLogger(__name__)


@dataclass
class Trials:
    """A trial list: enrolment ids (T,), test ids (T,), target flags (T,) bool, optional language (T,)."""

    enrol: list[str]
    test: list[str]
    target: np.ndarray
    language: list[str] | None = None

    def __post_init__(self) -> None:
        self.enrol = [str(x) for x in self.enrol]
        self.test = [str(x) for x in self.test]
        self.target = _as_labels(self.target, "target")
        if self.language is not None:
            self.language = [str(x) for x in self.language]
        lengths = {"enrol": len(self.enrol), "test": len(self.test), "target": len(self.target)}
        if self.language is not None:
            lengths["language"] = len(self.language)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"trial fields have different lengths: {lengths}")

    def __len__(self) -> int:
        return len(self.enrol)

    @property
    def n_target(self) -> int:
        """Number of target (same-speaker) trials."""
        return int(self.target.sum())

    @property
    def n_nontarget(self) -> int:
        """Number of non-target (different-speaker) trials."""
        return len(self) - self.n_target

    def subset(self, which: np.ndarray | Sequence[int]) -> "Trials":
        """The trials selected by a (T,) bool mask or an index array, in that order."""
        idx = np.asarray(which)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        return Trials(
            [self.enrol[i] for i in idx],
            [self.test[i] for i in idx],
            self.target[idx],
            None if self.language is None else [self.language[i] for i in idx],
        )

    def by_language(self) -> dict[str, "Trials"]:
        """The trials of each language (sorted by language name); needs the language column."""
        if self.language is None:
            raise ValueError("these trials have no language column")
        lang = np.asarray(self.language)
        return {str(g): self.subset(lang == g) for g in np.unique(lang)}


_TRUE = {"1", "true", "target", "tgt", "yes", "y", "same"}
_FALSE = {"0", "false", "nontarget", "non-target", "non", "imp", "impostor", "no", "n", "different"}


def _parse_target(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{where}: cannot read {value!r} as target/non-target (use 1/0, true/false or target/nontarget)")


def read_trials(path: str | os.PathLike[str], format: Literal["auto", "voxceleb", "csv"] = "auto") -> Trials:
    """Read a trial list: VoxCeleb lines ``1 enrol test`` (1 = target) or a CSV with header enrol,test,target.

    ``format="auto"`` picks CSV when the first non-empty line is a header naming ``enrol``, ``test`` and
    ``target`` (an optional ``language`` column is kept); otherwise each line must be three
    whitespace-separated fields, label first.
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise ValueError(f"{path}: the trial file is empty")
    if format == "auto":
        header = [h.strip().lower() for h in first.split(",")]
        format = "csv" if {"enrol", "test", "target"} <= set(header) else "voxceleb"
    enrol: list[str] = []
    test: list[str] = []
    target: list[bool] = []
    if format == "csv":
        reader = csv.DictReader(lines)
        names = {(n or "").strip().lower(): n for n in (reader.fieldnames or [])}
        missing = [c for c in ("enrol", "test", "target") if c not in names]
        if missing:
            raise ValueError(f"{path}: CSV header must name enrol, test and target; missing {missing}")
        has_lang = "language" in names
        language: list[str] | None = [] if has_lang else None
        for lineno, row in enumerate(reader, start=2):
            if not any((v or "").strip() for v in row.values()):
                continue
            e, t, y = row.get(names["enrol"]), row.get(names["test"]), row.get(names["target"])
            if e is None or t is None or y is None:
                raise ValueError(f"{path}:{lineno}: expected enrol,test,target, got {row}")
            enrol.append(e.strip())
            test.append(t.strip())
            target.append(_parse_target(y, f"{path}:{lineno}"))
            if language is not None:
                language.append((row.get(names["language"]) or "").strip())
        trials = Trials(enrol, test, np.array(target, dtype=bool), language)
    elif format == "voxceleb":
        for lineno, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: expected 'label enrol test' (3 fields), got {line!r}")
            target.append(_parse_target(parts[0], f"{path}:{lineno}"))
            enrol.append(parts[1])
            test.append(parts[2])
        trials = Trials(enrol, test, np.array(target, dtype=bool))
    else:
        raise ValueError(f"format must be 'auto', 'voxceleb' or 'csv', got {format!r}")
    logger.info("read %d trials (%d target) from %s", len(trials), trials.n_target, path)
    return trials


def write_trials(trials: Trials, path: str | os.PathLike[str]) -> None:
    """Write trials as CSV with header enrol,test,target[,language] (target as 1/0)."""
    with open(os.fspath(path), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["enrol", "test", "target"] + (["language"] if trials.language is not None else []))
        for i in range(len(trials)):
            row = [trials.enrol[i], trials.test[i], int(trials.target[i])]
            if trials.language is not None:
                row.append(trials.language[i])
            w.writerow(row)


def _codes(values: Sequence[Any], what: str) -> np.ndarray:
    """Integer codes (N,) of arbitrary hashable labels; None is refused."""
    table: dict[Any, int] = {}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError(f"{what}[{i}] is missing")
        out[i] = table.setdefault(v, len(table))
    return out


def _sample_pairs(lo: np.ndarray, hi: np.ndarray, k: int | None, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray]:
    """k pairs (i, j) drawn uniformly without replacement from {(i, j): lo[i] <= j < hi[i]} (all if k is None)."""
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if k is None:
        k = total
    if k > total:
        raise DataError(f"asked for {k} {what} trials but only {total} eligible pairs exist")
    flat = np.arange(total, dtype=np.int64) if k == total else np.sort(rng.choice(total, size=k, replace=False))
    cum = np.cumsum(counts)
    i = np.searchsorted(cum, flat, side="right")
    j = lo[i] + (flat - (cum[i] - counts[i]))
    return i.astype(np.int64), j.astype(np.int64)


def _trial_groups(ids: list[str], speakers: Sequence[Any], genders: Sequence[Any] | None,
                  languages: Sequence[Any] | None, same_gender: bool, per_language: bool, n_target: int | None,
                  n_nontarget: int | None, balanced: bool) -> tuple[np.ndarray, np.ndarray, list[tuple[str | None, np.ndarray]]]:
    """Checked inputs of :func:`make_trials`: speaker codes (N,), gender groups (N,), (language, rows) parts."""
    n = len(ids)
    if len(speakers) != n:
        raise ValueError(f"ids and speakers have different lengths: {n} and {len(speakers)}")
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = [x for x in ids if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
        raise ValueError(f"utterance ids must be unique; repeated: {dup[:5]}")
    if balanced and n_nontarget is not None:
        raise ValueError("n_nontarget is set by balanced=True (as many non-targets as targets); pass balanced=False")
    for name, k in (("n_target", n_target), ("n_nontarget", n_nontarget)):
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {k!r}")
    spk = _codes(speakers, "speakers")
    gen = np.zeros(n, dtype=np.int64)
    if same_gender:
        if genders is None:
            raise ValueError("same_gender=True needs genders")
    if genders is not None:
        if len(genders) != n:
            raise ValueError(f"ids and genders have different lengths: {n} and {len(genders)}")
        g = _codes(genders, "genders")
        per_spk = {}
        for s, gg in zip(spk.tolist(), g.tolist()):
            if per_spk.setdefault(s, gg) != gg:
                bad = speakers[int(np.flatnonzero(spk == s)[0])]
                raise ValueError(f"speaker {bad!r} has utterances of more than one gender")
        if same_gender:
            gen = g
    if per_language:
        if languages is None:
            raise ValueError("per_language=True needs languages")
        if len(languages) != n:
            raise ValueError(f"ids and languages have different lengths: {n} and {len(languages)}")
        _codes(languages, "languages")  # refuses missing values
        lang = np.asarray([str(x) for x in languages])
        parts = [(str(name), np.flatnonzero(lang == name)) for name in np.unique(lang)]
    else:
        parts = [(None, np.arange(n, dtype=np.int64))]

    return spk, gen, parts


def _draw_part(members: np.ndarray, spk: np.ndarray, gen: np.ndarray, name: str | None, n_target: int | None,
               n_nontarget: int | None, balanced: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(enrol rows, test rows, target?) of the trials drawn among ``members`` (one language, or all)."""
    # Sort by (gender group, speaker, position): a speaker's utterances and a group's speakers
    # become contiguous runs, so the eligible partners of each utterance form one index range.
    order = members[np.lexsort((members, spk[members], gen[members]))]
    s, g = spk[order], gen[order]
    m = len(order)
    pos = np.arange(m, dtype=np.int64)
    spk_change = np.r_[True, (s[1:] != s[:-1]) | (g[1:] != g[:-1]), True]
    grp_change = np.r_[True, g[1:] != g[:-1], True]
    spk_end = np.flatnonzero(spk_change)[1:][np.cumsum(spk_change[:-1]) - 1]
    grp_end = np.flatnonzero(grp_change)[1:][np.cumsum(grp_change[:-1]) - 1]
    where = "" if name is None else f" (language {name!r})"
    ti, tj = _sample_pairs(pos + 1, spk_end, n_target, rng, "target" + where)
    k_non = len(ti) if balanced else n_nontarget
    ni, nj = _sample_pairs(spk_end, grp_end, k_non, rng, "non-target" + where)
    a = order[np.r_[ti, ni]]
    b = order[np.r_[tj, nj]]
    swap = rng.random(len(a)) < 0.5  # random enrol/test orientation
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    return a, b, np.r_[np.ones(len(ti), bool), np.zeros(len(ni), bool)]


def make_trials(
    ids: Sequence[str],
    speakers: Sequence[Any],
    *,
    genders: Sequence[Any] | None = None,
    languages: Sequence[Any] | None = None,
    same_gender: bool = False,
    per_language: bool = False,
    n_target: int | None = None,
    n_nontarget: int | None = None,
    balanced: bool = True,
    seed: int = 0,
) -> Trials:
    """Draw trials from a labelled set: ids, speakers (N,) and optional genders, languages (N,).

    Target trials pair two different utterances of one speaker, non-targets two speakers (of the same
    gender when ``same_gender``, as the paper does); with ``per_language`` both utterances of every
    trial share a language, counts apply to each language separately and the trials carry it. Pairs
    are unordered and drawn uniformly without replacement: ``n_target=None`` takes every target pair;
    ``balanced`` draws as many non-targets as targets, else ``n_nontarget`` (None: every eligible pair).
    The same inputs and seed give the same trials.
    """
    ids = [str(x) for x in ids]
    spk, gen, parts = _trial_groups(ids, speakers, genders, languages, same_gender, per_language, n_target,
                                    n_nontarget, balanced)
    rng = np.random.default_rng(seed)
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    y_all: list[np.ndarray] = []
    lang_all: list[str] = []
    for name, members in parts:
        a, b, y = _draw_part(members, spk, gen, name, n_target, n_nontarget, balanced, rng)
        a_all.append(a)
        b_all.append(b)
        y_all.append(y)
        if name is not None:
            lang_all.extend([name] * len(a))
    a = np.concatenate(a_all)
    b = np.concatenate(b_all)
    y = np.concatenate(y_all)
    perm = rng.permutation(len(a))
    trials = Trials(
        [ids[i] for i in a[perm]],
        [ids[i] for i in b[perm]],
        y[perm],
        [lang_all[i] for i in perm] if per_language else None,
    )
    logger.info("made %d trials (%d target, %d non-target)", len(trials), trials.n_target, trials.n_nontarget)
    return trials
