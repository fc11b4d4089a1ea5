"""`bench reproduce` passes on a clean reference, fails with a readable diff on a perturbed one; the same smoke
spec run twice on CPU gives identical rows."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

import bench.reproduce
from bench.cli import main
from bench.reproduce import Tolerance, compare, rerun, tolerance
from bench.results import examples_path, load_results, read_run_file
from bench.runner import make_specs
from bench.suites import smoke

# Columns that legitimately differ between two runs of one spec.
RUN_STAMP = ["git_sha", "created_utc"]


def smoke_specs(methods: str, tasks=("stsb",)):
    return [s for s in make_specs(smoke(), methods) if s.task in tasks]


def test_tolerances_skip_timings_and_compare_sizes_exactly():
    assert tolerance("encode_seconds", "fp32") is None and tolerance("search_ms_per_query", "int8") is None
    assert tolerance("index_bytes", "binary") == Tolerance(0.0)
    assert tolerance("spearman", "fp32").absolute < tolerance("ndcg@10", "binary").absolute < 100 / 300 + 0.02
    assert Tolerance(0.05).allows(80.0, 80.049) and not Tolerance(0.05).allows(80.0, 80.051)


def test_training_telemetry_is_compared_like_its_kind():
    """A step's learning rate is a formula of the step: compared to rounding; gradient norms drift like losses."""
    from bench.reproduce import LOSS_TOLERANCE

    for lr in ("lr", "smae_lr"):
        assert tolerance(lr, "fp32").allows(1e-4, 1e-4 * (1 + 1e-10))
        assert not tolerance(lr, "fp32").allows(1e-4, 1.01e-4)
    assert tolerance("grad_norm", "fp32") == tolerance("smae_grad_norm", "fp32") == LOSS_TOLERANCE


def test_compare_flags_drift_and_missing_rows_but_not_timings(tmp_path, data_dir):
    rerun(smoke_specs("pretrained"), data_dir, tmp_path, "cpu")
    reference = load_results(tmp_path)
    now = reference.copy()
    now.loc[now["metric"] == "encode_seconds", "score"] += 100.0  # timings move between runs: not drift
    spearman = now.index[(now["metric"] == "spearman") & (now["precision"] == "fp32")]
    now.loc[spearman[0], "score"] += 0.04  # inside the fp32 tolerance
    now.loc[spearman[1], "score"] += 0.5
    now = now.drop(index=spearman[2])
    table = compare(reference, now)
    assert (table["metric"] != "encode_seconds").all()
    assert table["status"].value_counts().to_dict() == {"ok": len(table) - 2, "DRIFT": 1, "missing now": 1}


def test_reproduce_passes_on_the_reference_and_fails_on_a_perturbed_copy(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(bench.reproduce, "reference_specs", lambda: smoke_specs("pretrained"))
    ref, bad = tmp_path / "reference", tmp_path / "perturbed"
    args = ["--data-dir", str(data_dir)]
    assert main(["reproduce", "--write-reference", "--results-dir", str(ref), *args]) == 0
    capsys.readouterr()

    assert main(["reproduce", "--results-dir", str(ref), *args]) == 0
    assert "reproduce: OK" in capsys.readouterr().out

    shutil.copytree(ref, bad)
    (path,) = bad.glob("*.csv")
    frame = read_run_file(path)
    row = ((frame["metric"] == "spearman") & (frame["layer"] == 1) & (frame["dim"] == 32)
           & (frame["precision"] == "fp32"))
    before = float(frame.loc[row, "score"].iloc[0])
    frame.loc[row, "score"] = before + 0.5
    frame.to_csv(path, index=False)
    assert main(["reproduce", "--results-dir", str(bad), *args]) == 1
    out = capsys.readouterr().out
    drift = [line for line in out.splitlines() if "DRIFT" in line and "spearman" in line]
    assert len(drift) == 1, out
    assert f"{before + 0.5:.4f}" in drift[0] and f"{before:.4f}" in drift[0] and "0.05" in drift[0]
    assert "reproduce: DRIFT, 1 of" in out


def test_reproduce_without_a_reference_says_how_to_make_one(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(bench.reproduce, "reference_specs", lambda: smoke_specs("pretrained"))
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "--results-dir", str(tmp_path / "empty"), "--data-dir", str(data_dir)]) == 2
    assert "--write-reference" in capsys.readouterr().err


def test_two_runs_of_the_same_smoke_specs_give_identical_rows(tmp_path, data_dir):
    # the untrained model and the training loop with seeded draws of layers and dims (2dmse) on the smoke suite;
    # each run gets its own fresh cache, so nothing (encodings, checkpoints) is shared between the two.
    # `bench reproduce` (CI, after the tests) reruns every smoke training method against the committed reference.
    specs = smoke_specs("pretrained,2dmse")
    first = rerun(specs, data_dir, tmp_path / "a", "cpu")
    second = rerun(specs, data_dir, tmp_path / "b", "cpu")
    assert sorted(first["method"].unique()) == sorted({s.method for s in specs})
    cost = first["metric"].map(lambda m: tolerance(m, "fp32") is None)
    assert cost.any()  # timing rows exist and are the only ones left out
    key = ["run_id", "layer", "dim", "precision", "split", "metric", "step"]
    a = first[~cost].drop(columns=RUN_STAMP).sort_values(key).reset_index(drop=True)
    b = second[~second["metric"].map(lambda m: tolerance(m, "fp32") is None)]
    b = b.drop(columns=RUN_STAMP).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for path in sorted((tmp_path / "a").glob("*.csv")):
        with np.load(examples_path(path)) as x, np.load(examples_path(tmp_path / "b" / path.name)) as y:
            assert sorted(x.files) == sorted(y.files)
            for name in x.files:
                assert np.array_equal(x[name], y[name]), name
