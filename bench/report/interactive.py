"""Interactive figures for the leaderboard page: layer x dim heatmaps and cost/quality Pareto plots with hover,
built with plotly from `cell_details` output and drawn in the browser by the plotly.min.js that build_report
copies beside index.html (never a CDN: the page works offline, from file://).

Figures go to the page as JSON (no ids, no uids, the shared template sent once), so the same cells give the
same bytes. plotly renders text as SVG and reads a few tags (<b>, <br>, <a href>) and entities in it: every
string from results goes through `plot_text` first, so a method name shows as itself and never as markup.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from bench.report.cell_details import detail_lines, heading_lines
from bench.report.plots import pareto_frontier
from bench.report.tables import METRIC_NAMES, by_backbone, method_order, precision_order, score_digits, task_order

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
TEMPLATE = "plotly_white"
ALL_PRECISIONS = "all"  # the Pareto plot's choice that draws every precision at once
SYMBOLS = {"fp32": "circle", "int8": "square", "binary": "triangle-up", "binary+rescore": "diamond"}
COST_AXES = [("bytes_per_vector", "bytes per vector (log)"), ("rel_cost", "relative encode cost (layer / layers)"),
             ("encode_ms", "measured encode ms / 1k texts")]  # the last only where runs measured it
HEATMAP_COLUMNS = 3


def plot_text(text) -> str:
    """Escape &, < and > for plotly's text rendering (quotes stay: plotly knows no &quot;)."""
    return html.escape(str(text), quote=False)


def hover_text(cell, digits: int) -> str:
    return "<br>".join(plot_text(line) for line in heading_lines(cell, digits) + detail_lines(cell, digits))


def template_json() -> dict:
    return pio.templates[TEMPLATE].to_plotly_json()


def figures(details: pd.DataFrame) -> dict:
    """Every figure the page can show, as JSON-ready dicts: {"heatmap": {backbone: {task: {precision: fig}}},
    "pareto": {backbone: {task: fig}}} (the page picks a Pareto plot's precision by the traces' `meta`)."""
    out: dict = {"heatmap": {}, "pareto": {}}
    for backbone, part in by_backbone(details):
        for task in task_order(part):
            data = part[part["task"] == task]
            digits = score_digits(part, task)
            out["heatmap"].setdefault(backbone, {})[task] = {
                p: _json(heatmap(data[data["precision"] == p], digits)) for p in precision_order(data)}
            out["pareto"].setdefault(backbone, {})[task] = _json(pareto(data, digits))
    return out


def _json(fig: go.Figure) -> dict:
    """The figure as plain JSON types, without its template (the page sends that once, for every figure)."""
    spec = json.loads(fig.to_json())
    spec["layout"].pop("template", None)
    return spec


def _metric(data: pd.DataFrame) -> str:
    metric = data["metric"].iloc[0]
    return METRIC_NAMES.get(metric, metric)


def heatmap(data: pd.DataFrame, digits: int) -> go.Figure:
    """One panel per method: the mean score over layer x dim on one colour scale; red boxes mark targets."""
    layers, dims = sorted(data["layer"].unique()), sorted(data["dim"].unique())
    methods = method_order(data["method"])
    cols = min(len(methods), HEATMAP_COLUMNS)
    rows = math.ceil(len(methods) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[plot_text(m) for m in methods],
                        horizontal_spacing=0.06, vertical_spacing=0.12 if rows > 1 else 0.0)
    for i, method in enumerate(methods):
        row, col = divmod(i, cols)
        cells = {(c.layer, c.dim): c for c in data[data["method"] == method].itertuples(index=False)}
        grid = [[cells.get((layer, dim)) for dim in dims] for layer in layers]
        fig.add_trace(go.Heatmap(
            x=[str(d) for d in dims], y=[str(layer) for layer in layers], coloraxis="coloraxis", xgap=1, ygap=1,
            z=[[None if c is None else c.mean for c in line] for line in grid],
            text=[[None if c is None else hover_text(c, digits) for c in line] for line in grid],
            hovertemplate="%{text}<extra></extra>", texttemplate=f"%{{z:.{digits}f}}"), row=row + 1, col=col + 1)
        for y, line in enumerate(grid):
            for x, c in enumerate(line):
                if c is not None and c.is_target:
                    fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5,
                                  line={"color": "red", "width": 2}, row=row + 1, col=col + 1)
    fig.update_xaxes(type="category", title_text="dim")
    fig.update_yaxes(type="category", title_text="layer")
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": _metric(data)}}},
                      height=120 + 260 * rows, margin={"t": 40, "b": 40, "l": 50, "r": 20})
    return fig


def cost_axes(data: pd.DataFrame) -> list[tuple[str, str]]:
    """Bytes and relative cost always; measured time where some run of these cells measured it."""
    return [(col, label) for col, label in COST_AXES if data[col].notna().any()]


def pareto(data: pd.DataFrame, digits: int) -> go.Figure:
    """Score against each cost (bytes, relative cost, measured time); one colour per method, one marker per
    precision, each method's Pareto frontier as a step line. Every trace's `meta` says which choice of the page's
    precision selector shows it (points: {"precision": theirs}, shown for it and for ALL_PRECISIONS; frontiers:
    {"frontier": the choice they were drawn over}), so one figure serves every choice and each point's hover text
    is stored once per axis."""
    axes = cost_axes(data)
    methods, precisions = method_order(data["method"]), precision_order(data)
    fig = make_subplots(rows=1, cols=len(axes), shared_yaxes=True, horizontal_spacing=0.05)
    for k, (cost, label) in enumerate(axes, start=1):
        for i, method in enumerate(methods):
            colour = qualitative.Plotly[i % len(qualitative.Plotly)]
            ours = data[(data["method"] == method) & data[cost].notna()]
            for precision in precisions:
                points = ours[ours["precision"] == precision]
                fig.add_trace(go.Scatter(
                    x=points[cost], y=points["mean"], mode="markers", showlegend=False, legendgroup=method,
                    meta={"precision": precision}, marker={"color": colour, "size": 8,
                                                           "symbol": SYMBOLS.get(precision, "x")},
                    text=[hover_text(c, digits) for c in points.itertuples(index=False)],
                    hovertemplate="%{text}<extra></extra>"), row=1, col=k)
            for scope in [ALL_PRECISIONS, *precisions]:  # the legend entry: one frontier per method is shown
                front = pareto_frontier(ours if scope == ALL_PRECISIONS else ours[ours["precision"] == scope], cost)
                fig.add_trace(go.Scatter(
                    x=front[cost], y=front["mean"], mode="lines", name=plot_text(method), legendgroup=method,
                    showlegend=k == 1, meta={"frontier": scope}, hoverinfo="skip",
                    line={"color": colour, "width": 1.5, "shape": "hv"}), row=1, col=k)
        fig.update_xaxes(title_text=label, row=1, col=k)
    if data["bytes_per_vector"].gt(0).all():  # sizes are powers of two: tick those, not plotly's 2-5-10
        low, high = math.floor(math.log2(data["bytes_per_vector"].min())), math.ceil(
            math.log2(data["bytes_per_vector"].max()))
        fig.update_xaxes(type="log", tickvals=[2 ** k for k in range(low, high + 1)], row=1, col=1)
    fig.update_yaxes(title_text=_metric(data), row=1, col=1)
    # the legend above the plots: long method names must not squeeze the axes
    fig.update_layout(height=460, margin={"t": 60, "b": 50, "l": 60, "r": 20},
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"})
    return fig

