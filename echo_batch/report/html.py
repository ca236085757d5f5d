"""HTML of the cohort report: a self-contained page that links the PNG plots (no scripts).

The page is responsive: images scale to the column, wide tables scroll inside their own box, long
words wrap, so nothing overflows the window horizontally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #222; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; }
h1 { font-size: 1.6rem; margin-top: 0; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
p, li, figcaption { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; display: block; }
figure { margin: 1rem 0; }
figcaption { font-size: .85rem; color: #555; white-space: pre-line; }
.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { padding: .25rem .5rem; border-bottom: 1px solid #e3e3e3; text-align: right;
         vertical-align: top; white-space: nowrap; }
th { background: #f5f5f5; }
td.text, th.text { text-align: left; white-space: normal; overflow-wrap: break-word; }
td.source { text-align: left; white-space: normal; min-width: 16rem; max-width: 36rem;
            color: #444; overflow-wrap: break-word; }
.kpi { display: flex; flex-wrap: wrap; gap: .75rem; padding: 0; list-style: none; }
.kpi li { background: #f5f7fa; border: 1px solid #dde3ea; border-radius: 6px;
          padding: .5rem .75rem; min-width: 9rem; }
.kpi b { display: block; font-size: 1.2rem; }
.meta, .note { color: #555; font-size: .85rem; }
.blocking { color: #c0392b; font-weight: 600; }
"""


def fmt(value: object, digits: int = 2, signed: bool = False) -> str:
    """A number for the page; an en dash for missing values."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "\u2013"
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return escape(str(value))


def pct(value: float | None, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    return f"{100 * value:.{digits}f} %"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1) -> str:
    """A scrollable table; cells are already-escaped HTML, the first ``text_columns`` left-aligned.

    A header ending in ``"|source"`` marks a wide text column (the suffix is not shown).
    """
    source_cols = {i for i, h in enumerate(headers) if h.endswith("|source")}
    head = "".join(
        f'<th class="{"text" if i < text_columns or i in source_cols else ""}">'
        f"{escape(h.removesuffix('|source'))}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = "source" if i in source_cols else ("text" if i < text_columns else "")
            cells.append(f'<td class="{cls}">{cell}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(src: str, alt: str, caption: str = "") -> str:
    """An ``<img>`` with its caption; ``src`` is relative to the page."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{escape(src)}" alt="{escape(alt)}" loading="eager">{cap}</figure>'


def kpis(items: Iterable[tuple[str, str]]) -> str:
    """A row of key figures: ``(value, label)`` pairs (value is escaped HTML)."""
    cells = "".join(f"<li><b>{value}</b>{escape(label)}</li>" for value, label in items)
    return f'<ul class="kpi">{cells}</ul>'


def section(anchor: str, title: str, *parts: str) -> str:
    """A titled section."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def paragraph(text: str, cls: str = "") -> str:
    """A paragraph of escaped text."""
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{escape(text)}</p>"


def page(title: str, meta: str, sections: Sequence[str]) -> str:
    """The whole document."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><main><h1>{escape(title)}</h1><p class="meta">{meta}</p>'
        f"{''.join(sections)}</main></body></html>\n"
    )
