"""The leaderboard page and its interactive figures, read as files (tests/test_browser.py drives them in Chromium)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.report import _statistics, build_report, interactive, significance, tables
from bench.report.cell_details import ALPHA, cell_details, p_shown
from bench.report.html import js_fixed, page_number
from bench.results import load_results

from test_report import encode_ms, leaderboard_cells, write_method, write_separate  # synthetic results (tmp dirs)

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'  # a method name from results
TASKS = ("stsb", "sickr", "scifact")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Real statistics (per-example files) and measured encode times, a hostile method name without timings."""
    path = tmp_path_factory.mktemp("results")
    write_method(path, "full", tasks=TASKS, seeds=(0, 1), precisions=("fp32",), examples=True, timed=True)
    write_method(path, HOSTILE, tasks=TASKS, precisions=("fp32",), examples=True)
    write_separate(path, tasks=TASKS, examples=True, timed=True)
    return path


@pytest.fixture(scope="module")
def page(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(results, out)
    return out / "index.html"


def _data(page: Path) -> dict:
    """The page's data block, as its script reads it."""
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(found.group(1))


def _details(results_dir: Path, statistics: bool = False):
    """What build_report passes the page (with the report's statistics where asked)."""
    frame = load_results(results_dir, examples=True)
    cells = tables.cell_stats(frame)
    sig = _statistics(frame, {b: tables.target_sizes(part) for b, part in tables.by_backbone(cells)})
    return cell_details(cells, sig if statistics else None, frame)


def test_page_works_offline_and_escapes_names_from_results(page):
    text = page.read_text()
    assert HOSTILE not in text
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text  # autoescaped in the server-side tables
    assert "\\u003c/script\\u003e" in text  # and in the embedded JSON
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from the network
    assert re.findall(r"<script src=\"([^\"]+)\"", text) == ["plotly.min.js"]  # the only script file: beside it
    assert (page.parent / "plotly.min.js").read_bytes() == interactive.PLOTLY_JS.read_bytes()
    images = re.findall(r'<img src="([^"]+)"', text)
    assert images and all((page.parent / src).is_file() for src in images)  # the static PNGs, by relative path


def test_the_data_holds_every_cell_once_with_the_decimals_the_page_prints(results, page):
    """Every cell of cell_details is one row of the page's cell table, its numbers within half a unit of the
    decimals they are stored with and printing as Python prints them, its strings coded once."""
    details = _details(results, statistics=True)
    cells = {(c["method"], c["task"], c["layer"], c["dim"], c["precision"]): c for c in leaderboard_cells(
        page.read_text())}
    assert len(cells) == len(details) == len(_data(page)["cells"]["rows"])
    for d in details.itertuples(index=False):
        cell = cells[(d.method, d.task, d.layer, d.dim, d.precision)]
        digits = tables.score_digits(details, d.task)
        for field in ("mean", "std", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high"):
            expected = getattr(d, field)
            assert (cell[field] is None) == np.isnan(expected), field
            if cell[field] is not None:
                assert abs(cell[field] - expected) <= 0.5 * 10 ** -(digits + 2) + 1e-12, field
                assert js_fixed(cell[field], digits) == f"{expected:.{digits}f}", field
        for field in ("p_value", "seed_p_value", "q_value"):
            if cell[field] is not None:
                assert p_shown(cell[field], js_fixed) == p_shown(getattr(d, field)), field
        assert (cell["n"], cell["n_tests"], bool(cell["significant"])) == (d.n, d.n_tests, d.significant)
        assert (cell["reference"] or "", cell["test"] or "", cell["reason"] or "") == (d.reference, d.test, d.reason)
        assert (cell["bytes"], cell["target"]) == (d.bytes_per_vector, d.is_target)
    data = _data(page)  # shared strings: once each in `values`, the tables hold only their indexes and numbers
    assert all(len(set(values)) == len(values) for values in data["values"].values())
    assert not [v for table in ("rows", "cells") for row in data[table]["rows"] for v in row if isinstance(v, str)]


@pytest.mark.parametrize(("x", "places", "digits", "stored"), [
    (41.80234, 3, 1, 41.802),  # the usual case: the CSV export's decimals
    (41.84996, 3, 1, 41.84996),  # 41.850 would print 41.9 in the page where Python prints 41.8
    (0.125, 4, 2, 0.12499999999999999),  # an exact half: Python rounds it to even (0.12), JavaScript away (0.13)
    (0.375, 4, 2, 0.375),  # an exact half that both round up
    (-0.00004, 3, 1, -4e-05),  # -0.0 would print 0.0 in the page, -0.0 in Python
])
def test_page_numbers_print_in_the_page_as_python_prints_them(x, places, digits, stored):
    assert page_number(x, places, lambda value, fixed: fixed(value, digits)) == stored
    assert page_number(0.0009996, 6, p_shown) == 0.0009996  # 0.001 would print "=0.001", not "<0.001"


def test_a_column_per_task_with_its_metric_then_family_averages(results, page):
    columns = {c["key"]: c for c in _data(page)["columns"]}
    assert list(columns) == ["task:stsb", "task:sickr", "task:scifact", "family:sts"]  # one retrieval task: no avg
    assert [columns[k]["metric"] for k in ("task:stsb", "task:sickr", "task:scifact")] == [
        "Spearman x100", "Spearman x100", "nDCG@10"]
    assert columns["family:sts"]["tasks"] == ["stsb", "sickr"]
    cells = {c["task"]: c for c in leaderboard_cells(page.read_text())
             if (c["method"], c["layer"], c["dim"], c["precision"]) == ("full", 2, 64, "fp32")}
    details = _details(results).set_index(["method", "layer", "dim", "precision", "task"])
    raw = [details.loc[("full", 2, 64, "fp32", t), "mean"] for t in ("stsb", "sickr")]
    assert cells["stsb"]["family:sts"] == pytest.approx(sum(raw) / 2, abs=5e-4)  # of the full means, not rounded
    assert (cells["stsb"]["bytes"], cells["stsb"]["cost"], cells["stsb"]["target"]) == (
        256, pytest.approx(2 / 3, abs=1e-4), 1)


def test_cells_show_the_interval_and_p_value_bench_stats_computes(results, page):
    """The page's numbers are cell_statistics' own, on the per-example files (not recomputed, not invented)."""
    table = significance.cell_statistics(load_results(results, examples=True), alpha=ALPHA)
    table = table.set_index(["method", "task", "layer", "dim", "precision"])
    cells = {(c["method"], c["task"], c["layer"], c["dim"], c["precision"]): c
             for c in leaderboard_cells(page.read_text())}
    tested = 0
    for key, expected in table.iterrows():
        cell = cells[key]
        assert (cell["ci_low"], cell["ci_high"]) == (pytest.approx(expected.ci_low, abs=1e-3),
                                                     pytest.approx(expected.ci_high, abs=1e-3))
        if expected.test:
            tested += 1
            assert cell["p_value"] == pytest.approx(expected.p_value, abs=1e-6)
            assert (cell["reference"], cell["test"]) == (expected.reference, expected.test)
        else:
            assert cell["p_value"] is None and cell["q_value"] is None
    assert tested == 2 * len(TASKS) * 3  # full and the hostile method, against separate at its 3 targets
    assert "p: two-sided paired test against separate on the same examples" in page.read_text()


def test_measured_encode_time_is_shown_and_becomes_a_pareto_axis(page):
    cells = leaderboard_cells(page.read_text())
    full = next(c for c in cells if (c["method"], c["task"], c["layer"], c["dim"]) == ("full", "stsb", 3, 8))
    assert full["encode_ms"] == encode_ms(3)
    hostile = next(c for c in cells if c["method"] == HOSTILE)
    assert hostile["encode_ms"] is None  # that run measured nothing
    figures = _data(page)["figures"]
    pareto = figures["pareto"]["minilm"]["stsb"]
    assert pareto["costs"] == ["bytes", "cost", "encode_ms"]  # the page's fields on the x axes
    layout = figures["layouts"][pareto["layout"]]
    titles = [layout[axis]["title"]["text"] for axis in ("xaxis", "xaxis2", "xaxis3")]
    assert titles == [label for _, label in interactive.COST_AXES]


def test_without_measured_times_the_pareto_plot_has_bytes_and_relative_cost_only(tmp_path):
    write_method(tmp_path, "full", tasks=("stsb",), precisions=("fp32",))
    figures = interactive.figures(_details(tmp_path))
    pareto = figures["pareto"]["minilm"]["stsb"]
    layout = figures["layouts"][pareto["layout"]]
    assert pareto["costs"] == ["bytes", "cost"]
    assert "xaxis3" not in layout and layout["xaxis2"]["title"]["text"].startswith("relative encode cost")


def test_heatmap_layout_has_a_panel_per_method_titled_safely_and_layouts_are_sent_once(page):
    figures = _data(page)["figures"]
    heatmap = figures["layouts"][figures["heatmap"]["minilm"]["stsb"]["fp32"]]
    titles = [a["text"] for a in heatmap["annotations"]]
    assert titles == ["full", "separate", html.escape(HOSTILE, quote=False)]  # plotly reads tags: escaped for it
    assert heatmap["coloraxis"]["colorbar"]["title"]["text"] == "Spearman x100"
    shown = [json.dumps(layout, sort_keys=True) for layout in figures["layouts"]]
    n_figures = sum(len(by_task) for by_task in figures["heatmap"]["minilm"].values()) + len(
        figures["pareto"]["minilm"])
    assert len(set(shown)) == len(shown) < n_figures  # figures share the layouts they have in common
