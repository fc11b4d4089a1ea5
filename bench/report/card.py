"""`bench card`: an elasticity card for one backbone, from results alone. Which (layer, dim, precision) cells keep
how much of the full model's quality, what each costs (bytes per vector, measured encode time), which cells the
model was trained for, and a manifest a server can read (the dims and layers that keep >= 99% and >= 95% per task
family). Written as Markdown for a model card (with one figure beside it) and as JSON.

A pure function of the results folder, like the rest of bench/report: sorted keys, fixed float formatting, no
timestamps, PNG without metadata, so the same results give the same bytes. Never imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench import BenchError, stats
from bench.catalog import METRIC_NAMES, is_native_family, method_order
from bench.report import plots, significance, tables
from bench.report.cell_details import ALPHA, CI_LABEL, measured_encode_ms
from bench.results import load_results

THRESHOLDS = (0.99, 0.95)  # "within 1%" and "within 5%" of the full model
N_BOOT = 1000  # resamples of the retention intervals (an interval's percentiles; bench.stats' tests take 10,000)
# Methods that shrink an embedding some other way than keeping its first dims (a projection, a random subset):
# prefix truncation is compared with them where they ran. None exists yet (issue 24 adds one); its name goes here
# and its comparison into `_prefix_check`.
NON_PREFIX_METHODS: tuple[str, ...] = ()
NO_BASELINE = "no non-prefix baseline in these results"
KEEPS = ("a (layer, dim, precision) cell keeps X for a family when, on every task of the family, the cell was "
         "evaluated and its retention point estimate (cell score / full fp32 cell score on the same task) is >= X; "
         "`dims`: the dims whose cell at the full layer in fp32 keeps X, `layers`: the layers whose cell at the full "
         "dim in fp32 keeps X, `cells`: every cell that keeps X")
RETENTION = ("the cell's main score / the full cell's (deepest layer, widest dim, fp32) on the same task, each the "
             "mean over seeds")
INTERVAL = (f"{CI_LABEL} percentile bootstrap of the retention over the task's examples ({N_BOOT} resamples, seed 0; "
            "STS sets whose pairs share sentences resample the distinct sentences, as bench.stats does): the cell and "
            "the full cell are resampled together on the same examples; null where the cell or the full cell has no "
            "stored per-example values (`interval_note` says why)")


@dataclass(frozen=True)
class Card:
    markdown: str
    manifest: dict  # the JSON document
    png: bytes


def default_method(frame: pd.DataFrame, backbone: str) -> str:
    """pretrained where the backbone has it (the model as published), else the first method in display order; as
    the tables label methods, so two configs of one method in a folder (fp32 and bf16, say) give `pretrained@<hash>`
    and the first of them is taken."""
    methods = method_order(tables.quality_rows(frame[frame["backbone"] == backbone])["method"])
    published = [m for m in methods if m.split("@")[0] == "pretrained"]
    return (published or methods)[0]


def write_card(results_dir: Path, backbone: str, out_dir: Path, method: str = "pretrained",
               frame: pd.DataFrame | None = None) -> list[Path]:
    """Write <out_dir>/<backbone>.md, .json and .png; return them. `frame`: the results as
    `load_results(results_dir, examples=True)` loaded them (else loaded here)."""
    frame = _loaded(results_dir) if frame is None else frame
    card = build_card(frame, results_dir, backbone, method)
    stem = Path(out_dir) / plots.slugify(backbone)
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = {".md": card.markdown.encode(), ".json": (json.dumps(card.manifest, sort_keys=True, indent=1,
                                                                 allow_nan=False) + "\n").encode(), ".png": card.png}
    for suffix, data in files.items():  # bytes, not text mode: no newline translation
        stem.with_suffix(suffix).write_bytes(data)
    return [stem.with_suffix(s) for s in files]


def _loaded(results_dir: Path) -> pd.DataFrame:
    frame = load_results(results_dir, examples=True)  # a missing folder is a BenchError there
    if frame.empty:
        raise BenchError(f"no results in {results_dir}; run `bench run` first or pass --results-dir")
    return frame


def build_card(frame: pd.DataFrame, results_dir: Path, backbone: str, method: str = "pretrained") -> Card:
    backbones = sorted(set(frame["backbone"]))
    if backbone not in backbones:
        raise BenchError(f"backbone {backbone!r} has no results in {results_dir}; backbones present: "
                         f"{', '.join(backbones)}")
    part = frame[frame["backbone"] == backbone]
    cells = retention_cells(part, method)
    cells = add_intervals(cells, significance.method_cell_values(frame, backbone, method))
    doc = card_json(cells, part, backbone, method)
    return Card(card_markdown(doc, cells), doc, retention_figure(cells, f"{backbone} ({method})"))


# ---- numbers ---------------------------------------------------------------------------------------------------

def retention_cells(part: pd.DataFrame, method: str) -> pd.DataFrame:
    """One backbone's rows -> the method's cells (task, layer, dim, precision: mean over seeds) with `retention`
    against the task's full cell (deepest layer, widest dim, fp32 of the backbone) and the measured encode time."""
    q = tables.quality_rows(part)
    if method not in set(q["method"]):
        raise BenchError(f"method {method!r} has no results on backbone {part['backbone'].iloc[0]}; methods "
                         f"present: {', '.join(method_order(q['method']))}")
    q = q[q["method"] == method]
    cells = q.groupby(["task", "layer", "dim", "precision"], as_index=False).agg(
        backbone=("backbone", "first"), method=("method", "first"), family=("family", "first"),
        display=("display", "first"), metric=("metric", "first"), score=("score", "mean"),
        is_target=("is_target", "any"), bytes_per_vector=("bytes_per_vector", "first"),
        rel_cost=("rel_cost", "first"))
    cells["encode_ms"] = measured_encode_ms(part, cells).to_numpy()
    full_layer, full_dim = int(cells["layer"].max()), int(cells["dim"].max())
    full = cells[(cells["layer"] == full_layer) & (cells["dim"] == full_dim) & (cells["precision"] == "fp32")]
    cells["full_score"] = cells["task"].map(full.set_index("task")["score"])
    # a full cell that scores 0 or less (a random model) gives no retention, not an infinite one
    cells["retention"] = cells["score"] / cells["full_score"].where(cells["full_score"] > 0)
    cells.attrs["full"] = (full_layer, full_dim)
    order = {p: i for i, p in enumerate(tables.precision_order(cells))}
    tasks = {t: i for i, t in enumerate(tables.task_order(cells))}
    cells = cells.sort_values(["layer", "dim"]).sort_values("precision", key=lambda s: s.map(order), kind="stable")
    return cells.sort_values("task", key=lambda s: s.map(tasks), kind="stable").reset_index(drop=True)


def add_intervals(cells: pd.DataFrame, values: dict[tuple, tuple | str]) -> pd.DataFrame:
    """ci_low, ci_high of each cell's retention, or `interval_note` saying why there is none. `values`:
    bench.report.significance.method_cell_values of the method (per-example values or a reason, per cell)."""
    full_layer, full_dim = cells.attrs["full"]
    full_boot: dict[str, tuple | str] = {}
    out = []
    for cell in cells.itertuples():
        if cell.task not in full_boot:
            full_boot[cell.task] = _full_distribution(values, cell.task, full_layer, full_dim)
        out.append(_interval(values.get((cell.task, cell.layer, cell.dim, cell.precision)), full_boot[cell.task]))
    low, high, note = zip(*out) if out else ((), (), ())
    return cells.assign(ci_low=list(low), ci_high=list(high), interval_note=list(note))


def _full_distribution(values: dict, task: str, layer: int, dim: int) -> tuple | str:
    """(full cell's values, gold, statistic, bootstrap distribution) of a task, or why it has none."""
    entry = values.get((task, layer, dim, "fp32"))
    if entry is None:
        return "no per-example values stored for this task"
    if isinstance(entry, str):
        return f"the full cell: {entry}"
    full, gold, resampling = entry
    statistic = stats.mean_statistic if gold is None else stats.spearman_statistic(gold)
    return full, gold, resampling, statistic, _distribution(full, statistic, resampling)


def _distribution(values: np.ndarray, statistic, resampling: stats.Resampling) -> np.ndarray:
    """The statistic's bootstrap distribution, the mean over seeds (as significance.cell_statistics takes it)."""
    return np.mean([stats.bootstrap_distribution(v, statistic, N_BOOT, 0, resampling) for v in values], axis=0)


def _interval(entry, full) -> tuple[float, float, str]:
    if isinstance(full, str):
        return math.nan, math.nan, full
    if entry is None:
        return math.nan, math.nan, "no per-example values stored for this task"
    if isinstance(entry, str):
        return math.nan, math.nan, entry
    (values, gold, resampling), (full_values, full_gold, full_resampling, statistic, full_dist) = entry, full
    if values.shape[-1] != full_values.shape[-1] or (gold is not None and not np.array_equal(gold, full_gold)) or \
            resampling.key() != full_resampling.key():
        return math.nan, math.nan, "scored other examples than the full cell (other evaluation settings)"
    # the same seed and n give the same resamples: the two distributions divide into the paired ratio's
    if not np.all(full_dist > 0):
        return math.nan, math.nan, "the full cell's resamples reach 0: no ratio to it"
    low, high = stats.percentile_ci(_distribution(values, statistic, resampling) / full_dist, ALPHA)
    return low, high, ""


def smallest_within(cells: pd.DataFrame, threshold: float) -> pd.Series | None:
    """The task's cheapest cell whose retention point estimate is >= threshold: fewest bytes per vector, then the
    lowest encode cost (layers run), then the measured encode time; None where no cell keeps it."""
    keep = cells[cells["retention"] >= threshold]
    if keep.empty:
        return None
    order = {p: i for i, p in enumerate(tables.precision_order(cells))}
    keep = keep.assign(_ms=keep["encode_ms"].fillna(np.inf), _p=keep["precision"].map(order))
    return keep.sort_values(["bytes_per_vector", "rel_cost", "_ms", "_p", "layer", "dim"]).iloc[0]


def family_key(family: str) -> str:
    """sts, retrieval, or mteb-<type> (the report's table names)."""
    return family if is_native_family(family) else f"mteb-{family}"


def family_keeps(cells: pd.DataFrame, threshold: float) -> dict:
    """The cells (and dims at the full layer, layers at the full dim, fp32) that keep `threshold` on every task
    of these cells (one family): see KEEPS."""
    full_layer, full_dim = cells.attrs["full"]
    n_tasks = cells["task"].nunique()
    ok = cells.assign(ok=cells["retention"] >= threshold).groupby(["layer", "dim", "precision"])["ok"].agg(
        ["sum", "size"])
    kept = ok[(ok["sum"] == n_tasks) & (ok["size"] == n_tasks)].index
    order = {p: i for i, p in enumerate(tables.precision_order(cells))}
    kept = sorted(kept, key=lambda c: (c[0], c[1], order[c[2]]))
    return {"cells": [{"layer": int(l), "dim": int(d), "precision": p} for l, d, p in kept],
            "dims": sorted(int(d) for l, d, p in kept if l == full_layer and p == "fp32"),
            "layers": sorted(int(l) for l, d, p in kept if d == full_dim and p == "fp32")}


def _prefix_check(part: pd.DataFrame) -> dict:
    """Does keeping the first dims hold up against a non-prefix way of shrinking the embedding?"""
    present = [m for m in NON_PREFIX_METHODS if m in set(part["method"])]
    if not present:
        return {"non_prefix_baseline": None, "note": NO_BASELINE}
    raise NotImplementedError("compare with the non-prefix baseline here (issue 24)")


# ---- the JSON document -----------------------------------------------------------------------------------------

def _num(x, digits: int = 6):
    """Floats at fixed precision (same results, same text); NaN -> null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def _cell_json(cell) -> dict:
    return {"layer": int(cell.layer), "dim": int(cell.dim), "precision": cell.precision,
            "bytes_per_vector": int(cell.bytes_per_vector), "encode_ms_per_1k_texts": _num(cell.encode_ms, 3),
            "relative_encode_cost": _num(cell.rel_cost), "score": _num(cell.score), "retention": _num(cell.retention),
            "ci_low": _num(cell.ci_low), "ci_high": _num(cell.ci_high), "interval_note": cell.interval_note,
            "is_target": bool(cell.is_target)}


def card_json(cells: pd.DataFrame, part: pd.DataFrame, backbone: str, method: str) -> dict:
    full_layer, full_dim = cells.attrs["full"]
    tasks = []
    for task, group in cells.groupby("task", sort=False):
        first = group.iloc[0]
        picks = {f"{round(100 * (1 - t))}%": smallest_within(group, t) for t in THRESHOLDS}
        tasks.append({"task": task, "display": first.display, "family": family_key(first.family),
                      "metric": first.metric, "full_score": _num(first.full_score),
                      "smallest_within": {k: None if c is None else _cell_json(c) for k, c in picks.items()},
                      "cells": [_cell_json(c) for c in group.itertuples()]})
    families = {}
    for family, group in cells.groupby(cells["family"].map(family_key), sort=True):
        group.attrs = cells.attrs
        families[family] = {"tasks": sorted(set(group["task"])),
                            **{f"keeps_{round(100 * t)}": family_keeps(group, t) for t in THRESHOLDS}}
    targets = cells[cells["is_target"]].drop_duplicates(["layer", "dim"]).sort_values(["layer", "dim"])
    prov = tables.provenance(part[part["method"] == method])
    return {"card_version": 1, "backbone": backbone, "method": method,
            "full": {"layer": full_layer, "dim": full_dim, "precision": "fp32"},
            "provenance": {"git_sha": prov["git_sha"], "runs": int(prov["runs"][0]), "seeds": prov["seeds"],
                           "train_data": prov["train_data"], "budget": prov["budget"]},
            "definitions": {"retention": RETENTION, "interval": INTERVAL, "keeps": KEEPS,
                            "smallest_within": "the cheapest cell whose retention point estimate is >= 0.99 (1%) or "
                                               ">= 0.95 (5%): fewest bytes per vector, then fewest layers, then the "
                                               "measured encode time"},
            "trained_for": [{"layer": int(l), "dim": int(d)} for l, d in zip(targets["layer"], targets["dim"])],
            "prefix_truncation": _prefix_check(part),
            "tasks": tasks,
            "manifest": {"definition": KEEPS, "families": families}}


# ---- the Markdown ----------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _cell_name(c: dict | None) -> str:
    if c is None:
        return "none"
    ms = "" if c["encode_ms_per_1k_texts"] is None else f", {c['encode_ms_per_1k_texts']:.1f} ms / 1k texts"
    ci = "" if c["ci_low"] is None else f" [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]"
    return (f"layer {c['layer']}, dim {c['dim']}, {c['precision']}: {c['bytes_per_vector']} B{ms}; "
            f"{_pct(c['retention'])}{ci}")


def card_markdown(doc: dict, cells: pd.DataFrame) -> str:
    full = doc["full"]
    slug = plots.slugify(doc["backbone"])
    targets = ", ".join(f"({t['layer']}, {t['dim']})" for t in doc["trained_for"])
    lines = [f"# Elasticity card: {doc['backbone']} ({doc['method']})", "",
             f"How much of the full model's quality each sub-model keeps: the first `layer` transformer blocks, the "
             f"first `dim` dimensions of the embedding, stored at `precision`. The full model is layer {full['layer']},"
             f" dim {full['dim']}, fp32. From elastic-bench results alone (`bench card`; {doc['provenance']['runs']} "
             f"run(s), code {', '.join(doc['provenance']['git_sha'])}).", "",
             f"Retention: {doc['definitions']['retention']}. Interval: {doc['definitions']['interval']}.", "",
             f"![Retention against bytes per vector]({slug}.png)", "",
             "## Smallest cells within 1% and 5% of the full model", "",
             "Fewest bytes per vector, then fewest layers; encode time as measured in the run (per 1,000 texts, "
             "layers 1 to `layer`). Bytes per vector count every byte a query reads per document (a rescoring "
             "copy included).", "",
             "| Task | Metric | Full score | Within 1% | Within 5% |", "|---|---|---:|---|---|"]
    for t in doc["tasks"]:
        lines.append(f"| {t['display']} | {METRIC_NAMES.get(t['metric'], t['metric'])} | {_full_text(t)} | "
                     f"{_cell_name(t['smallest_within']['1%'])} | {_cell_name(t['smallest_within']['5%'])} |")
    lines += ["", "## Cells the model was trained for", "",
              (f"(layer, dim): {targets}." if targets else "No cell is marked as a training target (`is_target`) in "
               "these results: the method trains no sub-model."),
              "", "## Prefix truncation against a non-prefix baseline", "",
              doc["prefix_truncation"]["note"][0].upper() + doc["prefix_truncation"]["note"][1:] + ".",
              "", "## Serving manifest", "", f"Keeps: {KEEPS}.", "",
              "| Family | Tasks | Dims at layer " + str(full["layer"]) + ", >= 99% | Layers at dim " + str(full["dim"])
              + ", >= 99% | Dims, >= 95% | Layers, >= 95% |", "|---|---|---|---|---|---|"]
    for name, fam in doc["manifest"]["families"].items():
        row = [", ".join(str(v) for v in fam[k][axis]) or "none" for k in ("keeps_99", "keeps_95")
               for axis in ("dims", "layers")]
        lines.append(f"| {name} | {', '.join(fam['tasks'])} | {' | '.join(row)} |")
    lines += ["", "## Retention per cell", ""]
    for t in doc["tasks"]:
        lines += _task_table(t, cells[cells["task"] == t["task"]])
    return "\n".join(lines) + "\n"


def _full_text(task: dict) -> str:
    """The full cell's score; results without it (an int8-only run) have no retention to show."""
    return "no full fp32 cell" if task["full_score"] is None else f"{task['full_score']:.3f}"


def _task_table(t: dict, cells: pd.DataFrame) -> list[str]:
    """layer x dim rows, one column per precision: retention [interval]."""
    precisions = tables.precision_order(cells)
    lines = [f"### {t['display']} ({METRIC_NAMES.get(t['metric'], t['metric'])}, full {_full_text(t)})", "",
             "| Layer | Dim | Encode ms / 1k texts | " + " | ".join(precisions) + " |",
             "|---:|---:|---:|" + "---:|" * len(precisions)]
    for (layer, dim), group in cells.groupby(["layer", "dim"], sort=True):
        by_p = group.set_index("precision")
        ms = group["encode_ms"].iloc[0]
        row = [str(layer), str(dim), "" if math.isnan(ms) else f"{ms:.1f}"]
        for p in precisions:
            if p not in by_p.index:
                row.append("")
                continue
            c = by_p.loc[p]
            ci = "" if math.isnan(c.ci_low) else f" [{_pct(c.ci_low)}, {_pct(c.ci_high)}]"
            row.append(_pct(c.retention) + ci + (" (target)" if c.is_target else ""))
        lines.append("| " + " | ".join(row) + " |")
    notes = cells.loc[cells["interval_note"] != "", "interval_note"].value_counts()
    if not notes.empty:
        lines += ["", "No interval for " + "; ".join(f"{n} cell(s): {why}" for why, n in
                                                      sorted(notes.items(), key=lambda i: (-i[1], i[0]))) + "."]
    return lines + [""]


# ---- the figure ------------------------------------------------------------------------------------------------

@plots.styled
def retention_figure(cells: pd.DataFrame, title: str) -> bytes:
    """Retention against bytes per vector, one panel per task: colour = layer, marker = precision, bars = the
    interval where there is one; lines at 99% and 95%. Tasks without a full fp32 cell, or whose full cell scores 0
    (a random model), have no retention to draw."""
    cells = cells[cells["retention"].notna()]
    if cells.empty:
        fig = Figure(figsize=(4, 1), layout="constrained")
        fig.text(0.5, 0.5, f"{title}: no full fp32 cell, so no retention to draw", ha="center", va="center")
        return plots.png_bytes(fig)
    tasks = list(dict.fromkeys(cells["task"]))
    fig = Figure(figsize=(3.2 * len(tasks) + 0.8, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tasks), sharey=True))
    layers = sorted(set(cells["layer"]))
    colours = dict(zip(layers, sns.color_palette("viridis", len(layers))))
    for ax, task in zip(axes, tasks):
        part = cells[cells["task"] == task]
        for (precision, layer), group in part.groupby(["precision", "layer"], sort=True):
            y = 100 * group["retention"]
            ax.scatter(group["bytes_per_vector"], y, s=14, color=colours[layer],
                       marker=plots.MARKERS.get(precision, "x"), label=f"{precision}" if layer == layers[-1] else None)
            has = group["ci_low"].notna()
            if has.any():
                err = [y[has] - 100 * group["ci_low"][has], 100 * group["ci_high"][has] - y[has]]
                ax.errorbar(group["bytes_per_vector"][has], y[has], yerr=err, fmt="none", ecolor=colours[layer],
                            elinewidth=0.8)
        for level in THRESHOLDS:
            ax.axhline(100 * level, color="grey", linewidth=0.6, linestyle="--")
        ax.set_xscale("log", base=2)
        # plain numbers: the style turns mathtext off, so log-scale's default "$2^{k}$" labels would print raw
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(tables.task_name(task, part))
        ax.set_xlabel("bytes per vector (log)")
    axes[0].set_ylabel("retention (% of full fp32)")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="precision\n(colour: layer)", fontsize=6,
               title_fontsize=6)
    fig.suptitle(f"{title}: retention vs bytes per vector (layers {layers[0]}-{layers[-1]}: dark to light)")
    return plots.png_bytes(fig)

