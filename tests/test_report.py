"""bench.report: tables, figures and the report build, on synthetic results written to tmp dirs (test fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

import bench.results
from bench import BenchError, stats
from bench.catalog import TASK_META, TaskMeta, local_beir_meta
from bench.report import build_report, interactive, plots, significance, tables
from bench.report.cell_details import interval_text, p_text
from bench.results import load_results, make_row, run_fields, write_run
from bench.spec import Budget, RunSpec

ROOT = Path(__file__).resolve().parents[1]
STS_TASKS = ("stsb", "sickr")
LAYERS, DIMS = (1, 2, 3), (8, 16, 64, 128)  # dims sort differently as text and as numbers, on purpose
TARGETS = ((1, 16), (2, 64), (3, 128))
OFFSETS = {"full": 0.0, "separate": 1.0, "starbucks": 2.0}
BYTES = {"fp32": 4.0, "int8": 1.0, "binary": 1 / 8, "binary+rescore": 1 / 8, "binary+rescore-int8": 1 + 1 / 8,
         "binary+rescore-fp32": 4 + 1 / 8}


def fake_score(method: str, task: str, layer: int, dim: int, precision: str, seed: int) -> float:
    """Bigger cells score higher, methods differ by a fixed offset, seeds by a little; retrieval on 0..1."""
    offset = OFFSETS.get(method, 0.5) + 0.5 * seed - (2.0 if precision != "fp32" else 0.0)
    score = 40 + 8 * layer + dim / 8 + offset
    return score if task in STS_TASKS or task.startswith("sts") else score / 150


def write_method(results_dir: Path, method: str, tasks=("stsb", "sickr", "scifact"), seeds=(0,),
                 precisions=("fp32", "int8"), cells=None, targets=TARGETS, params: dict | None = None,
                 num_layers: int | None = None, steps: int = 100, backbone: str = "minilm", examples: bool = False,
                 timed: bool = False) -> None:
    """One result file per (task, seed): every grid cell x precision, plus pearson/mrr, a timing and a loss curve.

    examples: write per-example values too, and store the scores they give (so statistics are real);
    timed: add the measured `encode_ms_per_1k_texts` row of each layer.
    """
    cells = cells or [(layer, dim) for layer in LAYERS for dim in DIMS]
    trained = method != "pretrained"
    for task in tasks:
        main, other = ("spearman", "pearson") if task in STS_TASKS or task.startswith("sts") else ("ndcg@10", "mrr@10")
        for seed in seeds:
            spec = RunSpec(method=method, task=task, seed=seed, params=tuple(sorted((params or {}).items())),
                           train_data="nli" if trained else "none", budget=Budget(steps=steps if trained else 0),
                           backbone=backbone)
            meta = TASK_META.get(task) or _unknown_task_meta(task)
            shared = run_fields(spec, "test", meta)
            rows = [make_row(shared, metric="encode_seconds", score=1.5)]
            rows += [make_row(shared, metric="loss", score=9.0, split="train", step=s) for s in (1, 2)]
            if timed:
                rows += [make_row(shared, metric="encode_ms_per_1k_texts", score=encode_ms(layer), layer=layer)
                         for layer in sorted({layer for layer, _ in cells})]
            per_example = FakeExamples(task, main) if examples else None
            for layer, dim in cells:
                for precision in precisions:
                    score = fake_score(method, task, layer, dim, precision, seed)
                    if per_example is not None:
                        score = per_example.add(score, (method, layer, dim, precision, seed))
                    metrics = [(main, score), (other, score - 1)]
                    if num_layers:  # the cost row the evaluator writes per cell
                        metrics.append(("relative_encode_cost", layer / num_layers))
                    for metric, value in metrics:
                        rows.append(make_row(shared, metric=metric, score=value, layer=layer, dim=dim,
                                             precision=precision, bytes_per_vector=int(BYTES[precision] * dim),
                                             is_target=(layer, dim) in targets))
            write_run(results_dir, spec, "test", rows, per_example.values if per_example is not None else None)


def _unknown_task_meta(task: str) -> TaskMeta:
    """A task the catalog does not know: an STS task when named like one, else a user's BEIR folder."""
    return TaskMeta(task, task, "sts", "spearman") if task.startswith("sts") else local_beir_meta(task)


def encode_ms(layer: int) -> float:
    """The fake measured encode time of `layer` layers per 1,000 texts."""
    return 10.0 + 7.5 * layer


class FakeExamples:
    """Per-example values of one run, made so that a better fake score gives better examples: STS similarities
    with less noise around one gold vector per task, retrieval per-query scores around the fake score."""

    N = 40

    def __init__(self, task: str, metric: str):
        self.metric, self.sts = metric, metric == "spearman"
        self.values: dict[str, np.ndarray] = {}
        if self.sts:
            self.gold = np.random.default_rng(zlib.crc32(task.encode())).uniform(0, 5, self.N).astype(np.float32)
            self.values["gold"] = self.gold

    def add(self, score: float, cell: tuple) -> float:
        """Store the cell's values; return the score they give (as the evaluator would have stored it)."""
        _, layer, dim, precision, _ = cell
        rng = np.random.default_rng(zlib.crc32(repr(cell).encode()))
        if self.sts:
            values = (self.gold + rng.normal(0, 60 / score, self.N)).astype(np.float32)
            key, stored = "similarity", 100 * sps.spearmanr(values, self.gold).statistic
        else:
            values = np.clip(score + rng.normal(0, 0.15, self.N), 0, 1).astype(np.float32)
            key, stored = self.metric, float(values.mean())
        self.values[f"{layer}/{dim}/{precision}/{key}"] = values
        return float(stored)


def write_separate(results_dir: Path, tasks=("stsb", "sickr", "scifact"), **options) -> None:
    """`separate`: one checkpoint per target, each with rows only at its own cell (options: of write_method)."""
    for layer, dim in TARGETS:
        write_method(results_dir, "separate", tasks=tasks, precisions=("fp32",), cells=[(layer, dim)],
                     targets=[(layer, dim)], params={"layer": layer, "dim": dim}, **options)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("results")
    write_method(path, "full", seeds=(0, 1))
    write_method(path, "starbucks", seeds=(0, 1))
    write_separate(path)
    return path


@pytest.fixture(scope="module")
def report_results_dir(tmp_path_factory) -> Path:
    """Like results_dir with one STS task fewer (figures dominate the test time), with per-example files and
    measured encode times: intervals, p-values and the Pareto plots' time axis are in the report."""
    path = tmp_path_factory.mktemp("report-results")
    for method in ("full", "starbucks"):
        write_method(path, method, tasks=("stsb", "scifact"), seeds=(0, 1), examples=True, timed=True)
    write_separate(path, tasks=("stsb", "scifact"), examples=True, timed=True)
    return path


@pytest.fixture(scope="module")
def report_files(report_results_dir, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("report")
    return {str(p.relative_to(out)): p.read_bytes() for p in build_report(report_results_dir, out)}


def test_cells_keep_only_test_main_metrics_and_average_seeds(results_dir):
    cells = tables.cell_stats(load_results(results_dir))
    assert set(cells["metric"]) == {"spearman", "ndcg@10"}
    assert (cells["layer"] >= 1).all() and (cells["dim"] >= 1).all()
    cell = cells.set_index(tables.CELL_KEY).loc[("minilm", "full", 2, 64, "fp32", "stsb")]
    seeds = [fake_score("full", "stsb", 2, 64, "fp32", s) for s in (0, 1)]
    assert cell["mean"] == pytest.approx(sum(seeds) / 2)
    assert cell["std"] == pytest.approx(pd.Series(seeds).std())
    assert cell["n"] == 2 and cell["is_target"]
    assert cell["rel_cost"] == pytest.approx(2 / 3)
    avg = cells.set_index(tables.CELL_KEY).loc[("minilm", "full", 2, 64, "fp32", tables.STS_AVG), "mean"]
    assert avg == pytest.approx(sum(fake_score("full", t, 2, 64, "fp32", s) for t in STS_TASKS for s in (0, 1)) / 4)


def test_relative_encode_cost_prefers_the_stored_cost_row(tmp_path):
    write_method(tmp_path, "full", tasks=("stsb",), precisions=("fp32",), num_layers=6)
    write_method(tmp_path, "mrl", tasks=("stsb",), precisions=("fp32",))  # no cost rows: layer / deepest layer
    cost = tables.cell_stats(load_results(tmp_path)).set_index(["method", "layer", "dim"])["rel_cost"]
    assert cost[("full", 2, 64)] == pytest.approx(2 / 6) and cost[("mrl", 2, 64)] == pytest.approx(2 / 3)


def test_family_comes_from_the_task_record_not_the_task_name(tmp_path):
    write_method(tmp_path, "full", tasks=("mystery",), seeds=(0,))  # a BEIR folder's record: scored with ndcg@10
    cells = tables.cell_stats(load_results(tmp_path))
    assert set(cells["family"]) == {"retrieval"}


def test_paper_table_rows_columns_bold_and_annotations(results_dir):
    cells = tables.cell_stats(load_results(results_dir))
    table = tables.paper_table(cells, "fp32", caption="cap", annotations={("starbucks", 2, 64, "stsb"): "*"})
    assert table.columns == ("STS-B", "SICK-R", "STS Avg", "SciFact")
    assert [(r.size, r.method) for r in table.rows] == [(s, m) for s in TARGETS for m in ("full", "separate", "starbucks")]
    row = next(r for r in table.rows if r.method == "starbucks" and r.size == (2, 64))
    assert row.cells[0].endswith("*") and " ± " in row.cells[0]  # two seeds: mean ± std
    sep = next(r for r in table.rows if r.method == "separate" and r.size == (2, 64))
    assert " ± " not in sep.cells[0]  # one seed: no std
    for size in TARGETS:  # exactly the best of each column is bold within each size
        group = [r for r in table.rows if r.size == size]
        for j in range(len(table.columns)):
            best = max(group, key=lambda r: float(r.cells[j].split()[0].rstrip("*")))
            assert [r.bold[j] for r in group] == [r is best for r in group]
    md, tex = tables.to_markdown(table), tables.to_latex(table)
    assert "| (2, 64) | starbucks |" in md and "**" in md
    assert r"\textbf{" in tex and r"$\pm$" in tex and "(2, 64) & full" in tex


def test_caption_states_budget_data_and_seeds(results_dir, tmp_path):
    text = tables.caption(tables.provenance(load_results(results_dir)), "fp32")
    assert "steps=100" in text and "Training data: nli" in text and "seeds 0, 1" in text and "fp32" in text
    write_method(tmp_path, "full", tasks=("stsb",), precisions=("fp32",), steps=100)
    write_method(tmp_path, "mrl", tasks=("stsb",), precisions=("fp32",), steps=50)
    assert "NOT THE SAME" in tables.caption(tables.provenance(load_results(tmp_path)), "fp32")


def test_table_rows_are_the_diagonal_when_a_diagonal_method_is_present(tmp_path):
    every_cell = [(layer, dim) for layer in LAYERS for dim in DIMS]
    write_method(tmp_path, "2dmse", tasks=("stsb",), precisions=("fp32",), targets=every_cell)
    assert len(tables.target_sizes(tables.cell_stats(load_results(tmp_path)))) == len(every_cell)
    write_separate(tmp_path, tasks=("stsb",))
    table = tables.paper_table(tables.cell_stats(load_results(tmp_path)), "fp32")
    assert sorted({r.size for r in table.rows}) == sorted(TARGETS)
    assert [r.method for r in table.rows if r.size == (2, 64)] == ["separate", "2dmse"]


def test_without_targets_the_table_shows_the_full_size_cell(tmp_path):
    write_method(tmp_path, "pretrained", tasks=("stsb",), precisions=("int8",), targets=())
    cells = tables.cell_stats(load_results(tmp_path))
    table = tables.paper_table(cells, "int8")
    assert [(r.size, r.method) for r in table.rows] == [((3, 128), "pretrained")]
    assert table.columns == ("STS-B",)


def test_names_from_results_are_escaped_in_markdown_and_latex(tmp_path):
    write_method(tmp_path, "a|b_c$&", tasks=("stsb",), precisions=("fp32",))
    table = tables.paper_table(tables.cell_stats(load_results(tmp_path)), "fp32")
    assert r"a\|b\_c$&" in tables.to_markdown(table)
    assert r"a|b\_c\$\&" in tables.to_latex(table)


def test_two_configs_of_one_method_are_not_averaged_as_seeds(tmp_path):
    write_method(tmp_path, "mrl", tasks=("stsb",), precisions=("fp32",), params={"w": 1})
    write_method(tmp_path, "mrl", tasks=("stsb",), precisions=("fp32",), params={"w": 2})
    methods = set(tables.cell_stats(load_results(tmp_path))["method"])
    assert len(methods) == 2 and all(m.startswith("mrl@") for m in methods)


def test_each_backbone_gets_its_own_tables_and_figures(tmp_path):
    """A smoke run on a tiny model beside a real one: never one table, one colour scale or one paired test."""
    results, out = tmp_path / "results", tmp_path / "report"
    write_method(results, "full", tasks=("stsb",), precisions=("fp32",))
    write_method(results, "full", tasks=("stsb",), precisions=("fp32",), backbone="tiny-random-bert", steps=8)
    cells = tables.cell_stats(load_results(results))
    assert set(cells["method"]) == {"full"} and cells.groupby("backbone").size().to_dict() == {
        "minilm": len(LAYERS) * len(DIMS), "tiny-random-bert": len(LAYERS) * len(DIMS)}
    with pytest.raises(BenchError, match="mix backbones"):
        tables.paper_table(cells, "fp32")
    with pytest.raises(BenchError, match="mix backbones"):
        plots.heatmap_figure(cells, "stsb", "fp32")
    names = {str(p.relative_to(out)) for p in build_report(results, out)}
    for backbone in ("minilm", "tiny-random-bert"):
        assert {f"tables/{backbone}/paper_fp32.md", f"figures/{backbone}/heatmap_stsb_fp32.png"} <= names
    tiny = (out / "tables" / "tiny-random-bert" / "paper_fp32.md").read_text()
    assert "Backbone: tiny-random-bert." in tiny and "steps=8" in tiny and "steps=100" not in tiny


MTEB_META = TaskMeta("mteb:tasks.py:Pairs", "PairsLocal", "PairClassification", "max_ap",
                     precisions=("fp32", "int8", "binary"), mteb_version="2.0.0",
                     no_intervals="mteb reports aggregate scores only")


def write_mteb(results_dir: Path, method: str) -> None:
    """An mteb task's run as bench/tasks/mteb.py writes it: mteb's numbers on 0..1, no per-example file."""
    spec = RunSpec(method=method, task=MTEB_META.name, train_data="nli", budget=Budget(steps=100))
    shared = run_fields(spec, "test", MTEB_META)
    rows = [make_row(shared, metric=metric, score=fake_score(method, "pairs", layer, dim, "fp32", 0) - shift,
                     layer=layer, dim=dim, bytes_per_vector=4 * dim, is_target=(layer, dim) in TARGETS)
            for layer in LAYERS for dim in DIMS for metric, shift in (("max_ap", 0.0), ("cosine_f1", 0.1))]
    write_run(results_dir, spec, "test", rows)


def test_mteb_tasks_get_a_table_of_their_own_named_by_mteb_without_intervals(tmp_path):
    """mteb rows beside our own (which have per-example values): the paper table keeps our tasks and their paired
    tests; the mteb type gets its own table, columns named by mteb's metadata, 3 decimals on mteb's 0..1 scale,
    the caption saying why there are no intervals; statistics skip the mteb task rather than fail for want of its
    per-example file; the heatmap is titled with mteb's name."""
    results, out = tmp_path / "results", tmp_path / "report"
    for method in ("full", "starbucks"):
        write_method(results, method, tasks=("stsb",), precisions=("fp32",), examples=True)
        write_mteb(results, method)
    assert set(significance.cell_statistics(load_results(results, examples=True))["task"]) == {"stsb"}
    cells = tables.cell_stats(load_results(results))
    assert tables.task_order(cells) == ["stsb", MTEB_META.name]
    assert tables.task_name(MTEB_META.name, cells) == "PairsLocal"
    names = {str(p.relative_to(out)) for p in build_report(results, out)}
    slug = plots.slugify(MTEB_META.name)
    assert {"tables/minilm/mteb-PairClassification_fp32.md", f"figures/minilm/heatmap_{slug}_fp32.png"} <= names
    mteb_table = (out / "tables" / "minilm" / "mteb-PairClassification_fp32.md").read_text()
    assert "| PairsLocal |" in mteb_table and "mteb reports aggregate scores only" in mteb_table
    assert "PairsLocal: max\\_ap" in mteb_table and "mteb 2.0.0" in mteb_table and "STS-B" not in mteb_table
    assert "| (2, 64) | full | 0.427 |" in mteb_table  # (40 + 16 + 8) / 150: 3 decimals
    paper = (out / "tables" / "minilm" / "paper_fp32.md").read_text()
    assert "PairsLocal" not in paper and "differs from full" in paper


def test_pareto_frontier_keeps_only_undominated_points():
    points = pd.DataFrame({"cost": [1, 2, 2, 3, 4], "mean": [5.0, 4.0, 7.0, 6.0, 9.0]})
    front = plots.pareto_frontier(points, "cost")
    assert list(zip(front["cost"], front["mean"])) == [(1, 5.0), (2, 7.0), (4, 9.0)]


def test_report_writes_tables_figures_and_html(report_files):
    names = set(report_files)
    assert {"tables/minilm/paper_fp32.md", "tables/minilm/paper_fp32.tex", "tables/minilm/paper_int8.md",
            "index.html"} <= names
    for task in ("stsb", "scifact"):
        assert {f"figures/minilm/heatmap_{task}_fp32.png", f"figures/minilm/diff_{task}_fp32.png",
                f"figures/minilm/cost_{task}.png"} <= names
    png = report_files["figures/minilm/heatmap_stsb_fp32.png"]
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png
    assert report_files["plotly.min.js"] == interactive.PLOTLY_JS.read_bytes()  # the page's figures, offline
    cells = leaderboard_cells(report_files["index.html"].decode())
    for field in ("ci_low", "p_value", "q_value", "encode_ms"):  # statistics and timings reached the page
        assert any(c[field] is not None for c in cells), field


def test_report_is_byte_identical_across_processes_and_never_imports_torch(report_results_dir, report_files,
                                                                            tmp_path):
    """A second build in a fresh interpreter (another hash seed) gives the same bytes, figures included."""
    code = ("import sys; from pathlib import Path; import bench.results, bench.spec, bench.report; "
            f"bench.report.build_report(Path({str(report_results_dir)!r}), Path({str(tmp_path)!r})); "
            "assert 'torch' not in sys.modules, 'bench.report imported torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    again = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert set(again) == set(report_files)
    assert [n for n in sorted(again) if again[n] != report_files[n]] == []


def _marked_cells(markdown: str) -> set[tuple[str, int, int, str]]:
    """(method, layer, dim, task) of every starred cell of a Markdown paper table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    names = {meta.display: task for task, meta in TASK_META.items()}
    columns = [names.get(c.strip()) for c in lines[0].strip("|").split("|")[2:]]
    marked = set()
    for line in lines[1:]:
        size, method, *cells = [c.strip() for c in line.strip("|").split("|")]
        layer, dim = map(int, size.strip("()").split(","))
        plain = [c[2:-2] if c.startswith("**") and c.endswith("**") else c for c in cells]  # bold: the best
        marked |= {(method, layer, dim, task) for task, c in zip(columns, plain) if c.endswith("\\*")}
    return marked


def write_queries(results_dir: Path, method: str, cells: dict, targets=TARGETS, backbone: str = "minilm") -> None:
    """One SciFact run with the given per-query nDCG@10 of each (layer, dim) cell (fp32), its score their mean."""
    spec = RunSpec(method=method, task="scifact", train_data="nli", budget=Budget(steps=100), backbone=backbone)
    shared = run_fields(spec, "test", TASK_META["scifact"])
    rows = [make_row(shared, metric="ndcg@10", score=float(np.mean(v.astype(np.float32))), layer=layer, dim=dim,
                     bytes_per_vector=4 * dim, is_target=(layer, dim) in targets) for (layer, dim), v in cells.items()]
    write_run(results_dir, spec, "test", rows, {f"{layer}/{dim}/fp32/ndcg@10": v for (layer, dim), v in cells.items()})


@pytest.fixture(scope="module")
def fdr_report(tmp_path_factory) -> tuple[Path, Path]:
    """Six tests in the table (starbucks and mrl against full at the three targets), of which one is a huge
    difference (p = 1/10001), one a moderate one (p = 0.026: significant alone, not after the correction) and four
    none (p = 1); off the table, mrl at (1, 64) is a huge difference in a family of its own."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 0.6, 40)
    moderate = base + 0.1 + rng.normal(0, 0.25, 40)
    none = base + np.resize([0.01, -0.01], 40)  # mean difference exactly 0
    results = tmp_path_factory.mktemp("fdr-results")
    write_queries(results, "full", {(1, 16): base, (2, 64): base, (3, 128): base, (1, 64): base})
    write_queries(results, "starbucks", {(1, 16): base + 0.3, (2, 64): moderate, (3, 128): none})
    write_queries(results, "mrl", {(1, 16): none, (2, 64): none, (3, 128): none, (1, 64): base + 0.3})
    out = tmp_path_factory.mktemp("fdr-report")
    build_report(results, out)
    return results, out


def test_table_marks_are_benjamini_hochberg_over_the_tables_own_tests(fdr_report):
    """Oracle: scipy.stats.false_discovery_control over the p-values of exactly the tests the table shows (its
    sizes x methods x tasks at one precision); the caption says how many; the leaderboard shows the same q-values
    and stars, and a cell off the table gets its q from the rest of the grid, not from the table's family."""
    results, out = fdr_report
    raw = significance.cell_statistics(load_results(results, examples=True)).set_index(["method", "layer", "dim"])
    assert raw.loc[("starbucks", 2, 64), "p_value"] == pytest.approx(0.0263, abs=1e-4)  # the fixture's design
    table_cells = [(m, size) for m in ("starbucks", "mrl") for size in TARGETS]
    p = np.array([raw.loc[(m, *size), "p_value"] for m, size in table_cells])
    q = dict(zip(table_cells, sps.false_discovery_control(p, method="bh")))
    markdown = (out / "tables" / "minilm" / "paper_fp32.md").read_text()
    assert _marked_cells(markdown) == {("starbucks", 1, 16, "scifact")}  # uncorrected, (2, 64) would be marked too
    assert q[("starbucks", (2, 64))] > 0.05 > raw.loc[("starbucks", 2, 64), "p_value"]
    assert tables.md_escape("Benjamini-Hochberg q < 0.05 over the 6 tests of this table") in markdown
    cells = {(c["method"], c["layer"], c["dim"]): c for c in leaderboard_cells((out / "index.html").read_text())}
    for (method, size), expected in q.items():
        cell = cells[(method, *size)]
        assert cell["q_value"] == pytest.approx(expected, abs=1e-6) and cell["significant"] == (expected < 0.05)
    assert p_text(_as_cell(cells[("starbucks", 2, 64)])) == "p=0.026 q=0.079"  # what the page's cell says below it
    off_table = cells[("mrl", 1, 64)]
    assert off_table["q_value"] == pytest.approx(off_table["p_value"]) and off_table["significant"]
    assert off_table["n_tests"] == 1


def test_the_reference_backbone_gets_no_marks_and_no_bold_best(tmp_path):
    """The CI reference of `bench reproduce` (and any smoke run) on the seeded random BERT is no quality comparison:
    beside the same runs on a real backbone, whose table marks and bolds them, its table has neither, its caption
    says why, and the statistics every view draws its marks from (tables, leaderboard cells, hovers, notes) hold its
    intervals but no test of it."""
    from bench.report import _statistics
    from bench.suites import smoke

    assert smoke().backbone in tables.REFERENCE_BACKBONES  # the reference's backbone (bench.reproduce)
    base = np.random.default_rng(1).uniform(0, 0.6, 40)
    results, out = tmp_path / "results", tmp_path / "report"
    for backbone in ("minilm", smoke().backbone):
        write_queries(results, "full", {(1, 16): base}, backbone=backbone)
        write_queries(results, "starbucks", {(1, 16): base + 0.3}, backbone=backbone)
    build_report(results, out)
    real, tiny = ((out / "tables" / b / "paper_fp32.md").read_text() for b in ("minilm", smoke().backbone))
    rows = {name: text.split("\n\n", 1)[1] for name, text in (("real", real), ("tiny", tiny))}  # below the caption
    assert _marked_cells(real) == {("starbucks", 1, 16, "scifact")} and "**" in rows["real"]
    assert _marked_cells(tiny) == set() and "**" not in rows["tiny"]
    assert "best per size in bold" in real and "best per size in bold" not in tiny
    assert tables.md_escape(tables.REFERENCE_NOTE) in tiny and "differs from" not in tiny
    sizes = {b: [(1, 16)] for b in ("minilm", smoke().backbone)}
    sig = _statistics(load_results(results, examples=True), sizes).set_index(["backbone", "method"])
    assert sig.loc[("minilm", "starbucks"), "significant"] and sig.loc[("minilm", "starbucks"), "test"] != ""
    tiny_sig = sig.loc[smoke().backbone]
    assert tiny_sig["q_value"].isna().all() and not tiny_sig["significant"].any() and (tiny_sig["test"] == "").all()
    assert tiny_sig["ci_low"].notna().all()  # intervals stay


def leaderboard_cells(page: str) -> list[dict]:
    """The page's cells as its script decodes them (bench.report.html.page_data): each a task's numbers and
    strings with its leaderboard row's fields (method, layer, dim, bytes, ...)."""
    import re

    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)[1])

    def decode(table: dict) -> list[dict]:
        return [{c: data["values"][c][v] if c in data["values"] and v is not None else v
                 for c, v in zip(table["columns"], values)} for values in table["rows"]]
    rows = decode(data["rows"])
    return [{**rows[cell["row"]], **cell} for cell in decode(data["cells"])]


def _as_cell(cell: dict):
    """A decoded page cell as cell_details' formatters read a details row (NaN where the page has null)."""
    from types import SimpleNamespace

    return SimpleNamespace(**{k: np.nan if v is None else v for k, v in cell.items()},
                           bytes_per_vector=cell["bytes"], rel_cost=cell["cost"], is_target=cell["target"])


def test_cells_with_two_seeds_show_the_seed_aware_interval(report_results_dir, report_files):
    raw = significance.cell_statistics(load_results(report_results_dir, examples=True))
    raw = raw.set_index(["method", "task", "layer", "dim", "precision"])
    assert (raw["seed_test"] == stats.TWO_LEVEL).any()  # full has 2 seeds: its marks come from the seed-aware test
    cells = {(c["method"], c["task"], c["layer"], c["dim"], c["precision"]): c
             for c in leaderboard_cells(report_files["index.html"].decode())}
    two = raw.loc[("full", "stsb", 2, 64, "fp32")]  # 2 seeds
    one = raw.loc[("separate", "stsb", 2, 64, "fp32")]  # 1 seed
    full, separate = cells[("full", "stsb", 2, 64, "fp32")], cells[("separate", "stsb", 2, 64, "fp32")]
    assert (full["seed_ci_low"], full["ci_low"]) == (pytest.approx(two.seed_ci_low, abs=1e-3),
                                                     pytest.approx(two.ci_low, abs=1e-3))
    assert full["n"] == 2 and full["seed_test"] == stats.TWO_LEVEL  # the page words it (tests/test_browser.py)
    # the interval under the score: the two-level one where there are seeds, else the one over examples
    assert interval_text(_as_cell(full), 1) == f"[{two.seed_ci_low:.1f}, {two.seed_ci_high:.1f}]"
    assert interval_text(_as_cell(separate), 1) == f"[{one.ci_low:.1f}, {one.ci_high:.1f}]"
    assert separate["seed_ci_low"] is None


def test_the_caption_says_why_a_table_has_no_marks(tmp_path):
    """Not one catch-all: a missing per-example file is named; no reference method is said as such."""
    missing, no_reference = tmp_path / "missing", tmp_path / "no-reference"
    write_method(missing, "full", tasks=("stsb",), precisions=("fp32",), examples=True)
    write_separate(missing, tasks=("stsb",), examples=True)
    (npz,) = missing.glob("full__*.examples.npz")
    npz.unlink()
    build_report(missing, tmp_path / "out1")
    caption = (tmp_path / "out1" / "tables" / "minilm" / "paper_fp32.md").read_text().splitlines()[0]
    assert f"No significance marks: 3 cells: per-example file {tables.md_escape(npz.name)} missing" in caption
    write_method(no_reference, "mrl", tasks=("stsb",), precisions=("fp32",), examples=True)
    write_method(no_reference, "2dmse", tasks=("stsb",), precisions=("fp32",), examples=True, params={"w": 1})
    build_report(no_reference, tmp_path / "out2")
    caption = (tmp_path / "out2" / "tables" / "minilm" / "paper_fp32.md").read_text().splitlines()[0]
    assert "No significance marks: 6 cells: these runs have no reference method (one of separate, full, " in caption


@pytest.mark.parametrize("case", ["empty", "one-method-one-task", "int8-only", "retrieval-only", "separate-only"])
def test_partial_results_give_a_report_of_what_exists(case, tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    results.mkdir()
    if case == "one-method-one-task":
        write_method(results, "full", tasks=("stsb",), precisions=("fp32",), targets=())
    elif case == "int8-only":
        write_method(results, "mrl", tasks=("stsb",), precisions=("int8",))
    elif case == "retrieval-only":
        write_method(results, "2dmse", tasks=("scifact",), precisions=("binary", "binary+rescore"))
    elif case == "separate-only":
        write_separate(results, tasks=("stsb",))
    written = build_report(results, out)
    assert out / "index.html" in written and all(p.is_file() for p in written)
    page = (out / "index.html").read_text()
    if case == "empty":
        assert written == [out / "index.html"] and "No quality results" in page
    else:
        assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".md" for p in written)


def test_missing_results_dir_is_a_bench_error(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "out")


def test_the_report_reads_each_results_file_once_and_statistics_each_example_file_once(tmp_path, monkeypatch):
    """build_report loads the results once and hands that frame to the tables, the statistics and the cards (the
    statistics used to read every results file again); cell_statistics opens each per-example file once, however
    many cells and seeds it holds. Counted by wrapping the two readers."""
    results = tmp_path / "results"
    for method in ("full", "starbucks"):
        write_method(results, method, tasks=("stsb", "scifact"), seeds=(0, 1), precisions=("fp32",), examples=True)
    run_reads, example_reads = Counter(), Counter()

    def counting(reader, counter):
        def read(path):
            counter[Path(path).name] += 1
            return reader(path)
        return read
    monkeypatch.setattr(bench.results, "read_run_file", counting(bench.results.read_run_file, run_reads))
    monkeypatch.setattr(significance, "read_examples", counting(significance.read_examples, example_reads))
    build_report(results, tmp_path / "out")
    assert len(run_reads) == 8 and set(run_reads.values()) == {1}  # 2 methods x 2 tasks x 2 seeds
    example_reads.clear()
    stats_frame = significance.cell_statistics(load_results(results, examples=True), n_boot=20, n_perm=20)
    assert (stats_frame["test"] != "").any()
    assert len(example_reads) == 8 and set(example_reads.values()) == {1}


def test_analysis_notebook_runs_headless_on_results(tmp_path):
    """Executes reports_src/analysis.ipynb in a kernel started from this interpreter (the venv's python)."""
    results_dir = tmp_path / "results"  # small on purpose: this checks the notebook runs, not the figures
    write_method(results_dir, "full", tasks=("stsb", "scifact"), precisions=("fp32",))
    write_separate(results_dir, tasks=("stsb",))
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    # a throwaway kernelspec naming this interpreter: no user- or system-wide "python3" kernel can win
    spec_dir = tmp_path / "kernels" / "elastic-bench-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "elastic-bench (test)", "language": "python"}))
    km = KernelManager(kernel_name="elastic-bench-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))

    nb = nbformat.read(ROOT / "reports_src" / "analysis.ipynb", as_version=4)
    # papermill-style: a cell after the one tagged "parameters" points the notebook at the fixture results
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(f"results_dir = Path({str(results_dir)!r})"))
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable); assert 'torch' not in sys.modules"))
    NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(ROOT / "reports_src")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert outputs[-1]["text"].strip() == sys.executable
