"""Heatmaps (quality over layer x dim) and cost/quality plots, drawn from `tables.cell_stats` output.

Figures are standalone `matplotlib.figure.Figure` objects (no pyplot state, no GUI backend), drawn and saved
under one fixed style, and PNGs are written without timestamps or version metadata: same cells, same bytes.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from bench.catalog import pick_reference
from bench.precisions import RECORDS
from bench.report.tables import (
    METRIC_NAMES,
    main_precision,
    method_order,
    one_backbone,
    precision_order,
    score_digits,
    task_name,
    task_order,
)

# text.parse_math off: a `$` in a method name from results must print as itself, not break mathtext.
STYLE = {"svg.hashsalt": "elastic-bench", "text.parse_math": False, "font.family": "DejaVu Sans",
         "font.size": 8, "figure.dpi": 100, "savefig.dpi": 100}
MARKERS = {p.name: p.marker for p in RECORDS}  # each known precision's own; other names in results: EXTRA_MARKERS
EXTRA_MARKERS = ["v", "P", "X", "*", "<", ">", "h", "p"]


def styled(fn):
    """Build (and save) figures under STYLE, whatever the caller's rcParams are."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


@styled
def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None, "Creation Time": None})
    return buf.getvalue()


def _panels(n: int, width: float = 3.0, height: float = 2.6) -> tuple[Figure, list]:
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 0.8, height * nrows + 0.4), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _grid(data: pd.DataFrame, values: pd.Series, layers: list[int], dims: list[int]) -> pd.DataFrame:
    """values (indexed like data) as a layer x dim frame over the full grid; missing cells are NaN."""
    frame = pd.DataFrame({"layer": data["layer"], "dim": data["dim"], "v": values})
    return frame.pivot_table(index="layer", columns="dim", values="v", aggfunc="first").reindex(
        index=layers, columns=dims)


def _draw_heatmap(ax, grid: pd.DataFrame, targets: set[tuple[int, int]], digits: int, **kwargs) -> None:
    sns.heatmap(grid, ax=ax, annot=True, fmt=f".{digits}f", annot_kws={"fontsize": 6}, cbar=False,
                linewidths=0.5, linecolor="white", **kwargs)
    for i, layer in enumerate(grid.index):
        for j, dim in enumerate(grid.columns):
            if (layer, dim) in targets:
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.invert_yaxis()  # layer 1 at the bottom: the small-to-large diagonal runs up and to the right
    ax.set_xlabel("dim")
    ax.set_ylabel("layer")


def _task_data(cells: pd.DataFrame, task: str, precision: str) -> pd.DataFrame:
    return cells[(cells["task"] == task) & (cells["precision"] == precision)]


def _title(data: pd.DataFrame, task: str, precision: str, what: str) -> str:
    metric = METRIC_NAMES.get(data["metric"].iloc[0], data["metric"].iloc[0])
    return f"{task_name(task, data)}: {what} {metric} ({precision}); red boxes: target (layer, dim) pairs"


def _suptitle(fig: Figure, text: str) -> None:
    """Wrapped to the figure's width: a one-panel figure would otherwise clip the title at both ends."""
    fig.suptitle(textwrap.fill(text, width=max(30, int(fig.get_figwidth() * 13))))


@styled
def heatmap_figure(cells: pd.DataFrame, task: str, precision: str) -> Figure | None:
    """One panel per method, main score over layer x dim, one colour scale for the task across methods."""
    one_backbone(cells)
    data = _task_data(cells, task, precision)
    if data.empty:
        return None
    layers, dims = sorted(data["layer"].unique()), sorted(data["dim"].unique())
    methods = method_order(data["method"])
    fig, axes = _panels(len(methods))
    digits = score_digits(cells, task)
    vmin, vmax = data["mean"].min(), data["mean"].max()
    for ax, method in zip(axes, methods):
        part = data[data["method"] == method]
        targets = set(zip(part.loc[part["is_target"], "layer"], part.loc[part["is_target"], "dim"]))
        _draw_heatmap(ax, _grid(part, part["mean"], layers, dims), targets, digits, vmin=vmin, vmax=vmax,
                      cmap="viridis")
        ax.set_title(method)
    fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.8)
    _suptitle(fig, _title(data, task, precision, "mean"))
    return fig


@styled
def diff_heatmap_figure(cells: pd.DataFrame, task: str, precision: str,
                        reference: str | None = None) -> Figure | None:
    """Each method minus the reference at the same (layer, dim); None when there is nothing to compare."""
    one_backbone(cells)
    data = _task_data(cells, task, precision)
    reference = reference or pick_reference(data["method"])
    if data.empty or reference not in set(data["method"]):
        return None
    layers, dims = sorted(data["layer"].unique()), sorted(data["dim"].unique())
    base = data[data["method"] == reference].set_index(["layer", "dim"])["mean"]
    diffs = {}
    for method in method_order(data["method"]):
        part = data[data["method"] == method]
        delta = part["mean"].to_numpy() - base.reindex(list(zip(part["layer"], part["dim"]))).to_numpy()
        grid = _grid(part, pd.Series(delta, index=part.index), layers, dims)
        if method != reference and grid.notna().any().any():
            targets = set(zip(part.loc[part["is_target"], "layer"], part.loc[part["is_target"], "dim"]))
            diffs[method] = (grid, targets)
    if not diffs:
        return None
    limit = max(float(np.nanmax(np.abs(g.to_numpy()))) for g, _ in diffs.values()) or 1.0
    fig, axes = _panels(len(diffs))
    digits = score_digits(cells, task)
    for ax, (method, (grid, targets)) in zip(axes, diffs.items()):
        _draw_heatmap(ax, grid, targets, digits, vmin=-limit, vmax=limit, cmap="RdBu")
        ax.set_title(f"{method} - {reference}")
    fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.8)
    _suptitle(fig, _title(data, task, precision, f"difference to {reference} in"))
    return fig


def pareto_frontier(points: pd.DataFrame, cost: str, score: str = "mean") -> pd.DataFrame:
    """The points no other point beats with lower-or-equal cost and a higher score, sorted by cost."""
    ordered = points.sort_values([cost, score], ascending=[True, False], kind="mergesort")
    best_before = ordered[score].cummax().shift(fill_value=-np.inf)
    return ordered[ordered[score] > best_before]


# seaborn's style mapping refuses filled and line-art markers in one plot: a line-art marker (rabitq's "1") is drawn
# as this filled heptagon in the scatter plots
FILLED_STAND_IN = (7, 0, 0)


def _markers(precisions: list[str]) -> dict[str, str | tuple]:
    extra = iter(EXTRA_MARKERS * (1 + len(precisions) // len(EXTRA_MARKERS)))
    markers = {p: MARKERS[p] if p in MARKERS else next(extra) for p in precisions}
    return {p: m if MarkerStyle(m).is_filled() else FILLED_STAND_IN for p, m in markers.items()}


@styled
def cost_figure(cells: pd.DataFrame, task: str) -> Figure | None:
    """Score against bytes per vector and against relative encode cost; lines are each method's Pareto frontier."""
    one_backbone(cells)
    data = cells[cells["task"] == task]
    if data.empty:
        return None
    methods, precisions = method_order(data["method"]), precision_order(data)
    palette = dict(zip(methods, sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, cost, label in [(axes[0], "bytes_per_vector", "bytes per vector (log scale)"),
                            (axes[1], "rel_cost", "relative encode cost (layer / layers)")]:
        sns.scatterplot(data=data, x=cost, y="mean", hue="method", hue_order=methods, style="precision",
                        style_order=precisions, markers=_markers(precisions), palette=palette, ax=ax,
                        legend=ax is axes[1], s=28, alpha=0.8)
        for method in methods:
            front = pareto_frontier(data[data["method"] == method], cost)
            ax.step(front[cost], front["mean"], where="post", color=palette[method], linewidth=1.2)
        ax.set_xlabel(label)
        ax.set_ylabel(METRIC_NAMES.get(data["metric"].iloc[0], data["metric"].iloc[0]))
        ax.grid(alpha=0.3)
    if data["bytes_per_vector"].gt(0).all():
        axes[0].set_xscale("log", base=2)
        # plain numbers: the default log labels are mathtext, which STYLE turns off
        axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.suptitle(f"{task_name(task, data)}: quality vs cost (marker: precision; line: Pareto frontier)")
    return fig


def report_figures(cells: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """(file stem, title, PNG) for every figure the results support, in a fixed order."""
    precision = main_precision(cells)
    out = []
    for task in task_order(cells):
        slug, name = slugify(task), task_name(task, cells)
        candidates = [(f"heatmap_{slug}_{precision}", f"{name}: quality over layer x dim",
                       lambda: heatmap_figure(cells, task, precision)),
                      (f"diff_{slug}_{precision}", f"{name}: difference to the reference method",
                       lambda: diff_heatmap_figure(cells, task, precision)),
                      (f"cost_{slug}", f"{name}: quality vs cost", lambda: cost_figure(cells, task))]
        for stem, title, draw in candidates:
            fig = draw()
            if fig is not None:
                out.append((slugify(stem), title, png_bytes(fig)))
    return out


def slugify(name: str) -> str:
    """A file-name-safe stem for names that come from results."""
    return "".join(c if c.isalnum() or c in "-_.+@" else "_" for c in name)
