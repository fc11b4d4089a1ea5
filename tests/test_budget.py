"""bench.report.budget: the best choice per bytes and encode-cost budget, its statistics, and each precision's
frontier. Winners and frontiers are checked against brute force over a random grid of cells built here (the oracle:
a plain loop over every cell); the statistics against bench.stats run directly on the stored per-example values."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from bench import stats
from bench.report import budget, build_report, significance, tables
from bench.results import load_results, read_examples
from test_report import write_method  # synthetic-results writer (tmp dirs only)

PRECISION_BYTES = {"fp32": 4.0, "int8": 1.0, "binary": 1 / 8}


def random_cells(seed: int = 0, n_methods: int = 3) -> pd.DataFrame:
    """A grid of cells as tables.cell_stats gives them, with random scores: 2 tasks x methods x layers x dims x
    precisions, so any cell can be the best anywhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, family, metric in (("stsb", "sts", "spearman"), ("scifact", "retrieval", "ndcg@10")):
        for method, layer, dim, precision in itertools.product([f"m{i}" for i in range(n_methods)], (1, 2, 3, 4),
                                                               (16, 32, 64, 128), PRECISION_BYTES):
            rows.append(dict(backbone="minilm", method=method, layer=layer, dim=dim, precision=precision, task=task,
                             family=family, display=task, metric=metric, mean=float(rng.uniform(0, 100)), std=np.nan,
                             n=1, is_target=False, bytes_per_vector=int(PRECISION_BYTES[precision] * dim),
                             rel_cost=layer / 4))
    return pd.DataFrame(rows)


def oracle_ranking(cells: pd.DataFrame, column: str, budget_value: float) -> list[tuple[float, tuple]]:
    """Every cell within the budget, best score first, by a plain loop (the independent oracle)."""
    fit = [(row.mean, (row.method, row.layer, row.dim, row.precision)) for row in cells.itertuples()
           if getattr(row, column) <= budget_value + 1e-12]
    return sorted(fit, key=lambda item: -item[0])


@pytest.mark.parametrize("kind", ["bytes", "cost"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_winner_is_the_best_cell_within_the_budget_and_the_runner_up_the_next(kind, seed):
    cells = random_cells(seed)
    column = budget.KINDS[kind][0]
    picked = budget.winners(cells, kind)
    assert len(picked) == 2 * len(budget.byte_budgets(cells) if kind == "bytes" else budget.cost_budgets(cells))
    for row in picked.itertuples():
        ranking = oracle_ranking(cells[cells["task"] == row.task], column, row.budget)
        winner = (row.method, row.layer, row.dim, row.precision)
        runner = (row.runner_method, row.runner_layer, row.runner_dim, row.runner_precision)
        assert (row.mean, winner) == ranking[0]  # random scores: no ties
        assert runner != winner and (row.runner_mean, runner) == ranking[1]
        assert row.n_fit == len(ranking)


def test_a_cell_over_the_budget_never_wins_however_good():
    cells = random_cells()
    star = (cells["method"] == "m0") & (cells["layer"] == 4) & (cells["dim"] == 128) & (cells["precision"] == "fp32")
    cells.loc[star, "mean"] = 1000.0  # the best score of all, at 512 bytes and the full encode cost
    for kind, column in (("bytes", "bytes_per_vector"), ("cost", "rel_cost")):
        picked = budget.winners(cells, kind)
        assert (picked[column] <= picked["budget"] + 1e-12).all()
        assert (picked["runner_" + column] <= picked["budget"] + 1e-12).all()
        star_wins = picked["mean"] == 1000.0
        assert star_wins.any() and (star_wins == (picked["budget"] >= cells.loc[star, column].iloc[0])).all()


def test_a_budget_that_holds_one_cell_has_no_runner_up():
    cells = random_cells()
    cells = cells[~((cells["bytes_per_vector"] == 2) & (cells["method"] != "m0"))]  # one 2-byte cell per task
    cells = cells[~((cells["bytes_per_vector"] == 2) & (cells["layer"] != 1))]
    smallest = budget.winners(cells, "bytes").query("budget == 2")
    assert len(smallest) == 2 and smallest["runner_method"].isna().all() and (smallest["n_fit"] == 1).all()


def test_byte_budgets_are_the_powers_of_two_that_span_the_grid():
    cells = random_cells()  # 2 (binary at 16 dims) .. 512 bytes (fp32 at 128)
    assert budget.byte_budgets(cells) == [2, 4, 8, 16, 32, 64, 128, 256, 512]
    odd = cells.assign(bytes_per_vector=cells["bytes_per_vector"] + 1)  # 3 .. 513: every cell fits the last
    assert budget.byte_budgets(odd) == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert budget.cost_budgets(cells) == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_frontier_never_falls_and_is_the_best_cell_within_the_bytes(seed):
    cells = random_cells(seed)
    front = budget.frontier(cells)
    for (task, precision), line in front.groupby(["task", "precision"]):
        assert line["bytes_per_vector"].is_monotonic_increasing
        assert line["mean"].is_monotonic_increasing  # non-decreasing in bytes
        part = cells[(cells["task"] == task) & (cells["precision"] == precision)]
        for size, score in zip(line["bytes_per_vector"], line["mean"]):
            assert score == oracle_ranking(part, "bytes_per_vector", size)[0][0]
    assert set(front["precision"]) == set(PRECISION_BYTES)


# ---- statistics, on synthetic results with per-example values ----------------------------------------------------

@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("budget-results")
    for method in ("full", "starbucks"):
        write_method(path, method, tasks=("stsb", "scifact"), precisions=("fp32", "int8", "binary"), examples=True,
                     num_layers=3)
    return path


@pytest.fixture(scope="module")
def loaded(results_dir):
    frame = load_results(results_dir, examples=True)
    return frame, tables.cell_stats(frame)


def test_the_winner_gets_the_reports_interval_and_the_runner_up_test_is_bench_stats_on_the_values(loaded):
    """Interval: the same number cell_statistics gives that cell (the report's). Test: stats.paired_test on the
    stored per-example values of winner and runner-up (STS: paired bootstrap of the Spearman difference; retrieval:
    sign-flip)."""
    frame, cells = loaded
    picked = budget.with_statistics(frame, budget.winners(cells, "bytes"), "bytes")
    report = significance.cell_statistics(frame).set_index(["task", "method", "layer", "dim", "precision"])
    assert (picked["test"] != "").all()
    for row in picked.drop_duplicates(["task", "method", "layer", "dim", "precision", "runner_method",
                                       "runner_layer", "runner_dim", "runner_precision"]).itertuples():
        cell = report.loc[(row.task, row.method, row.layer, row.dim, row.precision)]
        assert (row.ci_low, row.ci_high) == (cell["ci_low"], cell["ci_high"])
        a, b, gold = _values(frame, row, ""), _values(frame, row, "runner_"), None
        if row.task == "stsb":
            gold = read_examples(_example_file(frame, row, ""))["gold"].astype(float)
        expected = stats.paired_test(a, b, gold, resampling=_resampling(frame, row, gold))
        assert (row.delta, row.p_value, row.test) == pytest.approx((expected.delta, expected.p_value, expected.test))
    assert (picked["distinguishable"] == (picked["q_value"] < 0.05)).all()
    assert picked["n_tests"].max() == len(picked.drop_duplicates(["task", "method", "layer", "dim", "precision",
                                                                  "runner_method", "runner_layer", "runner_dim",
                                                                  "runner_precision"]))


def _example_file(frame: pd.DataFrame, row, prefix: str) -> str:
    runs = frame[(frame["method"] == getattr(row, prefix + "method")) & (frame["task"] == row.task)]
    return runs["examples"].iloc[0]


def _values(frame: pd.DataFrame, row, prefix: str) -> np.ndarray:
    name = "similarity" if row.task == "stsb" else "ndcg@10"
    key = f"{getattr(row, prefix + 'layer')}/{getattr(row, prefix + 'dim')}/{getattr(row, prefix + 'precision')}/{name}"
    return read_examples(_example_file(frame, row, prefix))[key].astype(float)


def _resampling(frame, row, gold):
    if gold is None:
        return None
    examples = read_examples(_example_file(frame, row, ""))
    return stats.pair_resampling(examples.get("left_sentence"), examples.get("right_sentence"), len(gold))


def test_the_report_writes_the_budget_tables_and_frontier_and_shows_them_first(results_dir, tmp_path):
    written = {p.relative_to(tmp_path).as_posix() for p in build_report(results_dir, tmp_path)}
    assert {"tables/minilm/budget-bytes.md", "tables/minilm/budget-bytes.tex", "tables/minilm/budget-cost.md",
            "tables/minilm/budget-cost.tex", "figures/minilm/frontier.png"} <= written
    page = (tmp_path / "index.html").read_text()
    assert page.index("The best choice per budget") < page.index("<h2>Provenance</h2>")
    assert 'src="figures/minilm/frontier.png"' in page
    markdown = (tmp_path / "tables/minilm/budget-bytes.md").read_text()
    assert "| ≤ 2 B | STS-B |" in markdown and "Distinguishable" in markdown


def test_a_winner_alone_in_its_budget_keeps_its_interval_and_gets_no_test(loaded):
    frame, cells = loaded
    one_byte = cells["bytes_per_vector"] == 1  # binary at 8 dims, of every method and layer: keep one cell
    alone = cells[~one_byte | ((cells["method"] == "starbucks") & (cells["layer"] == 3))]
    picked = budget.with_statistics(frame, budget.winners(alone, "bytes"), "bytes").query("budget == 1")
    assert len(picked) == 2 and picked["runner_method"].isna().all()
    assert picked["ci_low"].notna().all() and (picked["test"] == "").all() and not picked["distinguishable"].any()
    assert set(picked["reason"]) == {"only this cell fits the budget"}
