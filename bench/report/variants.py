"""The cells beyond the prefix grid (bench/variants.py), as report tables per backbone:

- `subset_table`: at each (task, method, precision, layer, dim) with random-subset draws, the prefix's score beside
  the draws' mean, standard deviation and range, prefix minus mean, and how many draws reach the prefix;
- `query_layer_cells`: retrieval scored with queries from one layer and documents from another, every such cell's
  interval and its paired test against the reference method on the same cell (bench/report/significance
  .pair_statistics, as the budget tables; Benjamini-Hochberg over one family per backbone, task and precision); `query_layer_markdown` draws one matrix per (task, dim, precision, method) (rows:
  query layer, columns: document layer; the diagonal is the prefix grid), marked where the test is.
Reads the frame `load_results(results_dir, examples=True, variants=True)` returned. Never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import stats
from bench.catalog import main_rows, pick_reference
from bench.report import significance
from bench.report.tables import md_escape

ALPHA = 0.05


def _main(frame: pd.DataFrame) -> pd.DataFrame:
    """Main-metric rows with the variant split into its kind and value (the query layer, or the draw)."""
    rows = main_rows(frame)
    kind = rows["variant"].str.split(":").str[0].fillna("")
    value = pd.to_numeric(rows["variant"].str.split(":").str[1], errors="coerce")
    return rows.assign(kind=kind, value=value)


def subset_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, task, method, precision, layer, dim) that has random-subset draws."""
    rows = _main(frame)
    keys = ["backbone", "task", "method", "precision", "layer", "dim"]
    subsets = rows[rows["kind"] == "subset"]
    if subsets.empty:
        return pd.DataFrame()
    table = subsets.groupby(keys)["score"].agg(draws="count", mean="mean", sd="std", low="min", high="max").reset_index()
    prefix = rows[rows["kind"] == ""].groupby(keys)["score"].mean().rename("prefix").reset_index()
    table = table.merge(prefix, on=keys, how="left")
    reached = subsets.merge(prefix, on=keys).assign(
        reached=lambda r: r["score"] >= r["prefix"]).groupby(keys)["reached"].sum()
    table = table.merge(reached.rename("reached").reset_index(), on=keys, how="left")
    return table.assign(delta=table["prefix"] - table["mean"])


def subset_markdown(table: pd.DataFrame) -> str:
    lines = ["**Random coordinate subsets against the prefix.** At each cell, `draws` seeded random choices of `dim` "
             "of the served coordinates (bench/variants.py; the same draws for every method): their mean, standard "
             "deviation and range, the prefix minus their mean, and how many draws score at least the prefix.", "",
             "| Task | Method | Precision | Size | Prefix | Subsets mean ± sd | Range | Prefix − mean | Draws ≥ prefix |",
             "|:---|:---|:---|:---|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        lines.append(f"| {md_escape(r.task)} | {md_escape(r.method)} | {md_escape(r.precision)} | ({r.layer}, {r.dim}) "
                     f"| {r.prefix:.2f} | {r.mean:.2f} ± {r.sd:.2f} | {r.low:.2f}–{r.high:.2f} | {r.delta:+.2f} "
                     f"| {int(r.reached)}/{r.draws} |")
    return "\n".join(lines) + "\n"


def query_layer_cells(frame: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Every (query layer, document layer) cell of the tasks and dims that have asymmetric cells, the diagonal
    included: its score and interval, and its paired test against the reference method's same cell."""
    rows = _main(frame)
    asym = rows[rows["kind"] == "query-layer"]
    if asym.empty:
        return pd.DataFrame()
    scope = asym[["backbone", "task", "dim", "precision"]].drop_duplicates()
    diagonal = rows[rows["kind"] == ""].merge(scope)
    cells = pd.concat([asym, diagonal.assign(value=diagonal["layer"])], ignore_index=True)
    cells["query_layer"] = cells["value"].astype(int)
    # the variant joins the method's name, so pair_statistics reads each variant as a cell of its own
    folded = cells.assign(method=cells["method"] + "/q" + cells["query_layer"].astype(str))
    out = []
    for backbone, part in folded.groupby("backbone"):
        reference = pick_reference(cells.loc[part.index, "method"])
        keys = part[["task", "method", "layer", "dim", "precision", "query_layer"]].drop_duplicates()
        pairs = [((backbone, k.task, k.method, k.layer, k.dim, k.precision),
                  (backbone, k.task, f"{reference}/q{k.query_layer}", k.layer, k.dim, k.precision))
                 for k in keys.itertuples()]
        result = significance.pair_statistics(part, pairs, alpha=alpha)
        out.append(pd.concat([keys.reset_index(drop=True), result], axis=1).assign(
            backbone=backbone, reference=reference or ""))
    table = pd.concat(out, ignore_index=True)
    table["method"] = table["method"].str.rsplit("/q", n=1).str[0]
    table = table.rename(columns={"layer": "doc_layer"})
    tested = table["method"] != table["reference"]
    table["p_value"] = table["p_value"].where(tested)
    family = table["backbone"] + " " + table["task"] + " " + table["precision"]
    return stats.benjamini_hochberg(table, family, alpha).sort_values(
        ["backbone", "task", "dim", "precision", "method", "query_layer", "doc_layer"], ignore_index=True)


def query_layer_markdown(cells: pd.DataFrame, alpha: float = ALPHA) -> str:
    """The matrices: score per (query layer, document layer), ▲/▼ where it is above/below the reference method's
    same cell at q < alpha; then the long table with every interval and test."""
    lines = ["**Queries from one layer, documents from another.** Rows: the layers that encode the queries; columns: "
             "the layers that encode the documents (the diagonal is the prefix grid). ▲/▼: above/below the reference "
             f"method's same cell, Benjamini-Hochberg q < {alpha} over each task and precision.", ""]
    for (task, dim, precision, method), part in cells.groupby(["task", "dim", "precision", "method"], sort=False):
        doc_layers = sorted(part["doc_layer"].unique())
        lines += [f"*{md_escape(task)}, {md_escape(method)}, dim {dim}, {md_escape(precision)}*", "",
                  "| Query \\ doc | " + " | ".join(str(d) for d in doc_layers) + " |",
                  "|:---|" + "---:|" * len(doc_layers)]
        for q, row in part.groupby("query_layer"):
            by_doc = {r.doc_layer: f"{r.score:.2f}{_mark(r, alpha)}" for r in row.itertuples()}
            lines.append(f"| {q} | " + " | ".join(by_doc.get(d, "") for d in doc_layers) + " |")
        lines.append("")
    lines += ["| Task | Dim | Precision | Method | Query layer | Doc layer | Score [95% CI] | Reference | Δ | p | q |",
              "|:---|---:|:---|:---|---:|---:|---:|:---|---:|---:|---:|"]
    for r in cells.itertuples():
        tested = np.isfinite(r.q_value)
        lines.append(f"| {md_escape(r.task)} | {r.dim} | {md_escape(r.precision)} | {md_escape(r.method)} | "
                     f"{r.query_layer} | {r.doc_layer} | {r.score:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] | "
                     f"{md_escape(r.reference)} | " + (f"{r.delta:+.2f} | {r.p_value:.3g} | {r.q_value:.3g} |"
                                                       if tested else "| | |"))
    return "\n".join(lines) + "\n"


def _mark(r, alpha: float) -> str:
    if not (np.isfinite(r.q_value) and r.q_value < alpha):
        return ""
    return "▲" if r.delta > 0 else "▼"


def variant_views(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(file stem, title, Markdown) of one backbone's variant tables; none where its runs have no variant cells."""
    views = []
    subsets = subset_table(frame)
    if not subsets.empty:
        views.append(("subsets", "random coordinate subsets against the prefix", subset_markdown(subsets)))
    cells = query_layer_cells(frame)
    if not cells.empty:
        views.append(("query-layers", "queries from one layer, documents from another", query_layer_markdown(cells)))
    return views
