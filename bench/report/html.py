"""The leaderboard: one static HTML page (no network, works from file://).

Every string from results reaches the page through jinja2 autoescaping, or as JSON through the `tojson`
filter (which escapes <, >, & and ' so a `</script>` in a method name cannot close the data block); the
page's script writes it back with textContent only, and plotly draws it as escaped SVG text (see
bench.report.interactive). The leaderboard needs nothing beside the page; the figures are files next to it
(figures/ for the static PNGs, plotly.min.js for the interactive ones), loaded by relative paths.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
import pandas as pd

from bench import stats
from bench.report import interactive
from bench.report.cell_details import ALPHA, CI_LABEL, detail_lines, heading_lines, interval_text, p_text, score_text
from bench.report.tables import (
    METRIC_NAMES,
    STS_AVG,
    Table,
    method_order,
    precision_order,
    score_digits,
    task_name,
    task_order,
)

TEMPLATES = Path(__file__).parent / "templates"
ROW_KEY = ["backbone", "method", "layer", "dim", "precision"]  # one leaderboard row each
# (sort key, header) of the columns every row has; score columns follow
FIXED_COLUMNS = [("backbone", "backbone"), ("method", "method"), ("layer", "layer"), ("dim", "dim"),
                 ("precision", "precision"), ("bytes", "bytes"), ("cost", "rel. cost"), ("target", "target")]
FAMILY_NAMES = {"sts": "STS", "retrieval": "Retrieval"}


@dataclass(frozen=True)
class ScoreColumn:
    key: str  # the sort key the URL keeps: "task:<task>" or "family:<family>"
    name: str
    metric: str  # what the column's numbers are, printed under its name
    csv: str  # the prefix of its columns in the CSV export
    tasks: tuple[str, ...]  # the task itself, or the family's tasks it averages


def score_columns(details: pd.DataFrame) -> list[ScoreColumn]:
    """One column per task, each with its own metric, then the mean of each family that has several tasks (the
    synthetic STS average is that mean for STS, so it is not a column of its own)."""
    tasks = [t for t in task_order(details) if t != STS_AVG]
    first = details.drop_duplicates("task").set_index("task")
    columns = [ScoreColumn(f"task:{t}", task_name(t, details), _metric_name(first.loc[t, "metric"]), t, (t,))
               for t in tasks]
    for family in sorted({first.loc[t, "family"] for t in tasks}):
        members = tuple(t for t in tasks if first.loc[t, "family"] == family)
        if len(members) > 1:
            name = FAMILY_NAMES.get(family, family)
            metric = f"mean {_metric_name(first.loc[members[0], 'metric'])} over {len(members)} tasks"
            columns.append(ScoreColumn(f"family:{family}", f"{name} avg", metric, f"{family}_avg", members))
    return columns


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def leaderboard_rows(details: pd.DataFrame, columns: list[ScoreColumn]) -> list[dict]:
    """One JSON-ready row per (backbone, method, layer, dim, precision) with a cell per score column (null where
    that task was not evaluated). Numbers for sorting and CSV, display strings made here (one formatter for the
    page and its figures); NaN becomes null."""
    digits = {t: score_digits(details, t) for t in details["task"].unique()}
    rows = []
    for key, group in details[details["task"] != STS_AVG].groupby(ROW_KEY, sort=False):  # keeps cell_stats order
        backbone, method, layer, dim, precision = key
        by_task = {c.task: c for c in group.itertuples(index=False)}
        first = group.iloc[0]  # bytes and relative cost belong to the cell, whatever the task
        rows.append({"backbone": backbone, "method": method, "layer": int(layer), "dim": int(dim),
                     "precision": precision, "bytes": int(first["bytes_per_vector"]),
                     "cost": round(float(first["rel_cost"]), 4), "target": bool(group["is_target"].any()),
                     "cells": [_cell(by_task, c, digits[c.tasks[0]]) for c in columns]})
    return rows


def _cell(by_task: dict, column: ScoreColumn, digits: int) -> dict | None:
    if len(column.tasks) > 1:
        return _family_cell(by_task, column, digits)
    cell = by_task.get(column.tasks[0])
    return None if cell is None else _task_cell(cell, digits)


def _number(x, digits: int) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


def _task_cell(cell, digits: int) -> dict:
    return {"mean": _number(cell.mean, digits + 2), "std": _number(cell.std, digits + 2), "seeds": int(cell.n),
            "ci_low": _number(cell.ci_low, digits + 2), "ci_high": _number(cell.ci_high, digits + 2),
            "seed_ci_low": _number(cell.seed_ci_low, digits + 2),
            "seed_ci_high": _number(cell.seed_ci_high, digits + 2),
            "p_value": _number(cell.p_value, 6), "seed_p_value": _number(cell.seed_p_value, 6),
            "q_value": _number(cell.q_value, 6), "encode_ms": _number(cell.encode_ms, 3),
            "text": score_text(cell, digits),
            "detail": " ".join(filter(None, [interval_text(cell, digits), p_text(cell)])),
            "title": "\n".join(heading_lines(cell, digits) + detail_lines(cell, digits))}


def _family_cell(by_task: dict, column: ScoreColumn, digits: int) -> dict | None:
    """The mean over the family's tasks, only where the row has every one of them."""
    if not all(t in by_task for t in column.tasks):
        return None
    mean = sum(by_task[t].mean for t in column.tasks) / len(column.tasks)
    return {"mean": _number(mean, digits + 2), "text": f"{mean:.{digits}f}", "detail": "",
            "title": f"{column.name}: {column.metric}"}


def significance_notes(details: pd.DataFrame) -> list[tuple[str, str]]:
    """(backbone, what its p- and q-values are), for the backbones that have tests: the same families and marks
    as the tables (bench.report._statistics)."""
    notes = []
    for backbone, part in details[details["test"] != ""].groupby("backbone", sort=True):
        references = ", ".join(sorted(set(part["reference"])))
        note = (f"p: two-sided paired test against {references} on the same examples "
                f"({stats.test_description(part)}); q: {stats.BH} over the tests of one family (a paper table's "
                f"cells, or the rest of one precision's grid); * where q < {ALPHA:g}, as the tables mark it.")
        if (part["seed_test"] != "").any():
            note += (" The interval shown is the two-level one (seeds, then examples) where a cell has 2 or more "
                     "seeds, else the one over examples.")
        notes.append((backbone, note))
    return notes


def ranges(details: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(name, smallest, largest) of layer, dim and bytes: the bounds and placeholders of the range filters."""
    return [(name, int(details[col].min()), int(details[col].max())) if not details.empty else (name, 0, 0)
            for name, col in (("layer", "layer"), ("dim", "dim"), ("bytes", "bytes_per_vector"))]


def figure_panels(precisions: list[str]) -> list[tuple[str, str, list[str]]]:
    """(kind, title, precision choices) of the interactive figures (kinds: the keys of `interactive.figures`)."""
    return [("heatmap", "Quality over layer x dim (red boxes: targets)", precisions),
            ("pareto", "Quality vs cost (marker: precision; line: each method's Pareto frontier)",
             [interactive.ALL_PRECISIONS, *precisions])]


def render_leaderboard(details: pd.DataFrame, provenance: dict[str, list[str]], tables: list[tuple[str, Table]],
                       figures: list[tuple[str, str, str]]) -> str:
    """details: cell_details output; tables and figures come as (backbone, table) and (backbone, title, path of
    the PNG relative to the page), grouped by backbone."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["zip"] = zip
    columns = score_columns(details)
    interactive_figures = interactive.figures(details)
    return env.get_template("leaderboard.html.j2").render(
        fixed_columns=FIXED_COLUMNS, score_columns=columns, rows=leaderboard_rows(details, columns),
        column_data=[asdict(c) for c in columns], provenance=provenance, tables=tables, ci_label=CI_LABEL,
        notes=significance_notes(details), ranges=ranges(details), methods=method_order(details["method"]),
        backbones=sorted(set(details["backbone"])), precisions=precision_order(details),
        tasks=[(t, task_name(t, details)) for t in task_order(details)], plotly_js=interactive.PLOTLY_JS.name,
        has_figures=bool(interactive_figures["heatmap"]), interactive_figures=interactive_figures,
        plotly_template=interactive.template_json(), figure_panels=figure_panels(precision_order(details)),
        figures=figures)
