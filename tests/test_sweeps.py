"""Sweeps from the command line (`--set`), the plan (`bench run --dry-run`) and `bench status`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from bench import BenchError, runstate
from bench.cli import main
from bench.overrides import parse_sets
from bench.results import load_results, run_path
from bench.runner import make_specs, run_code
from bench.suites import smoke, with_overrides

STSB = ["--suite", "smoke", "--tasks", "stsb", "--precisions", "fp32"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def specs_with(sets: list[str], methods: str = "starbucks-srl"):
    suite = with_overrides(smoke(), tasks=("stsb",), precisions=("fp32",))  # as STSB below
    return make_specs(suite, methods, parse_sets(sets, methods.split(",")))


# ---- --set --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("starbucks-srl.kl_weigth=1", "error: starbucks-srl has no hyperparameter 'kl_weigth': did you mean 'kl_weight'? "
                                  "its fields: targets, weights, kl, kl_weight, kl_temperature, detach_teacher"),
    ("starbuck-srl.kl_weight=1", "error: unknown method 'starbuck-srl': did you mean 'starbucks-srl'?"),
    ("starbucks-srl.kl_weight=abc", "error: --set starbucks-srl.kl_weight=abc: expected a float, got 'abc'"),
    ("2dmse.n_layers_per_step=1.5", "error: --set 2dmse.n_layers_per_step=1.5: expected an int, got '1.5'"),
    ("starbucks-srl.detach_teacher=maybe", "error: --set starbucks-srl.detach_teacher=maybe: expected true or false"),
    ("starbucks-srl.targets=((1,16),(2,))", "error: --set starbucks-srl.targets=((1,16),(2,)): expected a Python "
                                            "literal of type tuple[tuple[int, int], ...] or none"),
    ("starbucks-srl.kl_weight=-1", "error: starbucks-srl kl_weight must be >= 0"),  # the Params' own check
    ("starbucks-srl.kl=cosine", "error: starbucks-srl kl must be one of embedding, scores, none; got 'cosine'"),
    ("mrl.dims=16", "error: --set mrl.dims=16: expected a Python literal of type tuple[int, ...] or none"),
    ("full.lr=1", "error: full has no hyperparameters to set"),
    ("kl_weight=1", "error: --set expects METHOD.FIELD=VALUE, e.g. starbucks-srl.kl_weight=0.3; got 'kl_weight=1'"),
])
def test_a_bad_set_is_one_line_and_exit_2(setting, message, data_dir, tmp_path, capsys):
    args = ["run", *STSB, "--methods", "starbucks-srl,2dmse,mrl,full", "--set", setting, "--data-dir", str(data_dir),
            "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 2
    assert _error_line(capsys).startswith(message)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()  # nothing ran


def test_a_set_for_a_method_not_run_is_refused(capsys, data_dir, tmp_path):
    assert main(["run", *STSB, "--methods", "full", "--set", "mrl.dims=(16,32)", "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path)]) == 2
    assert _error_line(capsys) == ("error: --set names mrl, which this run does not include (methods: full); add it "
                                   "to --methods or drop the --set")


def test_a_comma_list_is_a_sweep_typed_by_the_params_annotations():
    """kl_weight=0.1,0.3,1: three specs with float values (1 and 1.0 are one value: one run_id), 0.3 being the default
    gives the default run; two --set of one method multiply out; tuples are Python literals."""
    (default,) = specs_with([])
    swept = specs_with(["starbucks-srl.kl_weight=0.1,0.3,1"])
    assert [dict(s.params)["kl_weight"] for s in swept] == [0.1, 0.3, 1.0]
    assert all(type(dict(s.params)["kl_weight"]) is float for s in swept)
    assert len({s.run_id for s in swept}) == 3 and swept[1].run_id == default.run_id
    assert specs_with(["starbucks-srl.kl_weight=1.0"])[0].run_id == swept[2].run_id
    grid = specs_with(["starbucks-srl.kl_weight=0.1,1", "starbucks-srl.detach_teacher=true,no"])
    assert [(dict(s.params)["kl_weight"], dict(s.params)["detach_teacher"]) for s in grid] == [
        (0.1, True), (0.1, False), (1.0, True), (1.0, False)]
    (targets,) = specs_with(["starbucks-srl.targets=((1,16),(2,32))", "starbucks-srl.weights=1,2"])
    assert dict(targets.params)["targets"] == ((1, 16), (2, 32)) and dict(targets.params)["weights"] == (1.0, 2.0)
    two = specs_with(["mrl.dims=(16,32),(32,64)", "mrl.weights=none"], "mrl")
    assert [dict(s.params)["dims"] for s in two] == [(16, 32), (32, 64)]


def test_set_values_are_recorded_in_the_params_column(data_dir, tmp_path):
    assert main(["run", *STSB, "--methods", "mrl", "--set", "mrl.dims=16,64", "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--device", "cpu"]) == 0
    frame = load_results(tmp_path / "r")
    (spec,) = specs_with(["mrl.dims=16,64"], "mrl")
    assert set(frame["run_id"]) == {spec.run_id} and spec.run_id != specs_with([], "mrl")[0].run_id
    assert json.loads(frame["params"].iloc[0]) == {"dims": [16, 64], "weights": None}


def test_overrides_reject_a_field_given_twice():
    with pytest.raises(BenchError, match="--set mrl.dims is given twice"):
        parse_sets(["mrl.dims=(16,32)", "mrl.dims=(32,64)"], ["mrl"])


# ---- the plan and status --------------------------------------------------------------------------------------------

def test_dry_run_prints_the_plan_and_runs_nothing(data_dir, tmp_path, capsys):
    results, cache = tmp_path / "r", tmp_path / "c"
    common = ["--data-dir", str(data_dir), "--results-dir", str(results), "--cache-dir", str(cache)]
    assert main(["run", *STSB, "--methods", "pretrained", *common]) == 0
    before = sorted(p.name for p in results.iterdir())
    capsys.readouterr()
    assert main(["run", *STSB, "--methods", "pretrained,starbucks-srl", "--tasks", "stsb,scifact", "--set",
                 "starbucks-srl.kl_weight=0.1,1", "--dry-run", "--launcher", "local", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["job", "state", "run_id", "method", "task", "seed", "params", "detail"]
    plan = [line.split() for line in out[1:7]]
    assert [(r[0], r[1], r[3], r[4]) for r in plan] == [
        ("1", "finished", "pretrained", "stsb"), ("1", "missing", "pretrained", "scifact"),
        ("2", "missing", "starbucks-srl", "stsb"), ("2", "missing", "starbucks-srl", "scifact"),
        ("3", "missing", "starbucks-srl", "stsb"), ("3", "missing", "starbucks-srl", "scifact")]
    assert [r[6] for r in plan[2:]] == ["kl_weight=0.1"] * 2 + ["kl_weight=1.0"] * 2
    assert out[7] == "6 run(s) in 3 job(s): 1 finished, 0 running, 0 failed, 5 missing"
    assert out[8] == "dry run: 5 run(s) in 3 job(s) to run with --launcher local; nothing was run"
    assert sorted(p.name for p in results.iterdir()) == before
    assert not (cache / "checkpoints").exists()


def test_status_shows_finished_running_failed_and_missing_runs(data_dir, tmp_path, monkeypatch, capsys):
    """failed: a run whose data is missing (the sidecar keeps its error line), and a process gone without a word
    (the last line of its log); running: a run being recorded by a live process; missing: an older code's file does
    not count."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(data_dir))  # the commands below without --data-dir read it
    results = tmp_path / "r"
    common = ["--results-dir", str(results), "--cache-dir", str(tmp_path / "c")]
    assert main(["run", *STSB, "--methods", "pretrained", "--data-dir", str(tmp_path / "empty"), *common]) == 2
    data_error = _error_line(capsys).removeprefix("error: ")
    specs = make_specs(with_overrides(smoke(), tasks=("stsb", "scifact"), precisions=("fp32",)), "full,mrl")
    stems = {(s.method, s.task): run_path(results, s, run_code(s)).stem for s in specs}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    log = tmp_path / "job.err"
    log.write_text("loading\nRuntimeError: CUDA out of memory\n")
    (results / ".bench" / "runs" / f"{stems['full', 'scifact']}.json").write_text(json.dumps(
        {"state": "running", "host": socket.gethostname(), "pid": int(dead.stdout), "started_utc": "t", "log": str(log),
         "job_id": "77"}))
    older = run_path(results, specs[2], "0ldc0de0ldc0")
    older.write_text("not read")

    capsys.readouterr()
    with runstate.recording(results, stems["full", "stsb"]):  # this process: alive
        assert main(["status", *STSB[:2], "--methods", "pretrained,full,mrl", "--tasks", "stsb,scifact",
                     "--precisions", "fp32", "--results-dir", str(results)]) == 0
    rows = {tuple(line.split()[3:5]): line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["pretrained", "stsb"].split()[1] == "failed" and rows["pretrained", "stsb"].endswith(data_error)
    assert rows["full", "stsb"].split()[1] == "running" and f"pid {os.getpid()}" in rows["full", "stsb"]
    assert rows["full", "scifact"].split()[1] == "failed"
    assert "ended without finishing" in rows["full", "scifact"] and "CUDA out of memory" in rows["full", "scifact"]
    assert rows["mrl", "stsb"].split()[1] == "missing" and older.name in rows["mrl", "stsb"]
    assert not (results / ".bench" / "runs" / f"{stems['full', 'stsb']}.json").exists()  # cleared once done

    assert main(["run", *STSB, "--methods", "pretrained", "--data-dir", str(data_dir), *common]) == 0
    capsys.readouterr()
    assert main(["status", *STSB, "--methods", "pretrained", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[1] == "finished"
    assert out.splitlines()[-1] == "1 run(s) in 1 job(s): 1 finished, 0 running, 0 failed, 0 missing"
