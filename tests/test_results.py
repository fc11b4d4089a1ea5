"""Result files: schema, exact float round-trip, atomic never-overwrite writes, and clear errors on bad files."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import BenchError
from bench.results import COLUMNS, load_results, make_row, read_run_file, run_path, write_run
from bench.spec import RunSpec


def _rows(spec: RunSpec) -> list[dict]:
    return [make_row(spec, metric="spearman", score=1 / 3, layer=layer, dim=16, n_examples=5) for layer in (1, 2)]


def test_write_and_load_round_trips_scores_exactly(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, _rows(spec))
    frame = load_results(tmp_path)
    assert list(frame.columns) == COLUMNS
    assert path == run_path(tmp_path, spec)
    assert (frame.score == 1 / 3).all()  # unrounded
    assert set(frame.run_id) == {spec.run_id}
    assert not list(tmp_path.glob(".tmp-*"))  # no temp file left behind


def test_existing_run_is_never_overwritten(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    write_run(tmp_path, spec, _rows(spec))
    with pytest.raises(BenchError, match="never overwritten"):
        write_run(tmp_path, spec, _rows(spec))


def test_run_id_is_a_hash_of_the_spec():
    a = RunSpec(method="pretrained", task="stsb")
    assert a.run_id == RunSpec(method="pretrained", task="stsb").run_id
    assert a.run_id != RunSpec(method="pretrained", task="sickr").run_id
    assert a.model_key == RunSpec(method="pretrained", task="sickr").model_key  # same model, other task


def test_corrupt_file_gives_one_clear_line(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, _rows(spec))
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:2] + [text[2].replace("0.333", "zz")]) + "\n")
    with pytest.raises(BenchError, match="corrupt results file") as err:
        load_results(tmp_path)
    assert "\n" not in str(err.value)


def test_truncated_file_is_refused(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, _rows(spec))
    path.write_text(path.read_text()[:150])
    with pytest.raises(BenchError, match=str(path.name)):
        read_run_file(path)


def test_not_a_results_file_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BenchError, match="missing columns"):
        load_results(tmp_path)


def test_duplicate_runs_are_refused(tmp_path):
    spec = RunSpec(method="pretrained", task="stsb")
    path = write_run(tmp_path, spec, _rows(spec))
    (tmp_path / "copy.csv").write_text(path.read_text())
    with pytest.raises(BenchError, match="several files"):
        load_results(tmp_path)


def test_missing_results_dir(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_results(tmp_path / "nope")


def test_empty_results_dir_is_an_empty_frame(tmp_path):
    frame = load_results(tmp_path)
    assert isinstance(frame, pd.DataFrame) and frame.empty
