"""The leaderboard: one self-contained static HTML page (no network, works from file://).

Every string from results reaches the page through jinja2 autoescaping, or as JSON through the `tojson`
filter (which escapes <, >, & and ' so a `</script>` in a method name cannot close the data block), and the
page's script writes it back with textContent only.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import jinja2
import pandas as pd

from bench.report.tables import Table, method_order, precision_order, score_digits, task_name, task_order

TEMPLATES = Path(__file__).parent / "templates"
COLUMNS = ["method", "layer", "dim", "precision", "task", "score", "std", "seeds", "bytes", "rel. cost", "target",
           "backbone"]


def leaderboard_rows(cells: pd.DataFrame) -> list[list]:
    """One JSON-ready row per cell, in the order of COLUMNS; NaN (a single seed's std) becomes null."""
    digits = {t: score_digits(cells, t) for t in task_order(cells)}

    def clean(x: float, nd: int) -> float | None:
        return None if math.isnan(x) else round(float(x), nd + 2)
    return [[r.method, int(r.layer), int(r.dim), r.precision, task_name(r.task), clean(r.mean, digits[r.task]),
             clean(r.std, digits[r.task]), int(r.n), int(r.bytes_per_vector), round(float(r.rel_cost), 4),
             bool(r.is_target), r.backbone] for r in cells.itertuples(index=False)]


def render_leaderboard(cells: pd.DataFrame, provenance: dict[str, list[str]], tables: list[tuple[str, Table]],
                       figures: list[tuple[str, str, bytes]]) -> str:
    """tables and figures come as (backbone, table) and (backbone, title, PNG), grouped by backbone."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["zip"] = zip
    return env.get_template("leaderboard.html.j2").render(
        columns=COLUMNS, rows=leaderboard_rows(cells), provenance=provenance, tables=tables,
        methods=method_order(cells["method"]), tasks=[task_name(t) for t in task_order(cells)],
        backbones=sorted(set(cells["backbone"])),
        precisions=precision_order(cells), digits={task_name(t): score_digits(cells, t) for t in task_order(cells)},
        figures=[(backbone, title, base64.b64encode(png).decode("ascii")) for backbone, title, png in figures])
