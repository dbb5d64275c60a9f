"""Records loader, display names, views (all / target in top 5) and the summary tables: the
report's tables, written as CSV and Markdown. The parts live in labels, loading, summaries
and card; this module names them all, as the report's modules and its users know them.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xcnn.report.card import *  # noqa: F401,F403
from xcnn.report.labels import *  # noqa: F401,F403
from xcnn.report.labels import method_label
from xcnn.report.loading import *  # noqa: F401,F403
from xcnn.report.summaries import *  # noqa: F401,F403


def _fmt(value: object, column: str, digits: int = 3) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "–"
        if column == "Sum of P":
            return f"{value:.2f}"
        if column.endswith("(%)") or column == "ms per map":
            return f"{value:.1f}"
        if "p" in column.split() and value < 0.001:  # p-values: keep tiny ones readable
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def format_cells(table: pd.DataFrame, digits: int = 3) -> list[list[str]]:
    return [[_fmt(v, c, digits) for v, c in zip(row, table.columns)] for row in table.itertuples(index=False)]


def to_markdown(table: pd.DataFrame, caption: str = "", digits: int = 3) -> str:
    def esc(text: str) -> str:
        # Names come from the data (categories, photos): markdown viewers render raw HTML, a pipe
        # would split the cell and a line break would end the row.
        text = html.escape(text, quote=False)
        return " ".join(text.splitlines()).replace("|", "\\|")

    head = "| " + " | ".join(esc(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in format_cells(table, digits)]
    text = "\n".join([head, rule, *body]) + "\n"
    return f"{text}\n{caption}\n" if caption else text


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str, digits: int = 3,
                csv_table: pd.DataFrame | None = None) -> dict[str, Path]:
    """`name`.csv (full precision; `csv_table` when the shown table merges numbers into text) and
    `name`.md (rounded to `digits`, with caption)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    (table if csv_table is None else csv_table).to_csv(csv_path, index=False, float_format="%.10g")
    md_path.write_text(to_markdown(table, caption, digits), encoding="utf-8")
    return {"csv": csv_path, "md": md_path}


def paired_for_display(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["method A"] = out["method A"].map(method_label)
    out["method B"] = out["method B"].map(method_label)
    out["A wins"] = 100.0 * out["A wins"]
    return out.rename(columns={"method A": "Method A", "method B": "Method B", "A wins": "A wins (%)"})
