"""The HTML every page of the tool is built from: escaping, a table, an inline PNG.

A leaf module, so that the report (`report/html_blocks.py`) and the back-test's report section
(`backtest/report.py`, a layer below the report) write the same markup from one place.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path

__all__ = ["e", "png_src", "table_html"]


def e(value: object) -> str:
    """`value` as HTML text (quotes escaped too: it may stand in an attribute)."""
    return html.escape(str(value), quote=True)


def table_html(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of header cells and rows of cells, all already written as HTML (the header's
    contents; each row's `<td>...</td>`)."""
    head_html = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table><thead><tr>{head_html}</tr></thead><tbody>{body}</tbody></table>"


def png_src(path: Path) -> str:
    """The `src` of an <img> that carries the PNG at `path` inside the page."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
