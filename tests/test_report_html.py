"""The leaderboard page and its interactive figures, read as files (tests/test_browser.py drives them in Chromium)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from bench import stats
from bench.report import build_report, interactive, tables
from bench.report.cell_details import ALPHA, cell_details
from bench.results import load_results

from test_report import encode_ms, write_method, write_separate  # synthetic-results writers (tmp dirs only)

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


def _data(page: Path, block: str):
    """A JSON data block of the page, as the page's script reads it."""
    found = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', page.read_text(), re.S)
    return json.loads(found.group(1))


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


def test_a_column_per_task_with_its_metric_then_family_averages(page):
    columns = {c["key"]: c for c in _data(page, "columns-data")}
    assert list(columns) == ["task:stsb", "task:sickr", "task:scifact", "family:sts"]  # one retrieval task: no avg
    assert [columns[k]["metric"] for k in ("task:stsb", "task:scifact")] == ["Spearman x100", "nDCG@10"]
    assert columns["family:sts"]["tasks"] == ["stsb", "sickr"]
    row = next(r for r in _data(page, "rows-data") if (r["method"], r["layer"], r["dim"]) == ("full", 2, 64))
    stsb, sickr, _, average = row["cells"]
    assert average["mean"] == pytest.approx((stsb["mean"] + sickr["mean"]) / 2, abs=1e-3)
    assert (row["bytes"], row["cost"], row["target"]) == (256, pytest.approx(2 / 3, abs=1e-4), True)


def test_cells_show_the_interval_and_p_value_bench_stats_computes(results, page):
    """The page's numbers are cell_statistics' own, on the per-example files (not recomputed, not invented)."""
    table = stats.cell_statistics(results, alpha=ALPHA).set_index(["method", "task", "layer", "dim", "precision"])
    rows = {(r["method"], r["layer"], r["dim"]): r for r in _data(page, "rows-data")}
    tested = 0
    for (method, task, layer, dim, _), expected in table.iterrows():
        cell = rows[(method, layer, dim)]["cells"][TASKS.index(task)]
        assert (cell["ci_low"], cell["ci_high"]) == (pytest.approx(expected.ci_low, abs=1e-3),
                                                     pytest.approx(expected.ci_high, abs=1e-3))
        if expected.test:
            tested += 1
            assert cell["p_value"] == pytest.approx(expected.p_value, abs=1e-6)
            assert f"vs {expected.reference} ({expected.test})" in cell["title"]
        else:
            assert cell["p_value"] is None and "p=" not in cell["detail"] and "p<" not in cell["detail"]
    assert tested == 2 * len(TASKS) * 3  # full and the hostile method, against separate at its 3 targets
    assert "p: two-sided paired test against separate on the same examples" in page.read_text()


def test_measured_encode_time_is_shown_and_becomes_a_pareto_axis(page):
    rows = _data(page, "rows-data")
    full = next(r for r in rows if (r["method"], r["layer"], r["dim"]) == ("full", 3, 8))
    assert full["cells"][0]["encode_ms"] == encode_ms(3)
    assert "ms per 1k texts (measured, layers 1-3)" in full["cells"][0]["title"]
    hostile = next(r for r in rows if r["method"] == HOSTILE)
    assert hostile["cells"][0]["encode_ms"] is None  # that run measured nothing
    pareto = _data(page, "figures-data")["pareto"]["minilm"]["stsb"]
    titles = [pareto["layout"][axis]["title"]["text"] for axis in ("xaxis", "xaxis2", "xaxis3")]
    assert titles == [label for _, label in interactive.COST_AXES]


def test_without_measured_times_the_pareto_plot_has_bytes_and_relative_cost_only(tmp_path):
    write_method(tmp_path, "full", tasks=("stsb",), precisions=("fp32",))
    details = interactive.figures(_details(tmp_path))
    layout = details["pareto"]["minilm"]["stsb"]["layout"]
    assert "xaxis3" not in layout and layout["xaxis2"]["title"]["text"].startswith("relative encode cost")


def _details(results_dir: Path):
    """What build_report passes the page, without statistics (these results have no per-example files)."""
    frame = load_results(results_dir)
    return cell_details(tables.cell_stats(frame), None, frame)


def test_heatmap_hover_names_score_interval_bytes_and_cost(page):
    heatmap = _data(page, "figures-data")["heatmap"]["minilm"]["stsb"]["fp32"]
    full = heatmap["data"][0]  # methods in the tables' order: full first
    hover = full["text"][full["y"].index("2")][full["x"].index("64")]
    for part in ("full: layer 2, dim 64, fp32", "STS-B ", "95% CI [", "256 bytes per vector",
                 "relative encode cost 0.667", f"{encode_ms(2):.1f} ms per 1k texts", "target cell"):
        assert part in hover
    titles = [a["text"] for a in heatmap["layout"]["annotations"]]
    assert html.escape(HOSTILE, quote=False) in titles  # plotly reads tags in text: the name is escaped for it
    assert {s["line"]["color"] for s in heatmap["layout"]["shapes"]} == {"red"}  # targets marked


def test_pareto_traces_say_which_precision_choice_shows_them(tmp_path):
    write_method(tmp_path, "full", tasks=("stsb",), precisions=("fp32", "int8"))
    pareto = interactive.figures(_details(tmp_path))["pareto"]["minilm"]["stsb"]
    metas = [json.dumps(t["meta"], sort_keys=True) for t in pareto["data"] if t["xaxis"] == "x"]
    assert metas == ['{"precision": "fp32"}', '{"precision": "int8"}', '{"frontier": "all"}',
                     '{"frontier": "fp32"}', '{"frontier": "int8"}']
