"""The report page's building blocks: its CSS, escaping and cell formats, verdict badges, tables
(folded when long) and figures with their data links."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from stagewise.analysis.thresholds import threshold_text
from stagewise.html_parts import e, png_src, table_html
from stagewise.report.figures import RenderedFigure
from stagewise.report.published import PUBLISHED_LABEL
from stagewise.report.tables import Table

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1240px;
padding:1em 1.5em;color:#1a1a1a;line-height:1.4;font-size:14px;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.8em;border-bottom:1px solid #ccc}h4{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{overflow-wrap:normal;min-width:3em}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
.scroll{overflow-x:auto;max-width:100%}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#0072B2;font-size:12px}
.note{color:#555;font-size:12px;margin:.1em 0 .8em}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11px;font-weight:600;margin-right:4px}
.pass,.promote{background:#d6f0e3;color:#00603d}.fail,.stop{background:#fbe0d2;color:#8a3500}
.pending{background:#fff4c2;color:#6b5800}.manual{background:#f3dcec;color:#7d2f66}
.posthoc{background:#fbe0d2;color:#8a3500}.published{background:#e0e0e0;color:#333}
.incomplete,.untested{background:#e8e8e8;color:#444}.outside{background:#dbe9f6;color:#0b3d66}
.pub{border-left:4px solid #999;padding:.2em .8em;background:#f6f6f6;margin:.8em 0}
code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.id,td.id{white-space:nowrap;overflow-wrap:normal}td .hash{word-break:normal;white-space:nowrap}
figure{margin:1em 0;border:1px solid #ddd;padding:.5em;background:#fff;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#444}
nav ul{columns:3;column-gap:2em;font-size:13px;margin:.3em 0}nav li{break-inside:avoid;overflow-wrap:anywhere}ul.pending li{color:#6b5800}
.outcome{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);
grid-template-areas:"lead fig" "more fig";grid-template-rows:auto 1fr;gap:0 1.5em;align-items:start}
.outcome .lead{grid-area:lead;font-size:16px;margin:.3em 0 .5em}
.outcome figure{grid-area:fig;margin:.3em 0}.outcome .more{grid-area:more;font-size:13px}
.outcome .more ul{padding-left:1.2em;margin:.2em 0}#outcome h2{margin-top:.6em}
@media (max-width:1000px){.outcome{grid-template-columns:minmax(0,1fr);
grid-template-areas:"lead" "fig" "more";grid-template-rows:auto}nav ul{columns:2}}
"""

KEY_GATE_COLUMNS = (
    "label",
    "verdict",
    "n_cells",
    "mean_val_bpb",
    "mean_rank",
    "first_rank_cells",
    "mean_gap_to_reference",
    "max_gap_to_reference",
)
KEY_SENSITIVITY_COLUMNS = (
    "label",
    "statistic",
    "observed",
    "declared_threshold",
    "declared_verdict",
    # smallest_passing_threshold is in the folded full table: the grid shows where it flips
)
KEY_PLAN_COLUMNS = ("stage", "budget", "seeds", "hosts", "candidate_count", "budgeted_gpu_hours")
CONFIDENCE_KEYS = ("interval", "p_verdict", "decisive")
FOLD_ROWS = 15  # longer tables start folded


def fmt_cell(value: object) -> tuple[str, bool]:
    """Display text of a cell and whether it is numeric (right-aligned)."""
    if value is None or value == "":
        return "", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-", True
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value)), True
        # Six decimals is the printed precision of val_bpb; trailing zeros say nothing.
        text = f"{value:.6f}".rstrip("0")
        return (text + "0" if text.endswith(".") else text), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, list | tuple):
        return "; ".join(fmt_cell(v)[0] for v in value), False
    return str(value), False


# Fixed decimals per column, at the precision the paper prints (0.036890, 0.010, 3.25): a
# trailing zero is a printed digit. Columns not named here use `fmt_cell`'s default.
SIX = 6
COLUMN_DECIMALS: tuple[tuple[str, int], ...] = (
    ("flip_threshold", SIX),
    ("threshold", 3),
    ("p_verdict", 3),
    ("val_bpb", SIX),
    ("gap", SIX),
    ("observed", SIX),
    ("_low", SIX),
    ("_high", SIX),
    ("sd_", SIX),
    ("params_M", SIX),
    ("tokens_M", SIX),
)
SCIENTIFIC = ("var_",)  # variances: two significant digits (1.9e-7, not 0.0)


def column_format(column: str, value: object) -> str | None:
    """The display text of a float in a column with a fixed precision (None: the default)."""
    if not isinstance(value, float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    if any(column.startswith(p) for p in SCIENTIFIC):
        return fmt_small(value)
    if column == "mean_rank" or (column.endswith("_rank") and not value.is_integer()):
        return f"{value:.2f}"
    for part, decimals in COLUMN_DECIMALS:
        if part in column:
            return f"{value:.{decimals}f}"
    return None


def fmt_small(value: float) -> str:
    """Two significant digits, in scientific notation below 0.001 (1.9e-7; 0.0015)."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mant, exp = f"{value:.1e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{value:.2g}"


def fmt_threshold(value: object) -> str:
    """A threshold at three decimals at least (0.010, 0.025), more when it has them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return threshold_text(value)


def fmt_param(key: str, value: object) -> str:
    """A rule parameter as written in the report (thresholds at fixed decimals)."""
    return fmt_threshold(value) if key == "threshold" else str(value)


def fmt_hours(value: object) -> str:
    """Hours at four significant digits (169.2, 432, 0.03159); "not known yet" for None."""
    return f"{float(value):.4g}" if isinstance(value, int | float) else "not known yet"


def hours_text(value: object) -> str:
    """Hours in a sentence: four significant digits, never "None" or "?"."""
    return fmt_hours(value)


BADGE_COLUMNS = ("verdict", "decision", "status", "declared_verdict")
BADGES = {"pass", "fail", "promote", "stop", "incomplete", "untested", "pending"}


def badge(text: str) -> str:
    return f"<span class='badge {e(text.split()[0] if text else '')}'>{e(text)}</span>"


HASH = re.compile(r"[0-9a-f]{40,64}")
HASH_SHOWN = 12  # hex digits shown; the full value is the cell's tooltip and in tables/
ID_COLUMNS = ("label", "condition_id", "gate", "stage", "host", "run", "reference")


def header(name: str) -> str:
    """A column name that may wrap after its underscores, never inside a word."""
    return "_<wbr>".join(e(part) for part in name.split("_"))


def hash_cell(text: str) -> str:
    return f"<span class='hash' title='{e(text)}'>{e(text[:HASH_SHOWN])}…</span>"


def _grid(table: Table, shown: Sequence[str]) -> str:
    body = []
    for row in table.rows:
        cells = []
        for col in shown:
            value = row.get(col)
            fixed = column_format(col, value)
            text, numeric = (fixed, True) if fixed is not None else fmt_cell(value)
            if (col in BADGE_COLUMNS or col.startswith("at ")) and text in BADGES:
                cells.append(f"<td>{badge(text)}</td>")
            elif HASH.fullmatch(text):
                cells.append(f"<td>{hash_cell(text)}</td>")
            elif col in ID_COLUMNS:
                cells.append(f"<td class=id>{e(text)}</td>")
            else:
                cells.append(f"<td{' class=num' if numeric else ''}>{e(text)}</td>")
        body.append(cells)
    return f"<div class='scroll'>{table_html([header(c) for c in shown], body)}</div>"


def ids_unbroken(escaped: str, ids: Sequence[str]) -> str:
    """Escaped text with every id in `ids` kept on one line (`ref-d2` never breaks at its
    hyphen): each whole-word occurrence is wrapped in a nowrap span."""
    names = sorted({e(i) for i in ids if i}, key=len, reverse=True)
    if not names:
        return escaped
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w/-])")
    return pattern.sub(lambda m: f"<span class='id'>{m.group(1)}</span>", escaped)


def render_table(
    table: Table | None,
    *,
    caption: bool = True,
    columns: Sequence[str] | None = None,
    key_columns: Sequence[str] | None = None,
    folded: bool | None = None,
) -> str:
    """A table as HTML: wide tables scroll inside their own box, never the page.

    `columns` picks (and orders) what is shown; with `key_columns` only those are shown open
    and the full table follows folded in <details>; `folded` (default: more than FOLD_ROWS
    rows) folds the whole table. The files under tables/ always keep every column.
    """
    if table is None:
        return ""
    shown = [c for c in (columns or table.columns) if c in table.columns]
    parts = []
    if caption:
        parts.append(f"<h4 id='t-{e(table.name)}'>{e(table.title)}</h4>")
    if table.published:
        parts.append(f"<p><span class='badge published'>{e(PUBLISHED_LABEL)}</span></p>")
    if not table.rows:
        parts.append("<p class='note'>(no rows)</p>")
    else:
        keys = [c for c in (key_columns or []) if c in shown]
        fold = len(table.rows) > FOLD_ROWS if folded is None else folded
        if fold:
            parts.append(
                f"<details><summary>show the table ({len(table.rows)} rows)</summary>"
                + _grid(table, shown)
                + "</details>"
            )
        elif keys and len(keys) < len(shown):
            parts.append(_grid(table, keys))
            parts.append(
                f"<details><summary>all {len(shown)} columns</summary>"
                + _grid(table, shown)
                + "</details>"
            )
        else:
            parts.append(_grid(table, shown))
    files = f"tables/{table.name}.csv, tables/{table.name}.json"
    note = f"{table.note} · " if table.note else ""
    parts.append(f"<p class='note'>{e(note)}{e(files)}</p>")
    return "".join(parts)


def render_figure(fig: RenderedFigure | None) -> str:
    if fig is None:
        return ""
    if fig.png is None:
        return (
            f"<figure id='fig-{e(fig.name)}'><figcaption><b>{e(fig.title)}</b>: "
            f"<span class='badge pending'>not drawn</span> {e(fig.skipped or '')}</figcaption></figure>"
        )
    return (
        f"<figure id='fig-{e(fig.name)}'><img alt='{e(fig.title)}' src='{png_src(fig.png)}'>"
        f"<figcaption><b>{e(fig.title)}.</b> {e(fig.caption)} "
        f"<span class='note'>figures/{e(fig.name)}.png, .svg; drawn from "
        f"figures/{e(fig.name)}.csv, .json</span></figcaption></figure>"
    )


def figures_in(figures: Sequence[RenderedFigure], section: str) -> list[RenderedFigure]:
    return [f for f in figures if f.section == section]


def skipped_figure(figures: Sequence[RenderedFigure], name: str) -> RenderedFigure | None:
    return next((f for f in figures if f.name == name and f.png is None), None)
