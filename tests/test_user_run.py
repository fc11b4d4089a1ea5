"""A user's run is their own: `bench run` writes under runs/ (never the committed results/) unless told otherwise,
and ends by comparing its cells with the committed runs of the same spec, within `bench reproduce`'s tolerances."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from bench.cli import COMMITTED_RESULTS, USER_RESULTS, build_parser, main
from bench.results import SUFFIX, read_run_file

SMOKE = ["--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb"]


def test_runs_go_to_the_users_folder_and_reports_read_the_committed_one():
    parser = build_parser()
    assert parser.parse_args(["run"]).results_dir == USER_RESULTS == Path("runs")
    assert parser.parse_args(["status"]).results_dir == USER_RESULTS
    assert parser.parse_args(["report"]).results_dir == COMMITTED_RESULTS == Path("results")
    assert parser.parse_args(["reproduce"]).results_dir == COMMITTED_RESULTS
    assert parser.parse_args(["run"]).compare_with is None  # results/ where it exists


def test_a_comparison_folder_that_does_not_exist_is_one_line_before_anything_runs(tmp_path, capsys):
    assert main(["run", *SMOKE, "--results-dir", str(tmp_path / "r"), "--compare-with", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --compare-with {tmp_path / 'nope'}: no such results folder; "
                                               "pass an existing folder or none")
    assert not (tmp_path / "r").exists()


def _shift_one_score(path: Path, delta: float) -> tuple[int, int, str, str]:
    """Rewrite a committed copy with one fp32 Spearman cell moved by `delta`; returns that cell."""
    frame = read_run_file(path)
    hit = frame.index[(frame["metric"] == "spearman") & (frame["precision"] == "fp32") & (frame["layer"] == 1)
                      & (frame["dim"] == 16)][0]
    frame.loc[hit, "score"] += delta
    frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
    return 1, 16, "fp32", "spearman"


def test_a_run_ends_with_its_comparison_with_the_committed_results(data_dir, tmp_path, capsys):
    mine, committed = tmp_path / "runs", tmp_path / "committed"
    args = [*SMOKE, "--data-dir", str(data_dir), "--results-dir", str(mine), "--compare-with", str(committed)]
    committed.mkdir()
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert f"none of these 1 run(s) is committed there" in out  # an empty committed folder: said, not an error

    (path,) = mine.glob(f"*{SUFFIX}")
    shutil.copy(path, committed / path.name)
    assert main(["run", *args]) == 0  # finished already: the comparison still runs, every cell equal
    out = capsys.readouterr().out
    rows = read_run_file(path)
    quality = rows[(rows["dim"] >= 1) & rows["metric"].isin(["spearman", "pearson"])]  # the cells scored
    cells = quality.groupby(["layer", "dim", "precision"]).ngroups
    assert f"{cells} cell(s) of 1 run(s); {cells} within" in out
    assert "largest |yours - committed| = 0:" in out

    _shift_one_score(committed / path.name, 0.5)  # beyond the fp32 Spearman tolerance (0.02)
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert f"{cells} cell(s) of 1 run(s); {cells - 1} within" in out
    assert "largest |yours - committed| = 0.5: pretrained on stsb, layer 1, dim 16, fp32 spearman" in out


def test_report_at_the_end_and_no_comparison_when_asked(data_dir, tmp_path, capsys):
    mine = tmp_path / "runs"
    assert main(["run", *SMOKE, "--data-dir", str(data_dir), "--results-dir", str(mine), "--compare-with", "none",
                 "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "compared with" not in out
    assert (tmp_path / "report" / "index.html").is_file()
    assert f"report: {tmp_path / 'report' / 'index.html'}" in out
    assert not pd.isna(read_run_file(next(mine.glob(f"*{SUFFIX}")))["score"]).all()
