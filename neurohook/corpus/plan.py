"""What the built-in corpus contains: sizes, speakers (stable identities) and utterance specs.

A speaker is an eSpeak voice file (language or accent) + a voice variant (which fixes the gender)
+ pitch, pitch-range and rate settings + a vocal-tract scaling (formants and pitch together). The
pitch settings of male and female speakers overlap (men 25-95, women 5-75 on eSpeak's 0-99 scale),
so with the vocal-tract scaling a man can sound higher than a woman. Speaker ``k`` of a language
depends only on the seed, the language and ``k``, so a larger size adds speakers without changing
the existing ones. Each utterance adds its own recording conditions
(:mod:`neurohook.corpus.variation`) and 3 babble talkers of other languages.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np

from neurohook.data.splits import pick_test_groups
from neurohook.corpus.channels import CHANNELS
from neurohook.corpus.text import LANGUAGES
from neurohook.corpus.variation import BABBLE_TALKERS, VTL_FACTORS, Conditions, draw_conditions

__all__ = [
    "ENGLISH_ACCENTS",
    "FEMALE_VARIANTS",
    "MALE_VARIANTS",
    "SIZES",
    "SPANISH_ACCENTS",
    "Size",
    "Speaker",
    "UtteranceSpec",
    "plan_corpus",
]

#: English voice files (the dialect-identification analogue).
ENGLISH_ACCENTS: tuple[str, ...] = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
#: Spanish voice files (Spain vs Latin America).
SPANISH_ACCENTS: tuple[str, ...] = ("es", "es-419")
MALE_VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
FEMALE_VARIANTS: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "linda", "belinda")


@dataclass(frozen=True)
class Size:
    """Speakers per non-English language, English speakers per accent, utterances per speaker."""

    speakers_per_language: int
    english_per_accent: int
    utterances_per_speaker: int


SIZES: dict[str, Size] = {
    "tiny": Size(2, 1, 2),  # 36 utterances: every language, gender, accent and channel
    "small": Size(4, 2, 8),  # 288 utterances
    "medium": Size(12, 4, 16),  # 1536 utterances; >= 12 speakers per language, both genders
    "large": Size(24, 8, 32),  # 6144 utterances
}


@dataclass(frozen=True)
class Speaker:
    """A stable synthetic speaker identity."""

    speaker: str
    language: str
    accent: str  # the eSpeak voice file
    variant: str
    gender: str  # "male" | "female"
    pitch: int
    pitch_range: int
    rate: int
    index: int
    vtl: float = 1.0  # vocal-tract scaling of every frequency (one of VTL_FACTORS)

    @property
    def voice(self) -> str:
        """The eSpeak voice name: ``file+variant``."""
        return f"{self.accent}+{self.variant}"


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to make one utterance (deterministically)."""

    utt_id: str
    speaker: Speaker
    channel: str
    kind: str  # "digits" | "words"
    n_tokens: int
    seed: int
    split: str
    relpath: str  # wav path relative to the corpus folder
    conditions: Conditions | None = None  # room, noise, level and channel parameters
    babble: tuple[tuple[str, str], ...] = ()  # (language, voice) of each babble talker

    @property
    def rate(self) -> int:
        """eSpeak words per minute of this utterance: the speaker's, scaled by its conditions."""
        scale = self.conditions.rate_scale if self.conditions is not None else 1.0
        return int(round(self.speaker.rate * scale))


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from the parts (stable across Python runs, unlike hash())."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_speaker(language: str, k: int, seed: int) -> Speaker:
    """Speaker ``k`` of ``language`` (gender and accent cycle with ``k``; the rest is seeded)."""
    rng = random.Random(derive_seed("speaker", seed, language, k))
    if language == "en":
        n = len(ENGLISH_ACCENTS)
        accent = ENGLISH_ACCENTS[k % n]
        female = (k + k // n) % 2 == 1  # each accent alternates genders over its speakers
    elif language == "es":
        accent = SPANISH_ACCENTS[(k // 2) % 2]
        female = k % 2 == 1
    else:
        accent = language
        female = k % 2 == 1
    pool = FEMALE_VARIANTS if female else MALE_VARIANTS
    variant = pool[(k // 2 + rng.randrange(len(pool))) % len(pool)]
    return Speaker(
        speaker=f"{language}-{k:02d}",
        language=language,
        accent=accent,
        variant=variant,
        gender="female" if female else "male",
        pitch=rng.randint(5, 75) if female else rng.randint(25, 95),
        pitch_range=rng.randint(30, 80),
        rate=rng.randint(145, 205),
        index=k,
        vtl=rng.choice(VTL_FACTORS),
    )


def _test_speakers(speakers: list[Speaker], seed: int) -> set[str]:
    """Speaker-disjoint test side, stratified by language and accent: a quarter (>= 1) of each group.

    Groups of one speaker (an accent with a single speaker at small sizes) are pooled per language,
    so every language has test speakers at every size.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for s in speakers:
        groups.setdefault((s.language, s.accent), []).append(s.speaker)
    strata = {key: names for key, names in groups.items() if len(names) >= 2}
    for (language, _), names in groups.items():
        if len(names) < 2:
            strata.setdefault((language, "pooled"), []).extend(names)
    return pick_test_groups(strata, 0.25, np.random.default_rng(derive_seed("split", seed)))


def plan_corpus(size: str, seed: int) -> list[UtteranceSpec]:
    """Every utterance of a corpus size and seed, in manifest order."""
    try:
        sz = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown corpus size {size!r}; choose from {list(SIZES)}") from None
    speakers = []
    for lang in LANGUAGES:
        n = sz.english_per_accent * len(ENGLISH_ACCENTS) if lang == "en" else sz.speakers_per_language
        speakers += [make_speaker(lang, k, seed) for k in range(n)]
    test = _test_speakers(speakers, seed)
    specs = []
    for spk in speakers:
        for j in range(sz.utterances_per_speaker):
            utt_id = f"{spk.speaker}-{j:03d}"
            rng = random.Random(derive_seed("utt", seed, utt_id))
            kind = "digits" if j % 2 == 0 else "words"
            n_tokens = rng.randint(4, 9) if kind == "digits" else rng.randint(3, 7)
            channel = CHANNELS[(j + spk.index) % len(CHANNELS)]
            others = [lang for lang in LANGUAGES if lang != spk.language]
            babble = tuple((lang, f"{lang}+{rng.choice(MALE_VARIANTS + FEMALE_VARIANTS)}")
                           for lang in rng.sample(others, BABBLE_TALKERS))
            specs.append(
                UtteranceSpec(
                    utt_id=utt_id,
                    speaker=spk,
                    channel=channel,
                    kind=kind,
                    n_tokens=n_tokens,
                    seed=derive_seed("audio", seed, utt_id),
                    split="test" if spk.speaker in test else "train",
                    relpath=f"audio/{spk.language}/{utt_id}.wav",
                    conditions=draw_conditions(utt_id, channel, seed),
                    babble=babble,
                )
            )
    return specs
