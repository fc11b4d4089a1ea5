"""The CLI end to end on the smoke backbone, and bad input: one clear error line and exit code 2 each."""

from __future__ import annotations

import os

import pytest

from bench.cli import main
from bench.results import load_results

SMOKE = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--precisions", "fp32"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_run_writes_every_cell_then_is_a_no_op(tmp_path, data_dir, capsys):
    args = SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path)]
    assert main(args) == 0
    frame = load_results(tmp_path)
    quality = frame[frame.metric == "spearman"]
    assert sorted(zip(quality.layer, quality.dim)) == [(1, 16), (1, 32), (1, 64), (2, 16), (2, 32), (2, 64)]
    files = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(args) == 0  # rerun of a finished run: nothing recomputed, nothing overwritten
    assert "0 new result file(s), 1 already finished" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == files


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "stbs"], "unknown task 'stbs': did you mean 'stsb'?"),
    (["--methods", "pretrianed"], "unknown method 'pretrianed': did you mean 'pretrained'?"),
    (["--layers", "3"], "layer 3 is outside the backbone (1..2)"),
    (["--dims", "65"], "dim 65 is outside the backbone (1..64)"),
    (["--seeds", "a,b"], "expected a comma list of integers"),
    (["--precisions", "fp12"], "unknown precision 'fp12'"),
    (["--suite", "smok"], "unknown suite 'smok'"),
])
def test_bad_input_is_one_clear_line(extra, message, tmp_path, data_dir, capsys):
    args = SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path)] + extra
    assert main(args) == 2
    assert message in _error_line(capsys)
    assert not list(tmp_path.glob("*.csv.gz"))


def test_run_leaves_the_environment_as_it_found_it(tmp_path, data_dir, monkeypatch):
    """The data dir reaches whoever reads it (a task that is a BEIR folder there, the processes a run starts)
    without $BENCH_DATA_DIR: set by a run, it outlived the command and steered later commands of the process."""
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(name, os.environ.get(name, value))  # main's library settings (setdefault), on purpose
    assert main(SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path / "first")]) == 0
    assert "BENCH_DATA_DIR" not in os.environ
    before = dict(os.environ)  # after the libraries' first import, which sets their own (torch's, OpenMP's)
    assert main(SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path / "second")]) == 0
    assert dict(os.environ) == before


def test_a_beir_folder_of_the_data_dir_is_a_task_of_that_run_only(tmp_path, monkeypatch, capsys):
    from bench.data import use_data_dir
    from bench.tasks import TASKS

    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    (tmp_path / "data" / "my-set" / "qrels").mkdir(parents=True)
    args = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "my-set", "--dry-run",
            "--results-dir", str(tmp_path / "results")]
    assert main([*args, "--data-dir", str(tmp_path / "data")]) == 0
    assert "my-set" in capsys.readouterr().out
    with use_data_dir(tmp_path / "data"):
        assert TASKS.get("my-set").name == "my-set"
    assert main(args) == 2  # the next command, without --data-dir, does not find it
    assert "unknown task 'my-set'" in _error_line(capsys)


def test_missing_data_names_the_file_and_the_fix(tmp_path, capsys):
    assert main(SMOKE + ["--data-dir", str(tmp_path / "empty"), "--results-dir", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "sts-test.csv" in line and "bench data fetch stsb" in line


def test_corrupt_results_file_keeps_the_others(tmp_path, data_dir, capsys):
    assert main(SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path)]) == 0
    good = next(tmp_path.glob("*.csv.gz"))
    (tmp_path / "broken.csv.gz").write_bytes(good.read_bytes()[:300])
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "broken.csv.gz" in _error_line(capsys)
    assert good.exists()  # a finished result is never lost


def test_ls_lists_methods_tasks_suites(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "pretrained" in out and "scifact" in out and "suite smoke" in out


def test_steps_is_the_fine_tuning_budget_and_leaves_smae_pretraining_alone(capsys):
    from bench.runner import make_specs
    from bench.suites import smoke, with_overrides

    (spec,) = make_specs(with_overrides(smoke(), steps=3, tasks=("stsb",)), "starbucks")
    assert spec.budget.steps == 3 and dict(spec.params)["pretrain_steps"] == smoke().method_params["starbucks"][
        "pretrain_steps"]
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--steps does not scale it" in " ".join(capsys.readouterr().out.split())


def test_version_prints_the_package_version(capsys):
    """Oracle: the installed distribution's metadata (pyproject.toml's version), not bench.__version__ itself."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"elastic-bench {version('elastic-bench')}"


def test_every_option_has_help():
    """Every option of every subcommand says what it does (`bench CMD --help` is the reference users read)."""
    import argparse

    from bench.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in parsers(build_parser()) for a in p._actions
               if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert not missing, missing
