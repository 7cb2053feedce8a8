"""`report.html`: one self-contained page (inline CSS, charts as data: PNGs, no scripts).

Nothing is fetched when the page opens: no fonts, stylesheets, scripts or images from elsewhere,
so it reads the same offline, attached to an e-mail, or years later.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from warmstart.report.table import LEGEND, Row, cell, columns_of

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1150px;
       padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
dl.context { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; }
dl.context dt { font-weight: 600; }
dl.context dd { margin: 0; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
div.scroll { overflow-x: auto; }
th, td { border-bottom: 1px solid #d6dae3; padding: .35rem .6rem; text-align: right; }
td { white-space: nowrap; }
td.cards { text-align: left; white-space: normal; min-width: 12rem; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: 700; color: #0b6b2f; }
p.legend { font-size: .85rem; color: #4c5566; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e7ee; }
figcaption { font-size: .9rem; color: #4c5566; }
"""


@dataclass(frozen=True)
class Chart:
    """A chart of the report: its element id, heading, caption and base64 PNG."""

    id: str
    title: str
    caption: str
    png: str


def results_table(rows: list[Row], best: dict[str, set[str]]) -> str:
    """The results table as HTML, best cells with class `best`."""
    columns = columns_of(rows)
    head = "".join(f"<th>{escape(c.title)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="best">{escape(cell(r, c))}</td>' if r.strategy in best.get(c.key, ())
            else f"<td>{escape(cell(r, c))}</td>" for c in columns)
        links = ", ".join(f'<a href="{escape(n)}/README.md">{escape(n)}</a>' for n in r.runs)
        body.append(f"<tr><td>{escape(r.strategy)}</td><td>{len(r.runs)}</td>{cells}"
                    f'<td class="cards">{links}</td></tr>')
    return (f'<table id="results"><thead><tr><th>strategy</th><th>runs</th>{head}'
            f'<th>model cards</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def page(title: str, context: dict[str, str], table: str, charts: list[Chart], *,
         legend: str = LEGEND) -> str:
    """The whole document (`legend`: the note under the table)."""
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in context.items())
    figures = "".join(
        f'<section><h2>{escape(c.title)}</h2><figure id="{escape(c.id)}">'
        f'<img alt="{escape(c.title)}" src="data:image/png;base64,{c.png}">'
        f"<figcaption>{escape(c.caption)}</figcaption></figure></section>"
        for c in charts)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><dl class="context">{facts}</dl>'
        f'<h2>Results</h2><div class="scroll">{table}</div>'
        f'<p class="legend">{escape(legend)}</p>{figures}'
        "</body></html>\n"
    )
