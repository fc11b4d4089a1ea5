"""Interactive figures for the leaderboard page: layer x dim heatmaps and cost/quality Pareto plots with hover,
drawn in the browser by the plotly.min.js that build_report copies beside index.html (never a CDN: the page
works offline, from file://).

Here plotly lays the figures out (subplot grids, axes, titles) from `cell_details` output; the page's script
fills them with traces built from the page's data, so no number is sent twice. Layouts go to the page as JSON
(no ids, no uids, the shared template sent once), so the same cells give the same bytes. plotly renders text as
SVG and reads a few tags (<b>, <br>, <a href>) and entities in it: every string from results is escaped first
(`plot_text` here, plotText in the page), so a method name shows as itself and never as markup.
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

from bench.precisions import RECORDS
from bench.report.tables import METRIC_NAMES, by_backbone, method_order, precision_order, task_order

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
TEMPLATE = "plotly_white"
ALL_PRECISIONS = "all"  # the Pareto plot's choice that draws every precision at once
SYMBOLS = {p.name: p.symbol for p in RECORDS}  # each known precision's plotly symbol (bench/precisions.py)
COST_AXES = [("bytes_per_vector", "bytes per vector (log)"), ("rel_cost", "relative encode cost (layer / layers)"),
             ("encode_ms", "measured encode ms / 1k texts")]  # the last only where runs measured it
HEATMAP_COLUMNS = 3
PAGE_FIELDS = {"bytes_per_vector": "bytes", "rel_cost": "cost", "encode_ms": "encode_ms"}  # cost -> the page's name


def plot_text(text) -> str:
    """Escape &, < and > for plotly's text rendering (quotes stay: plotly knows no &quot;); the page's plotText
    does the same for the strings its script builds."""
    return html.escape(str(text), quote=False)


def template_json() -> dict:
    return pio.templates[TEMPLATE].to_plotly_json()


def figures(details: pd.DataFrame) -> dict:
    """What the page needs to draw every figure beside the data it has (bench.report.html.page_data): each
    distinct layout once (plotly's make_subplots lays out the panels), and which one each figure uses:
    {"layouts": [...], "heatmap": {backbone: {task: {precision: layout}}}, "pareto": {backbone: {task: {"layout":
    layout, "costs": the page's cost fields on its x axes}}}, "style": colours and markers}. The page's script
    builds the traces (one heatmap per method, one scatter per method x precision x axis, and each method's
    frontiers, tagged by `meta` for the precision selector), their hover text and the target boxes."""
    layouts: dict[str, int] = {}
    symbols = {p: SYMBOLS[p] for p in set(details["precision"]) & set(SYMBOLS)}  # the page's own precisions only
    out: dict = {"heatmap": {}, "pareto": {}, "style": {"palette": qualitative.Plotly, "symbols": symbols}}

    def index(fig: go.Figure) -> int:
        spec = json.loads(fig.to_json())["layout"]
        spec.pop("template", None)  # the page sends that once, for every figure
        return layouts.setdefault(json.dumps(spec, sort_keys=True), len(layouts))

    for backbone, part in by_backbone(details):
        for task in task_order(part):
            data = part[part["task"] == task]
            out["heatmap"].setdefault(backbone, {})[task] = {
                p: index(heatmap_layout(data[data["precision"] == p])) for p in precision_order(data)}
            out["pareto"].setdefault(backbone, {})[task] = {
                "layout": index(pareto_layout(data)), "costs": [PAGE_FIELDS[cost] for cost, _ in cost_axes(data)]}
    out["layouts"] = [json.loads(spec) for spec in layouts]
    return out


def _metric(data: pd.DataFrame) -> str:
    metric = data["metric"].iloc[0]
    return METRIC_NAMES.get(metric, metric)


def heatmap_layout(data: pd.DataFrame) -> go.Figure:
    """One panel per method (the page fills each with its method's layer x dim means, in method_order) on one
    colour scale."""
    methods = method_order(data["method"])
    cols = min(len(methods), HEATMAP_COLUMNS)
    rows = math.ceil(len(methods) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[plot_text(m) for m in methods],
                        horizontal_spacing=0.06, vertical_spacing=0.12 if rows > 1 else 0.0)
    fig.update_xaxes(type="category", title_text="dim")
    fig.update_yaxes(type="category", title_text="layer")
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": _metric(data)}}},
                      height=120 + 260 * rows, margin={"t": 40, "b": 40, "l": 50, "r": 20})
    return fig


def cost_axes(data: pd.DataFrame) -> list[tuple[str, str]]:
    """Bytes and relative cost always; measured time where some run of these cells measured it."""
    return [(col, label) for col, label in COST_AXES if data[col].notna().any()]


def pareto_layout(data: pd.DataFrame) -> go.Figure:
    """Score against each cost (bytes, relative cost, measured time) side by side, on one score axis; the page
    draws one colour per method, one marker per precision, each method's Pareto frontier as a step line."""
    axes = cost_axes(data)
    fig = make_subplots(rows=1, cols=len(axes), shared_yaxes=True, horizontal_spacing=0.05)
    for k, (_, label) in enumerate(axes, start=1):
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
