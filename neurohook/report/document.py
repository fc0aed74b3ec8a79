"""The report as a list of blocks (headings, paragraphs, tables, images) and its Markdown and HTML renderings."""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union



__all__ = ["Block", "Heading", "Image", "Para", "Table", "count_label", "pct", "pct_ci", "pct_with_ci", "percent_label", "render_html", "render_markdown"]


MISSING = "n/a"
NOT_MEASURED = "not measured"
NOT_INFORMATIVE = "not informative"  # Acc(ALL) not above the majority rate beyond its interval
Results = Union[Mapping[str, Any], str, os.PathLike]


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (the paper's style); n/a for None."""
    return MISSING if x is None else f"{100 * x:.2f}"


def pct_ci(ci: tuple[float, float] | None) -> str:
    """A 95 % interval of fractions as ``[lo, hi]`` percentages with two decimals; n/a for None."""
    return MISSING if ci is None else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def pct_with_ci(x: float, ci: tuple[float, float] | None) -> str:
    """A fraction as a percentage, followed by its interval when it has one: ``"71.04 [64.84, 76.80]"``."""
    return f"{pct(x)} {pct_ci(ci)}" if ci else pct(x)


def percent_label(p: float) -> str:
    """A percentage of neurons such as 5 -> '5%', 27.5 -> '27.5%' or 6.6667 -> '6.67%' (two decimals at most)."""
    return f"{round(p, 2):g}%"


def count_label(x: float) -> str:
    """A (mean) neuron count with one decimal, without a trailing '.0' (the paper's Tables 5-7)."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@dataclass
class Table:
    """A titled table of strings; rendered the same way in Markdown and HTML."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Image:
    file: str  # name of the PNG next to the report
    caption: str


Block = Union[Heading, Para, Table, Image]


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.file})", "", f"*{b.caption}*", ""]
        else:
            out += [f"#### {b.title}", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join(["---"] * len(b.header)) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
            if b.note:
                out += [b.note, ""]
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eee}img{max-width:100%}
figure{margin:1em 0}figcaption{font-style:italic;font-size:90%}.note{font-size:90%;color:#555}"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one HTML page (all text escaped; images are the PNG files next to it)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Image):
            out.append(f'<figure><img src="{e(b.file)}" alt="{e(b.caption)}"><figcaption>{e(b.caption)}</figcaption></figure>')
        else:
            out.append(f"<h4>{e(b.title)}</h4>")
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            out.append("</tbody></table>")
            if b.note:
                out.append(f'<p class="note">{e(b.note)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
