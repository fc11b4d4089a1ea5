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
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Callable

import jinja2
import pandas as pd

from bench import stats
from bench.report import interactive
from bench.report.budget import BudgetTable
from bench.report.cell_details import ALPHA, CI_LABEL, p_shown
from bench.report.notes import test_description
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
TEXT_COLUMNS = ["reference", "test", "seed_test", "reason"]  # the cells' strings beside their task
Fixed = Callable[[float, int], str]  # prints a number with so many decimals (Python's way, or js_fixed)
Shown = Callable[[float, Fixed], str]  # how a view prints a number, given the `Fixed` of its language


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


def js_fixed(x: float, digits: int) -> str:
    """What the page's JavaScript prints for `x.toFixed(digits)`: the exact binary value rounded half away from
    zero (Python's format rounds exact halves to even), and -0 printed as 0."""
    text = str(Decimal(abs(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    return ("-" if x < 0 else "") + text


def page_number(x: float | None, places: int, shown: Shown | None = None) -> float | None:
    """x rounded to `places` decimals for the page's data (NaN: null), with more decimals only where those would
    change what the page prints: `shown(value, fixed)` is how the page prints the number, and the page's
    JavaScript (js_fixed) must print from the stored value what Python printed from the full one. An exact half
    that Python rounds to even, toward zero, is stored one ulp nearer zero (JavaScript rounds halves away)."""
    if x is None or math.isnan(x):
        return None
    x = float(x)
    for value in [*(round(x, more) for more in range(places, 18)), math.nextafter(x, 0.0)]:
        if shown is None or shown(value, js_fixed) == shown(x, _python_fixed):
            return value
    return x


def _python_fixed(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _decimals(digits: int) -> Shown:
    """How a number shown with `digits` decimals is printed."""
    return lambda value, fixed: fixed(value, digits)


def _coded(values: list) -> dict:
    return {v: i for i, v in enumerate(values)}


def page_data(details: pd.DataFrame, columns: list[ScoreColumn]) -> dict:
    """Everything the page's script shows, once: a table of leaderboard rows (backbone, method, layer, dim,
    precision, bytes, cost, target, then the family averages) and a table of cells (a row's score on one task,
    its intervals and tests), each as columns + rows of plain values. Strings are indexes into `values` (one list
    per column, in the report's order: methods as the tables order them), numbers carry the decimals the page
    shows (scores: the task's digits + 2, as the CSV export gives them). The page builds every display string,
    hover text and figure trace from these (templates/leaderboard.js; the reference strings: cell_details)."""
    digits = {t: score_digits(details, t) for t in task_order(details)}
    values = {"backbone": sorted(set(details["backbone"])), "method": method_order(details["method"]),
              "precision": precision_order(details), "task": task_order(details),
              **{c: sorted(set(details[c]) - {""}) for c in TEXT_COLUMNS}}
    codes = {column: _coded(v) for column, v in values.items()}
    rows, cells = _row_table(details, columns, digits, codes), _cell_table(details, digits, codes)
    return {"values": values, "rows": rows, "cells": cells,
            "tasks": {t: {"name": task_name(t, details), "digits": d} for t, d in digits.items()},
            "columns": [asdict(c) for c in columns],
            "labels": {"ci": CI_LABEL, "bh": stats.BH, "alpha": f"{ALPHA:g}"}}


def _row_table(details: pd.DataFrame, columns: list[ScoreColumn], digits: dict, codes: dict) -> dict:
    families = [c for c in columns if len(c.tasks) > 1]
    out = []
    for key, group in details[details["task"] != STS_AVG].groupby(ROW_KEY, sort=False):  # keeps cell_stats order
        backbone, method, layer, dim, precision = key
        first = group.iloc[0]  # bytes and relative cost belong to the cell, whatever the task
        means = dict(zip(group["task"], group["mean"]))
        out.append([codes["backbone"][backbone], codes["method"][method], int(layer), int(dim),
                    codes["precision"][precision], int(first["bytes_per_vector"]),
                    page_number(first["rel_cost"], 4, _decimals(3)), int(group["is_target"].any()),
                    *[_family_mean(means, c, digits[c.tasks[0]]) for c in families]])
    return {"columns": ["backbone", "method", "layer", "dim", "precision", "bytes", "cost", "target",
                        *[c.key for c in families]], "rows": out}


def _family_mean(means: dict, column: ScoreColumn, digits: int) -> float | None:
    """The mean over the family's tasks, only where the row has every one of them."""
    if not all(t in means for t in column.tasks):
        return None
    return _score(sum(means[t] for t in column.tasks) / len(column.tasks), digits)


def _score(x, digits: int) -> float | None:
    """A score (or its interval's end) as the CSV export gives it: 2 decimals more than the page prints."""
    return page_number(x, digits + 2, _decimals(digits))


def _cell_table(details: pd.DataFrame, digits: dict, codes: dict) -> dict:
    row_of = {key: i for i, key in enumerate(
        details[details["task"] != STS_AVG].drop_duplicates(ROW_KEY)[ROW_KEY].itertuples(index=False, name=None))}
    out = []
    for c in details.itertuples(index=False):
        scores = [_score(x, digits[c.task]) for x in (c.mean, c.std, c.ci_low, c.ci_high, c.seed_ci_low,
                                                        c.seed_ci_high)]
        out.append([row_of[(c.backbone, c.method, c.layer, c.dim, c.precision)], codes["task"][c.task], int(c.n),
                    *scores, *[page_number(x, 6, p_shown) for x in (c.p_value, c.seed_p_value, c.q_value)],
                    int(c.n_tests), int(c.significant),
                    *[codes[col][getattr(c, col)] if getattr(c, col) else None for col in TEXT_COLUMNS],
                    page_number(c.encode_ms, 3, _decimals(1))])
    return {"columns": ["row", "task", "n", "mean", "std", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high",
                        "p_value", "seed_p_value", "q_value", "n_tests", "significant", *TEXT_COLUMNS, "encode_ms"],
            "rows": out}


def significance_notes(details: pd.DataFrame) -> list[tuple[str, str]]:
    """(backbone, what its p- and q-values are), for the backbones that have tests: the same families and marks
    as the tables (bench.report._statistics)."""
    notes = []
    for backbone, part in details[details["test"] != ""].groupby("backbone", sort=True):
        references = ", ".join(sorted(set(part["reference"])))
        note = (f"p: two-sided paired test against {references} on the same examples "
                f"({test_description(part)}); q: {stats.BH} over the tests of one family (a paper table's "
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
                       figures: list[tuple[str, str, str]],
                       budgets: list[tuple[str, list[BudgetTable], str | None]] = (),
                       variant_files: list[tuple[str, str, str]] = ()) -> str:
    """details: cell_details output; tables and figures come as (backbone, table) and (backbone, title, path of
    the PNG relative to the page), grouped by backbone; budgets (shown first) as (backbone, its budget tables, path
    of its frontier PNG or None); variant_files as (backbone, title, path of its Markdown table)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["zip"] = zip
    columns = score_columns(details)
    interactive_figures = interactive.figures(details)
    # compact JSON: the page's data is most of its bytes
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env.get_template("leaderboard.html.j2").render(
        fixed_columns=FIXED_COLUMNS, score_columns=columns, has_rows=not details.empty,
        data={**page_data(details, columns), "figures": interactive_figures}, provenance=provenance,
        tables=tables, ci_label=CI_LABEL,
        notes=significance_notes(details), ranges=ranges(details), methods=method_order(details["method"]),
        backbones=sorted(set(details["backbone"])), precisions=precision_order(details),
        tasks=[(t, task_name(t, details)) for t in task_order(details)], plotly_js=interactive.PLOTLY_JS.name,
        has_figures=bool(interactive_figures["heatmap"]),
        plotly_template=interactive.template_json(), figure_panels=figure_panels(precision_order(details)),
        figures=figures, budgets=budgets, variant_files=variant_files)
