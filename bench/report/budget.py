"""The best choice per budget: "at N bytes per vector (or a share M of a forward pass), what do I store?"

For each bytes-per-vector budget and each encode-cost budget, per backbone and task: the best (method, layer, dim,
precision) cell whose cost fits, by the task's main metric (mean over seeds, as every table), with its interval, and
whether the runner-up (the best other cell within the same budget) is distinguishable from it; and the frontier of
each precision across bytes (the upper envelope over every method, layer and dim at that precision).

Winners are picked from `tables.cell_stats` output; the statistics of the winner and runner-up only are computed,
by bench/report/significance.pair_statistics (the intervals and paired tests of every other view; it opens only
those cells' per-example files). No torch; same results, same bytes.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench import stats
from bench.catalog import method_order
from bench.report import plots, significance, tables
from bench.report.cell_details import ALPHA, CI_LABEL
from bench.report.notes import test_description, untested_reasons

# budget kind -> (the cell column it bounds, how a table names it)
KINDS = {"bytes": ("bytes_per_vector", "bytes per vector"),
         "cost": ("rel_cost", "relative encode cost (layers run / layers of the backbone)")}
CELL = ["method", "layer", "dim", "precision"]  # what a choice is, within one backbone and task
_SLACK = 1e-9  # a stored relative cost equal to the budget fits despite float noise (5/6 computed two ways)


def byte_budgets(cells: pd.DataFrame) -> list[int]:
    """Powers of two from the smallest that some cell fits into to the smallest that every cell fits into.

    Why powers of two and not the grid's distinct `bytes_per_vector`: MiniLM's grid has 25 distinct values
    (binary+rescore-int8 alone adds 18, 36, 66, ...) that nobody budgets in, while budgets are set in powers of two
    (32, 64, 128 bytes), evenly spaced on the frontier figure's log2 axis; the winner at
    any value in between is the frontier's point below it."""
    sizes = cells["bytes_per_vector"][cells["bytes_per_vector"] > 0]
    if sizes.empty:
        return []
    low, high = (math.ceil(math.log2(v)) for v in (sizes.min(), sizes.max()))
    return [2 ** e for e in range(low, high + 1)]


def cost_budgets(cells: pd.DataFrame) -> list[float]:
    """The distinct relative encode costs of the grid: one per depth, few, and exactly what a user can choose."""
    return sorted(set(np.round(cells["rel_cost"].dropna().astype(float), 9)))


def ranked(cells: pd.DataFrame) -> pd.DataFrame:
    """One backbone and task's cells, best first: by mean score (rounded as the tables bold it: equal scores tie
    despite float noise), ties to fewer bytes, then lower encode cost, then the tables' order. NaN scores last."""
    order = cells.assign(_score=-cells["mean"].round(8)).sort_values(
        ["_score", "bytes_per_vector", "rel_cost"], kind="mergesort", na_position="last")
    return order[order["mean"].notna()].drop(columns="_score")


def winners(cells: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per backbone, task and budget of `kind` ("bytes" or "cost"): the best cell whose cost is within the budget
    (`ranked` order) and the runner-up, the best other cell within it (NaN where the budget holds one cell only);
    budgets that hold no cell are left out. Columns: backbone, task, budget, n_fit, then CELL, mean, bytes_per_vector,
    rel_cost, metric, family of the winner, and of the runner-up prefixed `runner_`."""
    column = KINDS[kind][0]
    keep = CELL + ["mean", "bytes_per_vector", "rel_cost"]
    out = []
    for backbone, part in tables.by_backbone(cells):
        orders = {task: ranked(part[part["task"] == task]) for task in tables.task_order(part)}
        for budget in byte_budgets(part) if kind == "bytes" else cost_budgets(part):
            for task, order in orders.items():  # budget by budget, as a reader looks one up
                fit = order[order[column] <= budget + _SLACK]
                if fit.empty:
                    continue
                row = {"backbone": backbone, "task": task, "budget": budget, "n_fit": len(fit),
                       "metric": fit["metric"].iloc[0], "family": fit["family"].iloc[0],
                       **fit.iloc[0][keep].to_dict()}
                runner = fit.iloc[1][keep].to_dict() if len(fit) > 1 else dict.fromkeys(keep, np.nan)
                out.append({**row, **{f"runner_{k}": v for k, v in runner.items()}})
    columns = ["backbone", "task", "budget", "n_fit", "metric", "family", *keep, *(f"runner_{k}" for k in keep)]
    return pd.DataFrame(out, columns=columns)


def frontier(cells: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, task and precision: at each bytes-per-vector value the precision reaches, the best score of
    any cell of that precision within those bytes (the upper envelope over methods, layers and dims), so it never
    falls as bytes grow; with the cell that reaches it."""
    out = []
    for (backbone, task, precision), part in cells.groupby(["backbone", "task", "precision"], sort=True):
        order = ranked(part)
        for size in sorted(set(order["bytes_per_vector"])):
            best = order[order["bytes_per_vector"] <= size].iloc[0]
            out.append({"backbone": backbone, "task": task, "precision": precision, "bytes_per_vector": size,
                        "mean": best["mean"], "method": best["method"], "layer": best["layer"], "dim": best["dim"]})
    return pd.DataFrame(out, columns=["backbone", "task", "precision", "bytes_per_vector", "mean", "method", "layer",
                                      "dim"])


# ---- statistics of the winner and runner-up ----------------------------------------------------------------------

def with_statistics(frame: pd.DataFrame, picked: pd.DataFrame, kind: str, alpha: float = ALPHA) -> pd.DataFrame:
    """`winners` output plus the winner's score and intervals (as every cell's in the report) and the paired test
    of winner minus runner-up (significance.pair_statistics), with Benjamini-Hochberg q-values over one family per
    backbone and budget kind: the distinct (winner, runner-up) pairs of one budget table, each tested once (a pair
    that wins several budgets is one test). `distinguishable`: q < alpha. Reference backbones keep intervals, not
    tests (as in the tables: bench.report._statistics)."""
    paired = picked["runner_method"].notna()
    # a winner alone in its budget is paired with itself: its interval, and no test (identical values)
    keys = [(_key(r, ""), _key(r, "runner_" if has_runner else "")) for r, has_runner in
            zip(picked.itertuples(index=False), paired)]
    unique = sorted(set(keys))
    pair_stats = significance.pair_statistics(frame, unique, alpha=alpha).assign(
        backbone=[first[0] for first, _ in unique], task=[first[1] for first, _ in unique])
    reference = pair_stats["backbone"].isin(tables.REFERENCE_BACKBONES)
    pair_stats.loc[reference, ["p_value", "seed_p_value"]] = np.nan
    pair_stats.loc[reference, ["test", "seed_test"]] = ""
    pair_stats.loc[reference, "reason"] = "a reproducibility reference, not a quality comparison"
    pair_stats = stats.benjamini_hochberg(pair_stats, pair_stats["backbone"] + " " + kind, alpha)
    pair_stats = pair_stats.drop(columns=["backbone", "task"]).rename(columns={"family": "test_family"})
    found = dict(zip(unique, pair_stats.to_dict("records")))
    out = picked.join(pd.DataFrame([found[key] for key in keys], columns=pair_stats.columns, index=picked.index))
    out.loc[~paired, "reason"] = "only this cell fits the budget"
    out["test"] = out["test"].fillna("")
    out["distinguishable"] = out["significant"].fillna(False).astype(bool)
    return out


def _key(row, prefix: str) -> significance.CellKey:
    return (row.backbone, row.task, getattr(row, prefix + "method"), int(getattr(row, prefix + "layer")),
            int(getattr(row, prefix + "dim")), getattr(row, prefix + "precision"))


# ---- the paper-style table ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetTable:
    kind: str  # "bytes" or "cost"
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str

    @property
    def numeric(self) -> tuple[bool, ...]:
        """Per column: right-aligned (a number) or not."""
        return tuple(i in _NUMERIC for i in range(len(self.columns)))


COLUMNS = ("Budget", "Task", "Best (method, layer, dim, precision)", "Bytes", "Cost", f"Score [{CI_LABEL}]",
           "Runner-up", "Δ", "q", "Distinguishable")
_NUMERIC = (3, 4, 5, 7, 8)  # of COLUMNS


def budget_table(picked: pd.DataFrame, cells: pd.DataFrame, kind: str, provenance: dict[str, list[str]],
                 alpha: float = ALPHA) -> BudgetTable:
    """One backbone's `with_statistics` rows as a table: per budget (smallest first) each task's winner, its
    interval (the two-level one where it has 2 or more seeds, else over examples, as the leaderboard shows), the
    runner-up, the difference and its q-value."""
    rows = []
    for r in picked.itertuples(index=False):
        digits = tables.score_digits(cells, r.task)
        rows.append((_budget_text(kind, r.budget), tables.task_name(r.task, cells), _choice(r, ""),
                     str(int(r.bytes_per_vector)), f"{r.rel_cost:.2f}", _score_text(r, digits),
                     _runner_text(r, digits), _number(r.score - r.other_score, digits) if r.test else "-",
                     f"{r.q_value:.3g}" if r.test else "-", _verdict(r)))
    return BudgetTable(kind, COLUMNS, tuple(rows), _caption(picked, kind, provenance, alpha))


def _budget_text(kind: str, budget: float) -> str:
    return f"≤ {int(budget)} B" if kind == "bytes" else f"≤ {budget:.2f}"


def _choice(r, prefix: str) -> str:
    get = lambda name: getattr(r, prefix + name)  # noqa: E731
    return f"{get('method')} ({int(get('layer'))}, {int(get('dim'))}) {get('precision')}"


def _number(x: float, digits: int) -> str:
    return "-" if x is None or np.isnan(x) else f"{x:.{digits}f}"


def _score_text(r, digits: int) -> str:
    low, high = (r.seed_ci_low, r.seed_ci_high) if r.n_seeds > 1 else (r.ci_low, r.ci_high)
    interval = f" [{_number(low, digits)}, {_number(high, digits)}]" if not np.isnan(low) else ""
    return _number(r.mean, digits) + interval


def _runner_text(r, digits: int) -> str:
    if not isinstance(r.runner_method, str):
        return "-"
    return f"{_choice(r, 'runner_')}: {_number(r.runner_mean, digits)}"


def _verdict(r) -> str:
    return ("yes" if r.distinguishable else "no") if r.test else "-"


def _caption(picked: pd.DataFrame, kind: str, provenance: dict[str, list[str]], alpha: float) -> str:
    return (f"The best choice per budget of {KINDS[kind][1]}: per task, the (method, layer, dim, precision) cell with "
            "the best main score (mean over seeds; Spearman x100 on STS, nDCG@10 on retrieval, mteb's main score on "
            "mteb tasks) among the cells within the budget (ties: fewer bytes, then lower cost), with its "
            f"{CI_LABEL} (percentile bootstrap over seeds, then examples, where it has 2 or more seeds; else over "
            "the examples), and the runner-up: the best other cell within the same budget. Δ: winner minus "
            f"runner-up; {_tests_text(picked, alpha)}. Backbone: {', '.join(provenance['backbone']) or '-'}. "
            f"Seeds: {', '.join(provenance['seeds']) or '-'}. Code: {', '.join(provenance['git_sha']) or '-'}.")


def _tests_text(picked: pd.DataFrame, alpha: float) -> str:
    """Which test gave q, over how many pairs (each distinct pair once), and why the others have none."""
    pairs = picked.drop_duplicates(["task", *CELL, *(f"runner_{c}" for c in CELL)])
    tested = pairs[pairs["test"] != ""]
    text = (f"q: two-sided paired test on the same examples, {stats.BH} over the {len(tested)} distinct (winner, "
            f"runner-up) pairs of this table ({test_description(tested)}); distinguishable: q < {alpha:g}"
            if len(tested) else "no pair is tested")
    untested = untested_reasons(pairs.assign(reason=pairs["reason"].fillna("")))
    return text + (f"; no test (-) for {untested}" if untested else "")


def to_markdown(table: BudgetTable) -> str:
    lines = [f"**Table (budget: {tables.md_escape(table.kind)}).** {tables.md_escape(table.caption)}", ""]
    if not table.rows:
        return "\n".join(lines + ["No quality results.", ""])
    lines += ["| " + " | ".join(tables.md_escape(c) for c in table.columns) + " |",
              "|" + "|".join("---:" if n else ":---" for n in table.numeric) + "|"]
    lines += ["| " + " | ".join(tables.md_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_latex(table: BudgetTable) -> str:
    """A booktabs table, a rule between budgets."""
    align = "".join("r" if n else "l" for n in table.numeric)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{tex(table.caption)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(map(tex, table.columns)) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join([tex(row[0]) if row[0] != previous else "", *map(tex, row[1:])]) + r" \\")
        previous = row[0]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def tex(text: str) -> str:
    return tables.tex_escape(text).replace("≤", r"$\leq$").replace("Δ", r"$\Delta$")


# ---- the frontier figure -----------------------------------------------------------------------------------------

@plots.styled
def frontier_figure(cells: pd.DataFrame) -> Figure | None:
    """One panel per task of one backbone: main score against bytes per vector (log2), one step line per precision
    (its `frontier`: the best cell of any method, layer and dim at that precision within the bytes)."""
    tables.one_backbone(cells)
    front = frontier(cells[cells["bytes_per_vector"] > 0])
    if front.empty:
        return None
    tasks = [t for t in tables.task_order(cells) if t in set(front["task"])]
    precisions = tables.precision_order(cells)
    markers = dict(zip(precisions, _markers(precisions)))
    colors = dict(zip(precisions, sns.color_palette("tab10", len(precisions))))
    metrics = cells.drop_duplicates("task").set_index("task")["metric"]
    ncols = min(len(tasks), 4)
    fig = Figure(figsize=(3.0 * ncols + 1.6, 2.6 * math.ceil(len(tasks) / ncols) + 0.5), layout="constrained")
    axes = list(fig.subplots(math.ceil(len(tasks) / ncols), ncols, squeeze=False).ravel())
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes, tasks):
        part = front[front["task"] == task]
        for precision in precisions:
            line = part[part["precision"] == precision]
            if not line.empty:
                ax.step(line["bytes_per_vector"], line["mean"], where="post", marker=markers[precision],
                        markersize=3.5, linewidth=1.2, color=colors[precision], label=precision)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain numbers (no mathtext)
        ax.set_xlabel("bytes per vector (log2)")
        ax.set_ylabel(tables.METRIC_NAMES.get(metrics[task], metrics[task]))
        ax.set_title(tables.task_name(task, cells))
        ax.grid(alpha=0.3)
    drawn = {}  # every precision drawn in any panel (a task family may lack some), in precision order
    for ax in axes[:len(tasks)]:
        drawn.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend([drawn[p] for p in precisions if p in drawn], [p for p in precisions if p in drawn],
               loc="outside right center", fontsize=7, title="precision")
    title = ("Best score within each bytes-per-vector budget, per precision (the upper envelope over every method, "
             "layer and dim)")
    fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 13))))  # as plots' titles: wrapped
    return fig


def _markers(precisions: list[str]) -> list[str]:
    extra = iter(plots.EXTRA_MARKERS * (1 + len(precisions)))
    return [plots.MARKERS[p] if p in plots.MARKERS else next(extra) for p in precisions]


def equal_bytes_markdown(cells: pd.DataFrame) -> str:
    """One backbone's precisions side by side at equal bytes: per task, method and bytes budget, each precision's
    best cell within the budget (`frontier`'s envelope, per method) as "score (layer, dim)"."""
    precisions, budgets = tables.precision_order(cells), byte_budgets(cells)
    lines = ["**Precisions at equal bytes.** Per task, method and budget of bytes per vector: the best cell of each "
             "precision within the budget (mean over seeds; any layer and dim; – where none fits), as score (layer, "
             "dim).", "",
             "| Task | Method | Budget | " + " | ".join(tables.md_escape(p) for p in precisions) + " |",
             "|:---|:---|---:|" + "---:|" * len(precisions)]
    for task in tables.task_order(cells):
        for method in method_order(cells.loc[cells["task"] == task, "method"]):
            part = cells[(cells["task"] == task) & (cells["method"] == method)]
            for budget in budgets:
                texts = []
                for precision in precisions:
                    fit = ranked(part[(part["precision"] == precision) & (part["bytes_per_vector"] <= budget)])
                    best = fit.iloc[0] if len(fit) else None
                    texts.append("–" if best is None else f"{best['mean']:.1f} ({best['layer']}, {best['dim']})")
                lines.append(f"| {tables.md_escape(tables.task_name(task, cells))} | {tables.md_escape(method)} | "
                             f"≤ {budget} B | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


# ---- what `bench report` writes ----------------------------------------------------------------------------------

def budget_views(frame: pd.DataFrame, cells: pd.DataFrame, provenance: dict[str, list[str]]
                 ) -> list[tuple[str, BudgetTable]]:
    """One backbone's budget tables, bytes then cost, as (file stem, table)."""
    return [(f"budget-{kind}", budget_table(with_statistics(frame, winners(cells, kind), kind), cells, kind,
                                            provenance)) for kind in KINDS]
