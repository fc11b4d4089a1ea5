"""Code-aware identities: a checkpoint, an encoding or a result is reused only when the code that made it is the
same. The edit is simulated by changing the hash one source file reads as (bench.fingerprint._file_hash), which is
what an edit to that file does to every key built from it."""

from __future__ import annotations

import inspect

import pytest

import bench.fingerprint as fp
from bench.fingerprint import method_code, module_closure, task_code
from bench.results import load_results
from bench.runner import make_specs, run_all, run_code
from bench.suites import smoke, with_overrides
from bench.tasks import TASKS
from methods import METHODS, RunContext
from methods._jobs import training_key


def test_a_method_depends_on_the_files_it_builds_on_and_on_the_training_code_only():
    starbucks = set(module_closure(["methods.starbucks", *fp.TRAINING_ROOTS], fp.TRAINING_REACH))
    assert {"methods.starbucks", "methods.starbucks_srl", "bench.smae", "bench.train", "bench.losses",
            "bench.hub", "bench.data.corpus", "methods._jobs"} <= starbucks
    assert not {"methods.mrl", "bench.evaluate", "bench.encoder"} & starbucks  # tests/test_fingerprint_keys.py
    assert set(module_closure(["methods.pretrained"], ("methods",))) == {"methods.pretrained", "methods"}
    sts = set(module_closure(["bench.tasks.sts"], ("bench.tasks", "bench.data")))
    assert "bench.data.sts" in sts and "bench.tasks.retrieval" not in sts


REAL_FILE_HASH = fp._file_hash


def edited(monkeypatch, *modules: str) -> None:
    """Make the modules' source files hash as if they had been edited."""
    paths = {inspect.getsourcefile(__import__(m, fromlist=["_"])) for m in modules}
    monkeypatch.setattr(fp, "_file_hash", lambda p: "edited" if p in paths else REAL_FILE_HASH(p))


@pytest.mark.parametrize("module, changes", [
    ("methods.starbucks_srl", {"starbucks-srl", "starbucks", "separate", "mrl", "2dmse", "qat"}),  # import its rules
    ("bench.losses", "every trained method"),  # the training modules are part of every trained method's key
    ("methods._heads", {"pca", "matryoshka-adaptor", "bebr"}),
    ("bench.smae", {"starbucks"}),
    ("methods.full", {"full"}),
])
def test_an_edit_changes_the_training_key_of_exactly_the_methods_that_use_the_file(monkeypatch, module, changes):
    specs = {s.method: s for s in make_specs(with_overrides(smoke(), tasks=("stsb",)), "all")}
    trained = [m for m in specs if METHODS.get(m).trains]
    before = {m: training_key(METHODS.get(m)(), specs[m], ()) for m in trained}
    edited(monkeypatch, module)
    after = {m: training_key(METHODS.get(m)(), specs[m], ()) for m in trained}
    assert {m for m in trained if before[m] != after[m]} == (set(trained) if changes == "every trained method" else
                                                             changes)


def test_an_edit_to_a_task_changes_its_results_code_not_the_others(monkeypatch):
    sts, retrieval = TASKS.get("stsb"), TASKS.get("scifact")
    before = task_code(sts), task_code(retrieval)
    edited(monkeypatch, "bench.data.sts")
    assert task_code(sts) != before[0] and task_code(retrieval) == before[1]
    edited(monkeypatch, "bench.data.sts", "bench.evaluate")
    assert task_code(retrieval) != before[1]


def test_after_an_edit_bench_run_retrains_and_writes_a_new_result(data_dir, tmp_path, monkeypatch):
    """The whole path: a finished run is a no-op with the same code; after an edit to the method's file the same
    spec retrains (a new checkpoint folder), writes a second result file, and loading shows the new one."""
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",)), "full")
    ctx = RunContext(data_dir, tmp_path / "results", tmp_path / "cache", "cpu")
    assert len(run_all(specs, ctx)) == 1 and run_all(specs, ctx) == []  # same code: nothing to do
    old_code = run_code(specs[0])
    edited(monkeypatch, "methods.full")
    assert run_code(specs[0]) != old_code and method_code(METHODS.get("full"), True) != old_code
    assert len(run_all(specs, ctx)) == 1
    assert len(list((tmp_path / "results").glob("*.csv.gz"))) == 2
    assert len(list((tmp_path / "cache" / "checkpoints").iterdir())) == 2  # retrained, not reused
    assert set(load_results(tmp_path / "results")["code"]) == {run_code(specs[0])}
