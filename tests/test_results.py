"""Result files: schema, exact float round-trip, atomic never-overwrite writes, and clear errors on bad files."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from bench import BenchError
from bench.results import COLUMNS, load_results, make_row, read_run_file, run_fields, run_path, write_run
from bench.spec import RunSpec

CODE = "c0de"


def _rows(spec: RunSpec, code: str = CODE, created: str | None = None) -> list[dict]:
    shared = run_fields(spec, code)
    if created:
        shared["created_utc"] = created
    return [make_row(shared, metric="spearman", score=1 / 3, layer=layer, dim=16, n_examples=5) for layer in (1, 2)]


def test_write_and_load_round_trips_scores_exactly(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, CODE, _rows(spec))
    frame = load_results(tmp_path)
    assert list(frame.columns) == COLUMNS
    assert path == run_path(tmp_path, spec, CODE)
    assert (frame.score == 1 / 3).all()  # unrounded
    assert set(frame.run_id) == {spec.run_id}
    assert not list(tmp_path.glob(".tmp-*"))  # no temp file left behind


def test_existing_run_is_never_overwritten(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    write_run(tmp_path, spec, CODE, _rows(spec))
    with pytest.raises(BenchError, match="never overwritten"):
        write_run(tmp_path, spec, CODE, _rows(spec))


def test_run_id_is_a_hash_of_the_spec():
    a = RunSpec(method="pretrained", task="stsb")
    assert a.run_id == RunSpec(method="pretrained", task="stsb").run_id
    assert a.run_id != RunSpec(method="pretrained", task="sickr").run_id
    assert a.model_key == RunSpec(method="pretrained", task="sickr").model_key  # same model, other task


def test_corrupt_file_gives_one_clear_line(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, CODE, _rows(spec))
    text = gzip.decompress(path.read_bytes()).decode().splitlines()
    path.write_bytes(gzip.compress(("\n".join(text[:2] + [text[2].replace("0.333", "zz")]) + "\n").encode()))
    with pytest.raises(BenchError, match="corrupt results file") as err:
        load_results(tmp_path)
    assert "\n" not in str(err.value)


def test_truncated_file_is_refused(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, CODE, _rows(spec))
    path.write_bytes(path.read_bytes()[:150])  # a gzip stream cut short
    with pytest.raises(BenchError, match=str(path.name)):
        read_run_file(path)


def test_not_a_results_file_is_refused(tmp_path):
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(BenchError, match="missing columns"):
        load_results(tmp_path)


def test_duplicate_runs_are_refused(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, CODE, _rows(spec))
    (tmp_path / "copy.csv.gz").write_bytes(path.read_bytes())
    with pytest.raises(BenchError, match="several files"):
        load_results(tmp_path)


def test_missing_results_dir(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_results(tmp_path / "nope")


def test_empty_results_dir_is_an_empty_frame(tmp_path):
    frame = load_results(tmp_path)
    assert isinstance(frame, pd.DataFrame) and frame.empty


def test_a_newer_code_version_of_a_run_supersedes_the_older_one_which_stays_on_disk(tmp_path):
    """A rerun after a code change writes a second file for the same run_id; loading keeps the newest code's rows
    (by created_utc), and the older file is left untouched."""
    spec = RunSpec(method="pretrained", task="stsb")
    old = write_run(tmp_path, spec, "old0", _rows(spec, "old0", "2026-01-01T00:00:00+00:00"))
    new = write_run(tmp_path, spec, "new0", _rows(spec, "new0", "2026-02-01T00:00:00+00:00"))
    frame = load_results(tmp_path)
    assert set(frame["code"]) == {"new0"} and len(frame) == 2
    assert old.exists() and new.exists() and old != new


def test_rows_record_code_git_state_task_record_and_device(tmp_path):
    spec = RunSpec(method="pretrained", task="scifact")
    write_run(tmp_path, spec, CODE, _rows(spec))
    frame = load_results(tmp_path)
    from bench.catalog import TASK_META, TaskMeta

    assert TaskMeta.from_json(frame["task_meta"].iloc[0]) == TASK_META["scifact"]
    assert set(frame["code"]) == {CODE} and frame["git_dirty"].dtype == bool and set(frame["device"]) == {"cpu"}
    assert set(frame["head"]) == {""}
