"""Per-cell statistics that every report view is drawn from, and the paper-style tables (Markdown, LaTeX).

A pure function of the results frame: no torch, no file I/O. Same frame in, same bytes out, so every
ordering below is explicit (sorted or a fixed preference), never set or hash order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from bench import BenchError
from bench.catalog import (
    METRIC_NAMES,  # noqa: F401 - re-exported: bench/report/plots.py reads it from here
    STS_ORDER,
    TASK_META,
    TaskMeta,
    is_native_family,
    main_rows,
    method_labels,
    method_order,
)
from bench.precisions import KNOWN

STS_AVG = "sts-avg"  # a synthetic task: the mean over the STS tasks of one checkpoint
# Cells of different backbones are never compared: every view is drawn per backbone (see `by_backbone`).
CELL_KEY = ["backbone", "method", "layer", "dim", "precision", "task"]
CELL_COLUMNS = CELL_KEY + ["family", "display", "metric", "mean", "std", "n", "is_target", "bytes_per_vector",
                           "rel_cost"]
QUALITY_COLUMNS = ["backbone", "method", "seed", "layer", "dim", "precision", "task", "family", "display", "metric",
                   "score", "is_target", "bytes_per_vector", "rel_cost"]
Annotations = Mapping[tuple[str, int, int, str], str]  # (method, layer, dim, task) -> suffix, e.g. "*"
# Backbones whose runs check that the pipeline runs and reproduces, not which method is better: the smoke suite's
# seeded random BERT (the CI reference of `bench reproduce`, trained 16 steps at an lr chosen to separate methods,
# and every smoke run). Their tables get no significance marks and no "best" in bold (bench.report.build_report).
REFERENCE_BACKBONES = ("tiny-random-bert",)
REFERENCE_NOTE = ("A reproducibility reference on a seeded random model (steps and lr chosen to separate methods), "
                  "not a quality comparison: no significance marks, no best in bold.")


def quality_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-run main scores of the evaluated grid cells (no run-level, cost or training-curve rows).

    A task's family and main metric are what its rows' task record says (the `task_meta` column), not its name.
    `rel_cost` is the relative encode cost of the cell: layers run / layers of the backbone.
    """
    q = main_rows(frame)
    if q.empty:
        return pd.DataFrame(columns=QUALITY_COLUMNS)
    q = q.copy()
    q["rel_cost"] = _relative_encode_cost(frame, q)
    q["method"] = method_labels(q)
    return q[QUALITY_COLUMNS]


def _relative_encode_cost(frame: pd.DataFrame, q: pd.DataFrame) -> pd.Series:
    """The stored `relative_encode_cost` row of the cell (it knows the backbone's depth), else layer / deepest
    layer seen for the backbone in these results."""
    key = ["run_id", "layer", "dim", "precision"]
    stored = frame[frame["metric"] == "relative_encode_cost"].drop_duplicates(key).set_index(key)["score"]
    found = stored.reindex(pd.MultiIndex.from_frame(q[key])).to_numpy()
    fallback = q["layer"] / q.groupby("backbone")["layer"].transform("max")
    return fallback.where(np.isnan(found), pd.Series(found, index=q.index))


def with_sts_average(q: pd.DataFrame) -> pd.DataFrame:
    """Add the STS average as a task: per checkpoint and cell, only where every STS task is present."""
    sts = q[q["family"] == "sts"]
    n_tasks = sts["task"].nunique()
    if n_tasks < 2:
        return q
    avg = sts.groupby(["backbone", "method", "seed", "layer", "dim", "precision"], as_index=False).agg(
        score=("score", "mean"), n=("task", "nunique"), is_target=("is_target", "any"),
        bytes_per_vector=("bytes_per_vector", "first"), rel_cost=("rel_cost", "first"))
    avg = avg[avg["n"] == n_tasks].drop(columns="n").assign(task=STS_AVG, family="sts", display="STS Avg",
                                                            metric="spearman")
    return pd.concat([q, avg[q.columns]], ignore_index=True)


def cell_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of the main score per (method, layer, dim, precision, task)."""
    q = with_sts_average(quality_rows(frame))
    if q.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    cells = q.groupby(CELL_KEY + ["family", "display", "metric"], as_index=False).agg(
        mean=("score", "mean"), std=("score", "std"), n=("score", "size"), is_target=("is_target", "any"),
        bytes_per_vector=("bytes_per_vector", "first"), rel_cost=("rel_cost", "first"))
    cells["is_target"] = cells["is_target"].astype(bool)
    return _sorted(cells)[CELL_COLUMNS].reset_index(drop=True)


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    ranks = {"backbone": sorted(set(cells["backbone"])), "method": method_order(cells["method"]),
             "task": task_order(cells), "precision": precision_order(cells)}
    keys = cells.assign(**{f"_{c}": cells[c].map({v: i for i, v in enumerate(o)}) for c, o in ranks.items()})
    keys = keys.sort_values(["_backbone", "_method", "_task", "_precision", "layer", "dim"], kind="mergesort")
    return keys.drop(columns=[f"_{c}" for c in ranks])


def by_backbone(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(backbone, its cells) in name order: tables and figures compare methods on one backbone only."""
    return [(name, cells[cells["backbone"] == name]) for name in sorted(set(cells["backbone"]))]


def one_backbone(cells: pd.DataFrame) -> None:
    if cells["backbone"].nunique() > 1:
        raise BenchError(f"these cells mix backbones ({', '.join(sorted(set(cells['backbone'])))}); draw one at a "
                         "time: `for backbone, part in tables.by_backbone(cells)`")


def task_order(cells: pd.DataFrame) -> list[str]:
    """STS tasks in the paper's order (unknown ones after), then the STS average, then retrieval, by name, then
    mteb tasks by type and name."""
    families = cells.drop_duplicates("task").set_index("task")["family"]
    def key(t: str):
        if t == STS_AVG:
            return (1, 0, t)
        if families.get(t) == "sts":
            return (0, STS_ORDER.index(t) if t in STS_ORDER else len(STS_ORDER), t)
        if is_native_family(families.get(t, "")):
            return (2, "", t)
        return (3, families.get(t), t)
    return sorted(families.index, key=key)


def precision_order(cells: pd.DataFrame) -> list[str]:
    """The precisions present, in bench/precisions.KNOWN order (fp32, int8, binary, the rescoring variants); names
    it does not know (rows of older code) after them, sorted."""
    present = set(cells["precision"])
    return [p for p in KNOWN if p in present] + sorted(present - set(KNOWN))


def main_precision(cells: pd.DataFrame) -> str | None:
    """fp32 when present, else the first precision present (for views that show one precision)."""
    order = precision_order(cells)
    return order[0] if order else None


def task_name(task: str, cells: pd.DataFrame | None = None) -> str:
    """The display name: what the task's rows say (an mteb task is named by mteb's metadata) where `cells`
    (cell_stats output) hold it, else the catalog's, else the task itself."""
    if task == STS_AVG:
        return "STS Avg"
    if cells is not None and "display" in cells:
        shown = cells.loc[cells["task"] == task, "display"]
        if not shown.empty:
            return str(shown.iloc[0])
    return TASK_META[task].display if task in TASK_META else task


def table_groups(cells: pd.DataFrame) -> list[tuple[str, str | None, pd.DataFrame]]:
    """(file stem, family, cells) of each table: our own families (STS, retrieval) share the paper table
    (family None); each mteb task type gets a table of its own, `mteb-<type>`. Groups without cells are left out."""
    native = cells["family"].map(is_native_family).astype(bool)
    groups: list[tuple[str, str | None, pd.DataFrame]] = [("paper", None, cells[native])]
    for family in sorted(set(cells.loc[~native, "family"])):
        groups.append((f"mteb-{family}", family, cells[cells["family"] == family]))
    return [g for g in groups if not g[2].empty]


def family_records(frame: pd.DataFrame, family: str) -> list[TaskMeta]:
    """The task records (from the rows' task_meta) of the family's tasks, by task name."""
    metas = {TaskMeta.from_json(text) for text in frame["task_meta"].unique()}
    return sorted((m for m in metas if m.family == family), key=lambda m: m.name)


def score_digits(cells: pd.DataFrame, task: str) -> int:
    """1 decimal on a x100 scale (our STS and retrieval), 3 on a 0..1 scale (mteb's scores, as mteb reports them)."""
    values = cells.loc[cells["task"] == task, "mean"].abs()
    return 1 if values.max() > 1.0 else 3


def provenance(frame: pd.DataFrame) -> dict[str, list[str]]:
    """What a reader needs to judge the numbers: code version, data, seeds, budgets (trained runs only)."""
    def uniq(col: str) -> list[str]:
        return sorted({str(v) for v in frame[col]})
    budgets = sorted({_budget_text(b) for b in frame["budget"] if json.loads(b).get("steps", 0) > 0})
    return {"git_sha": uniq("git_sha"), "backbone": uniq("backbone"),
            "train_data": [d for d in uniq("train_data") if d != "none"],
            "seeds": [str(s) for s in sorted({int(s) for s in frame["seed"]})],
            "budget": budgets, "methods": method_order(frame["method"]), "runs": [str(frame["run_id"].nunique())]}


def _budget_text(budget_json: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in json.loads(budget_json).items())


NATIVE_SCORES = "Spearman x100 on STS, nDCG@10 on retrieval; STS Avg is the mean over the STS tasks"


def mteb_scores(records: list[TaskMeta]) -> str:
    """What an mteb table's numbers are, and why it has no intervals: from its tasks' records."""
    versions = ", ".join(sorted({m.mteb_version for m in records})) or "?"
    reasons = "; ".join(sorted({m.no_intervals for m in records} - {""}))
    families = ", ".join(sorted({m.family for m in records}))
    return (f"mteb {families} tasks, each by its mteb main score "
            f"({', '.join(f'{m.display}: {m.main_metric}' for m in records)}) on a 0..1 scale as mteb {versions} "
            "reports it, scored by mteb's own evaluators on the cell's vectors"
            + (f"; no intervals or significance marks: {reasons}" if reasons else ""))


def caption(prov: dict[str, list[str]], precision: str, scores: str = NATIVE_SCORES, bold_best: bool = True) -> str:
    budgets = prov["budget"]
    budget = ("none (untrained runs only)" if not budgets else budgets[0] if len(budgets) == 1
              else "NOT THE SAME for every run: " + "; ".join(budgets))  # a comparison must share one budget
    return (f"Main score per target size (layer, dim) at {precision} precision: {scores}; "
            f"{'best per size in bold; ' if bold_best else ''}"
            f"mean ± std over seeds where a cell has several (seeds {', '.join(prov['seeds']) or '-'}). "
            f"Backbone: {', '.join(prov['backbone']) or '-'}. Training data: {', '.join(prov['train_data']) or '-'}. "
            f"Budget: {budget}. Code: {', '.join(prov['git_sha']) or '-'}.")


@dataclass(frozen=True)
class TableRow:
    size: tuple[int, int]
    method: str
    cells: tuple[str, ...]  # formatted "mean ± std" + annotation suffix, "-" where missing
    bold: tuple[bool, ...]


@dataclass(frozen=True)
class Table:
    precision: str
    columns: tuple[str, ...]  # score columns only (display names); rows add Size and Method
    rows: tuple[TableRow, ...]
    caption: str


# Methods whose targets are the paper's diagonal: the table's rows are their sizes when any of them is present
# (2dmse marks every cell it samples as a target, mrl a whole row: as rows they would bury the diagonal).
DIAGONAL_METHODS = ("separate", "starbucks-srl", "starbucks")


def target_sizes(cells: pd.DataFrame) -> list[tuple[int, int]]:
    """The table's rows: the targets of the diagonal methods when present, else the trained (layer, dim) targets
    of any run; without any, the full-size cell only."""
    targets = cells[cells["is_target"]]
    diagonal = targets[targets["method"].str.split("@").str[0].isin(DIAGONAL_METHODS)]
    targets = diagonal if not diagonal.empty else targets
    if not targets.empty:
        return sorted({(int(l), int(d)) for l, d in zip(targets["layer"], targets["dim"])})
    return [(int(cells["layer"].max()), int(cells["dim"].max()))] if not cells.empty else []


def paper_table(cells: pd.DataFrame, precision: str, caption: str = "",
                annotations: Annotations | None = None, bold_best: bool = True) -> Table:
    """Rows: each target size x method; columns: STS tasks, their average, retrieval tasks.

    `annotations` maps (method, layer, dim, task) to a suffix (a significance mark, say) appended to the cell;
    the STS average column has task `STS_AVG`. `bold_best`: bold each size's best score per column.
    """
    one_backbone(cells)
    annotations = annotations or {}
    data = cells[cells["precision"] == precision]
    tasks = task_order(data)
    digits = {t: score_digits(cells, t) for t in tasks}
    rows = []
    for size in target_sizes(cells):
        at_size = data[(data["layer"] == size[0]) & (data["dim"] == size[1])].set_index(["method", "task"])
        methods = method_order(at_size.index.get_level_values("method"))
        best = at_size["mean"].round(8).groupby("task").max()  # round: equal scores tie despite float noise
        for method in methods:
            texts, bold = [], []
            for task in tasks:
                if (method, task) not in at_size.index:
                    texts.append("-")
                    bold.append(False)
                    continue
                cell = at_size.loc[(method, task)]
                suffix = annotations.get((method, size[0], size[1], task), "")
                texts.append(_format_score(cell["mean"], cell["std"], digits[task]) + suffix)
                bold.append(bold_best and bool(round(cell["mean"], 8) >= best[task]))
            rows.append(TableRow(size, method, tuple(texts), tuple(bold)))
    return Table(precision, tuple(task_name(t, cells) for t in tasks), tuple(rows), caption)


def _format_score(mean: float, std: float, digits: int) -> str:
    text = f"{mean:.{digits}f}"
    return text if np.isnan(std) else f"{text} ± {std:.{digits}f}"


_MD_SPECIAL = "\\`*_[]<>|#"
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
                ">": r"\textgreater{}"}


def md_escape(text: str) -> str:
    """Backslash-escape Markdown syntax so names from results show as text (a `|` would split a cell)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in text).replace("±", r"$\pm$")


def to_markdown(table: Table) -> str:
    lines = [f"**Table ({md_escape(table.precision)}).** {md_escape(table.caption)}", ""]
    if not table.rows:
        return "\n".join(lines + [f"No quality results at target sizes for {md_escape(table.precision)}.", ""])
    header = ["Size", "Method", *table.columns]
    lines += ["| " + " | ".join(md_escape(h) for h in header) + " |",
              "|" + "|".join([":---", ":---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = [f"**{md_escape(c)}**" if b else md_escape(c) for c, b in zip(row.cells, row.bold)]
        lines.append("| " + " | ".join([f"({row.size[0]}, {row.size[1]})", md_escape(row.method), *cells]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A booktabs table; the method and size columns are left-aligned, scores right-aligned."""
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{tex_escape(table.caption)}}}", rf"\begin{{tabular}}{{ll{'r' * len(table.columns)}}}",
             r"\toprule", " & ".join(["Size", "Method", *map(tex_escape, table.columns)]) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.size != previous:
            lines.append(r"\midrule")
        size = f"({row.size[0]}, {row.size[1]})" if row.size != previous else ""
        cells = [rf"\textbf{{{tex_escape(c)}}}" if b else tex_escape(c) for c, b in zip(row.cells, row.bold)]
        lines.append(" & ".join([size, tex_escape(row.method), *cells]) + r" \\")
        previous = row.size
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
