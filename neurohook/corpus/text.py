"""Prompt text written for this project: digit strings and sequences from small per-language word lists."""

from __future__ import annotations

import random

__all__ = ["LANGUAGES", "WORDS", "join_tokens", "prompt_tokens"]

#: Languages of the built-in corpus (the paper's LID set).
LANGUAGES: tuple[str, ...] = ("ar", "en", "es", "de", "fr", "ru", "cmn")

# Everyday nouns (house, book, sun, moon, water, door, window, river, mountain, city, road, tree,
# flower, table, bread, milk, sky, sea, car, school, morning, evening, snow, wind), one list per
# language, written for neurohook.
WORDS: dict[str, tuple[str, ...]] = {
    "en": tuple(
        "house book sun moon water door window river mountain city road tree "
        "flower table bread milk sky sea car school morning evening snow wind".split()
    ),
    "es": tuple(
        "casa libro sol luna agua puerta ventana río montaña ciudad camino árbol "
        "flor mesa pan leche cielo mar coche escuela mañana noche nieve viento".split()
    ),
    "de": tuple(
        "Haus Buch Sonne Mond Wasser Tür Fenster Fluss Berg Stadt Straße Baum "
        "Blume Tisch Brot Milch Himmel Meer Auto Schule Morgen Abend Schnee Wind".split()
    ),
    "fr": tuple(
        "maison livre soleil lune eau porte fenêtre rivière montagne ville route arbre "
        "fleur table pain lait ciel mer voiture école matin soir neige vent".split()
    ),
    "ru": tuple(
        "дом книга солнце луна вода дверь окно река гора город дорога дерево "
        "цветок стол хлеб молоко небо море машина школа утро вечер снег ветер".split()
    ),
    "ar": tuple(
        "بيت كتاب شمس قمر ماء باب نافذة نهر جبل مدينة طريق شجرة "
        "وردة طاولة خبز حليب سماء بحر سيارة مدرسة صباح مساء ثلج ريح".split()
    ),
    "cmn": tuple(
        "房子 书 太阳 月亮 水 门 窗户 河 山 城市 路 树 "
        "花 桌子 面包 牛奶 天空 大海 汽车 学校 早上 晚上 雪 风".split()
    ),
}

_MAX_TOKENS = 16


def prompt_tokens(language: str, kind: str, rng: random.Random) -> list[str]:
    """A long seeded token sequence (digits or words); callers take a prefix of the length they need."""
    if kind == "digits":
        return [str(rng.randrange(10)) for _ in range(_MAX_TOKENS)]
    if kind == "words":
        return [rng.choice(WORDS[language]) for _ in range(_MAX_TOKENS)]
    raise ValueError(f"unknown prompt kind {kind!r}; use 'digits' or 'words'")


def join_tokens(language: str, tokens: list[str]) -> str:
    """Tokens as one prompt: digits and words separated by spaces (commas between Chinese words)."""
    sep = "，" if language == "cmn" and not tokens[0].isdigit() else " "
    return sep.join(tokens)
