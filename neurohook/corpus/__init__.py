"""The built-in multilingual speech corpus, synthesised offline with eSpeak NG.

Labels: speaker, gender, language (ar, en, es, de, fr, ru, cmn), accent (English: en-us, en,
en-gb-scotland, en-gb-x-rp, en-gb-x-gbcwmd, en-029; Spanish: es, es-419) and channel (hq,
telephone, broadcast) — analogues of the paper's GC, SV, LID, DID and CC tasks.
"""

from __future__ import annotations

from neurohook.corpus.build import CORPUS_VERSION, MANIFEST_COLUMNS, SAMPLE_RATE, build_corpus, cache_dir, default_corpus_dir
from neurohook.corpus.channels import CHANNELS
from neurohook.corpus.plan import ENGLISH_ACCENTS, SIZES, SPANISH_ACCENTS, plan_corpus
from neurohook.corpus.text import LANGUAGES

__all__ = [
    "CHANNELS",
    "CORPUS_VERSION",
    "ENGLISH_ACCENTS",
    "LANGUAGES",
    "MANIFEST_COLUMNS",
    "SAMPLE_RATE",
    "SIZES",
    "SPANISH_ACCENTS",
    "build_corpus",
    "cache_dir",
    "default_corpus_dir",
    "plan_corpus",
]
