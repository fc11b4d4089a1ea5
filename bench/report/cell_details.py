"""What the interactive views show beside a cell's score: its bootstrap interval and paired test (from
bench.stats.cell_statistics), the measured encode time of its layer, and the display strings built from them.

One place formats these strings (the leaderboard's cells and the figures' hovers both use it), so the page
and its figures never disagree about a number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.catalog import main_rows, method_labels
from bench.report.tables import STS_AVG, task_name

ALPHA = 0.05  # of the intervals and tests the report asks bench.stats for
CI_LABEL = f"{100 * (1 - ALPHA):g}% CI"
ENCODE_MS = "encode_ms_per_1k_texts"  # result rows: one per layer (dim = -1), measured in the run
STATS_KEY = ["backbone", "method", "task", "layer", "dim", "precision"]
DETAIL_COLUMNS = ["ci_low", "ci_high", "p_value", "significant", "reference", "test", "encode_ms"]


def cell_details(cells: pd.DataFrame, statistics: pd.DataFrame | None, frame: pd.DataFrame) -> pd.DataFrame:
    """cells (tables.cell_stats) plus DETAIL_COLUMNS. Intervals and p-values are NaN where bench.stats has none
    (no per-example file, the STS average, the reference method itself); encode_ms is NaN where the runs
    measured no encode time."""
    out = cells.reset_index(drop=True)
    if statistics is None or statistics.empty:
        out = out.assign(ci_low=np.nan, ci_high=np.nan, p_value=np.nan, significant=False, reference="", test="")
    else:
        picked = statistics[STATS_KEY + DETAIL_COLUMNS[:-1]]
        out = out.merge(picked, on=STATS_KEY, how="left", validate="one_to_one")  # a left merge keeps cells' order
        out["significant"] = out["significant"].fillna(False).astype(bool)
        out[["reference", "test"]] = out[["reference", "test"]].fillna("")
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


def interval_text(cell, digits: int) -> str:
    return "" if _missing(cell.ci_low) else f"[{cell.ci_low:.{digits}f}, {cell.ci_high:.{digits}f}]"


def p_text(cell) -> str:
    """The p-value against the reference, starred where significant at ALPHA (as the tables mark it)."""
    if _missing(cell.p_value):
        return ""
    p = "p<0.001" if cell.p_value < 0.001 else f"p={cell.p_value:.3f}"
    return p + ("*" if cell.significant else "")


def detail_lines(cell, digits: int) -> list[str]:
    """Everything known about a cell beyond its score, one fact per line."""
    lines = []
    if interval := interval_text(cell, digits):
        lines.append(f"{CI_LABEL} {interval} (bootstrap over examples)")
    if p := p_text(cell):
        lines.append(f"{p} vs {cell.reference} ({cell.test})")
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
            f"{getattr(cell, 'display', None) or task_name(cell.task)} {score_text(cell, digits)} ({seeds})"]
