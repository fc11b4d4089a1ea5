"""What the interactive views show beside a cell's score: its bootstrap intervals and paired tests (from
bench.report.significance.cell_statistics, with the q-values of the report's families: the same marks as the
tables), the measured encode time of its layer, and the display strings built from them.

The display strings below are the reference for the leaderboard page: its JavaScript (templates/leaderboard.js)
builds the same strings in the browser from the page's data, and tests/test_browser.py holds it to these.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.catalog import main_rows, method_labels
from bench.report.tables import STS_AVG, task_name
from bench.stats import BH

ALPHA = 0.05  # of the intervals and tests the report asks bench.stats for
CI_LABEL = f"{100 * (1 - ALPHA):g}% CI"
ENCODE_MS = "encode_ms_per_1k_texts"  # result rows: one per layer (dim = -1), measured in the run
STATS_KEY = ["backbone", "method", "task", "layer", "dim", "precision"]
# where bench.stats has none
STAT_DEFAULTS = {"ci_low": np.nan, "ci_high": np.nan, "seed_ci_low": np.nan, "seed_ci_high": np.nan,
                 "p_value": np.nan, "test": "", "seed_p_value": np.nan, "seed_test": "", "q_value": np.nan,
                 "n_tests": 0, "significant": False, "reference": "", "resampled": "", "reason": ""}
DETAIL_COLUMNS = [*STAT_DEFAULTS, "encode_ms"]


def cell_details(cells: pd.DataFrame, statistics: pd.DataFrame | None, frame: pd.DataFrame) -> pd.DataFrame:
    """cells (tables.cell_stats) plus DETAIL_COLUMNS. Intervals, p- and q-values are NaN where bench.stats has
    none (the STS average, the reference method itself, and the cells whose `reason` says why); seed intervals
    and tests where a cell (or its reference) has one seed only; encode_ms where the runs measured no encode time."""
    out = cells.reset_index(drop=True)
    if statistics is None or statistics.empty:
        out = out.assign(**STAT_DEFAULTS)
    else:
        picked = statistics[STATS_KEY + list(STAT_DEFAULTS)]
        out = out.merge(picked, on=STATS_KEY, how="left", validate="one_to_one")  # a left merge keeps cells' order
        for column, default in STAT_DEFAULTS.items():
            if not isinstance(default, float):
                out[column] = out[column].fillna(default).astype(type(default))
    out["encode_ms"] = measured_encode_ms(frame, out)
    return out


def measured_encode_ms(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.Series:
    """Per cell, the mean over its runs of the measured time per 1,000 texts of encoding up to the cell's layer
    (the STS average: the mean over the STS tasks). Aligned with cells; NaN where no run measured it."""
    timed = frame[(frame["metric"] == ENCODE_MS) & (frame["split"] == "test")]
    if timed.empty:
        return pd.Series(np.nan, index=cells.index)
    timed = timed.assign(method=timed["run_id"].map(_run_labels(frame)))
    ms = timed.groupby(["backbone", "method", "task", "layer"])["score"].mean()
    families = cells.drop_duplicates("task").set_index("task")["family"]
    sts_ms = ms[ms.index.get_level_values("task").map(families.get) == "sts"].groupby(
        level=["backbone", "method", "layer"]).mean()
    per_task = ms.reindex(pd.MultiIndex.from_frame(cells[["backbone", "method", "task", "layer"]])).to_numpy()
    per_sts = sts_ms.reindex(pd.MultiIndex.from_frame(cells[["backbone", "method", "layer"]])).to_numpy()
    return pd.Series(np.where(cells["task"] == STS_AVG, per_sts, per_task), index=cells.index)


def _run_labels(frame: pd.DataFrame) -> pd.Series:
    """run_id -> the method label tables print (with a config hash where two configs claim one cell): the
    timing rows have no cell of their own, so they take their run's label."""
    q = main_rows(frame)
    return pd.Series(method_labels(q).to_numpy(), index=q["run_id"]).groupby(level=0).first()


# ---- display strings (plain text; callers escape them for their medium) ----

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def score_text(cell, digits: int) -> str:
    """The mean, with ± std over seeds where the cell has several."""
    text = f"{cell.mean:.{digits}f}"
    return text if _missing(cell.std) else f"{text} ± {cell.std:.{digits}f}"


def seed_aware(cell) -> bool:
    """Whether the cell has the two-level (seeds, then examples) interval: 2 or more seeds."""
    return not _missing(cell.seed_ci_low)


def interval_text(cell, digits: int) -> str:
    """The interval a cell shows: the two-level one where it has several seeds, else the per-example one."""
    low, high = (cell.seed_ci_low, cell.seed_ci_high) if seed_aware(cell) else (cell.ci_low, cell.ci_high)
    return "" if _missing(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _fixed(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def p_shown(value: float, fixed=_fixed) -> str:
    """A p- or q-value as the views print it; `fixed` prints a number with so many decimals (the page's JavaScript
    has its own: bench.report.html.js_fixed)."""
    return "<0.001" if value < 0.001 else f"={fixed(value, 3)}"


def marking_p_value(cell) -> float:
    """The p-value the cell's mark is decided on (bench.stats.marking_p): seed-aware where there is one."""
    return cell.p_value if _missing(cell.seed_p_value) else cell.seed_p_value


def p_text(cell) -> str:
    """The marking test's p-value and its q-value, starred where q < ALPHA (as the tables mark it)."""
    if _missing(cell.q_value):
        return ""
    return f"p{p_shown(marking_p_value(cell))} q{p_shown(cell.q_value)}" + ("*" if cell.significant else "")


def detail_lines(cell, digits: int) -> list[str]:
    """Everything known about a cell beyond its score, one fact per line."""
    lines = []
    if seed_aware(cell):
        lines.append(f"{CI_LABEL} [{cell.seed_ci_low:.{digits}f}, {cell.seed_ci_high:.{digits}f}] (bootstrap over "
                     f"seeds, then examples; {int(cell.n)} seeds)")
    if not _missing(cell.ci_low):
        lines.append(f"{CI_LABEL} [{cell.ci_low:.{digits}f}, {cell.ci_high:.{digits}f}] (bootstrap over examples"
                     + (", seeds fixed)" if cell.n > 1 else ")"))
    if not _missing(cell.seed_p_value):
        lines.append(f"p{p_shown(cell.seed_p_value)} vs {cell.reference} ({cell.seed_test})")
    if not _missing(cell.p_value):
        lines.append(f"p{p_shown(cell.p_value)} vs {cell.reference} ({cell.test})")
    if not _missing(cell.q_value):
        lines.append(f"q{p_shown(cell.q_value)} ({BH} over the {int(cell.n_tests)} tests of its family)"
                     + (f": differs at FDR {ALPHA:g}" if cell.significant else ""))
    elif cell.reason:
        lines.append(f"no test: {cell.reason}")
    lines += [f"{int(cell.bytes_per_vector)} bytes per vector", f"relative encode cost {cell.rel_cost:.3f}"]
    if not _missing(cell.encode_ms):
        lines.append(f"{cell.encode_ms:.1f} ms per 1k texts (measured, layers 1-{int(cell.layer)})")
    if cell.is_target:
        lines.append("target cell")
    return lines


def heading_lines(cell, digits: int) -> list[str]:
    """Which cell and its score: the first lines of a hover or tooltip."""
    seeds = "1 seed" if cell.n == 1 else f"mean of {int(cell.n)} seeds"
    return [f"{cell.method}: layer {int(cell.layer)}, dim {int(cell.dim)}, {cell.precision}",
            f"{cell.display or task_name(cell.task)} {score_text(cell, digits)} ({seeds})"]
