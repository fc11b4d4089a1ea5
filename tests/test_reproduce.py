"""`bench reproduce` passes on a clean reference, fails with a readable diff on a perturbed one and on a change
inside an objective that no spec field sees; references are found by run_id whatever code made them; the
reference's training methods are told apart; `--write-reference --overwrite` shows what it replaces; the same
smoke spec run twice on CPU gives identical rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fingerprint import edited

import bench.reproduce
import methods.starbucks_srl
import methods.twodmse
from bench.cli import main
from bench.drift import Tolerance, compare, method_pairs, tolerance
from bench.reproduce import SMOKE_TRAINING_METHODS, reference_specs, rerun
from bench.results import examples_path, load_results, read_run_file
from bench.runner import make_specs, run_code
from bench.suites import smoke

ROOT = Path(__file__).resolve().parents[1]

# Columns that legitimately differ between two runs of one spec.
RUN_STAMP = ["git_sha", "created_utc"]


def smoke_specs(methods: str, tasks=("stsb",)):
    return [s for s in make_specs(smoke(), methods) if s.task in tasks]


def test_tolerances_skip_timings_and_compare_sizes_exactly():
    assert tolerance("encode_seconds", "fp32") is None and tolerance("search_ms_per_query", "int8") is None
    assert tolerance("index_bytes", "binary") == Tolerance(0.0)
    assert tolerance("grad_norm", "fp32", split="train") == tolerance("loss", "fp32", split="train")
    for metric in ("spearman", "pearson", "ndcg@10"):  # a quantized row never gets less room than its fp32 row
        assert tolerance(metric, "fp32").absolute <= tolerance(metric, "int8").absolute
        assert tolerance(metric, "fp32").absolute <= tolerance(metric, "binary").absolute
    assert Tolerance(0.05).allows(80.0, 80.049) and not Tolerance(0.05).allows(80.0, 80.051)


def test_training_telemetry_is_compared_like_its_kind():
    """A step's learning rate is a formula of the step: compared to rounding; gradient norms drift like losses."""
    from bench.drift import TRAINING_TOLERANCE

    for lr in ("lr", "smae_lr"):
        assert tolerance(lr, "fp32").allows(1e-4, 1e-4 * (1 + 1e-10))
        assert not tolerance(lr, "fp32").allows(1e-4, 1.01e-4)
    assert tolerance("grad_norm", "fp32") == tolerance("smae_grad_norm", "fp32") == TRAINING_TOLERANCE


def test_compare_flags_drift_and_missing_rows_but_not_timings(tmp_path, data_dir):
    rerun(smoke_specs("pretrained"), data_dir, tmp_path, "cpu")
    reference = load_results(tmp_path)
    now = reference.copy()
    now.loc[now["metric"] == "encode_seconds", "score"] += 100.0  # timings move between runs: not drift
    spearman = now.index[(now["metric"] == "spearman") & (now["precision"] == "fp32")]
    allowed = tolerance("spearman", "fp32").absolute
    now.loc[spearman[0], "score"] += 0.8 * allowed
    now.loc[spearman[1], "score"] += 1.5 * allowed
    now = now.drop(index=spearman[2])
    table = compare(reference, now)
    assert (table["metric"] != "encode_seconds").all()
    assert table["status"].value_counts().to_dict() == {"ok": len(table) - 2, "DRIFT": 1, "missing now": 1}


def _perturb(path: Path, by: float) -> float:
    """Add `by` to the fp32 Spearman of cell (1, 32) in a result file; return the old score."""
    frame = read_run_file(path)
    row = ((frame["metric"] == "spearman") & (frame["layer"] == 1) & (frame["dim"] == 32)
           & (frame["precision"] == "fp32"))
    before = float(frame.loc[row, "score"].iloc[0])
    frame.loc[row, "score"] = before + by
    frame.to_csv(path, index=False)
    return before


def only_pretrained(methods=None):
    return smoke_specs("pretrained")


def test_reproduce_passes_on_the_reference_and_fails_on_a_perturbed_copy(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(bench.reproduce, "reference_specs", only_pretrained)
    ref, bad = tmp_path / "reference", tmp_path / "perturbed"
    args = ["--data-dir", str(data_dir)]
    assert main(["reproduce", "--write-reference", "--results-dir", str(ref), *args]) == 0
    capsys.readouterr()

    assert main(["reproduce", "--results-dir", str(ref), *args]) == 0
    assert "reproduce: OK" in capsys.readouterr().out

    shutil.copytree(ref, bad)
    (path,) = bad.glob("*.csv.gz")
    before = _perturb(path, 0.5)
    assert main(["reproduce", "--results-dir", str(bad), *args]) == 1
    out = capsys.readouterr().out
    drift = [line for line in out.splitlines() if "DRIFT" in line and "spearman" in line and "reproduce" not in line]
    assert len(drift) == 2, out  # the row, and the run's summary line naming the method
    assert f"{before + 0.5:.6g}" in drift[0] and f"{before:.6g}" in drift[0]
    assert str(tolerance("spearman", "fp32")) in drift[0]
    assert drift[1].startswith("DRIFT pretrained on stsb") and "1 quality rows" in drift[1]
    assert "reproduce: DRIFT, 1 of" in out


def test_a_code_change_is_compared_with_the_reference_found_by_run_id(tmp_path, data_dir, monkeypatch, capsys):
    """The reference's file name carries the code that made it; after an edit the rerun has another code, and the
    reference is still found (by run_id): compared, not reported missing. Where a run_id has files of two code
    versions, the newest is the reference."""
    monkeypatch.setattr(bench.reproduce, "reference_specs", only_pretrained)
    args = ["--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    assert main(["reproduce", "--write-reference", *args]) == 0
    (spec,) = only_pretrained()
    old_code = run_code(spec)
    (path,) = tmp_path.glob("*.csv.gz")
    assert path.name == f"pretrained__stsb__{spec.run_id}__{old_code}.csv.gz"
    capsys.readouterr()

    edited(monkeypatch, "bench.evaluate")  # the evaluation's code "changed": every result key changes with it
    new_code = run_code(spec)
    assert new_code != old_code
    assert main(["reproduce", *args]) == 0
    out = capsys.readouterr().out
    assert f"ok    pretrained on stsb (run {spec.run_id}; code {old_code} -> {new_code}): within tolerance" in out
    assert "reproduce: OK" in out and "no reference" not in out

    before = _perturb(path, 0.5)  # the old code's numbers differ now: DRIFT with the numbers
    assert main(["reproduce", *args]) == 1
    out = capsys.readouterr().out
    assert f"{before + 0.5:.6g}" in out and "reproduce: DRIFT, 1 of" in out

    newer = tmp_path / f"pretrained__stsb__{spec.run_id}__0123456789ab.csv.gz"  # a later code version's file
    read_run_file(path).assign(code="0123456789ab", created_utc="2999-01-01T00:00:00+00:00").to_csv(newer, index=False)
    shutil.copy(examples_path(path), examples_path(newer))
    _perturb(newer, -0.5)  # it holds the right numbers again: the newest file is the reference
    assert main(["reproduce", *args]) == 0


def test_write_reference_keeps_a_reference_unless_overwrite_and_then_shows_every_changed_row(tmp_path, data_dir,
                                                                                            monkeypatch, capsys):
    monkeypatch.setattr(bench.reproduce, "reference_specs", only_pretrained)
    args = ["--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    assert main(["reproduce", "--write-reference", *args]) == 0
    (path,) = tmp_path.glob("*.csv.gz")
    old_name = path.with_name(path.name.replace(path.name.split("__")[3], "00000000dead.csv.gz"))
    path.rename(old_name)  # as if an older version of the code had made it
    examples_path(path).rename(examples_path(old_name))
    before = _perturb(old_name, 0.5)
    capsys.readouterr()

    assert main(["reproduce", "--write-reference", *args]) == 0
    assert "kept 1 existing reference run(s) as they were: pretrained on stsb" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old_name.name, examples_path(old_name).name])

    assert main(["reproduce", "--write-reference", "--overwrite", *args]) == 0
    out = capsys.readouterr().out
    changed = [line for line in out.splitlines() if "spearman" in line]
    assert len(changed) == 1 and f"{before + 0.5:.6g}" in changed[0] and f"{before:.6g}" in changed[0]
    assert "overwrite: 1 changed row(s) in 1 of 1 replaced run(s)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, examples_path(path).name])
    assert main(["reproduce", *args]) == 0


def test_overwrite_without_write_reference_is_one_error_line(tmp_path, capsys):
    assert main(["reproduce", "--overwrite", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --overwrite replaces reference files") and len(err.splitlines()) == 1


def test_method_pairs_measures_the_largest_difference_in_units_of_tolerance():
    tol = tolerance("pearson", "fp32").absolute
    base = dict(backbone="b", task="stsb", eval="e", precision="fp32", split="test", layer=1, dim=32, step=-1)
    frame = pd.DataFrame([
        {**base, "method": "a", "metric": "pearson", "score": 50.0},
        {**base, "method": "b", "metric": "pearson", "score": 50.0 + 3 * tol},
        {**base, "method": "c", "metric": "pearson", "score": 50.0 + 0.5 * tol},
        {**base, "method": "a", "metric": "loss", "split": "train", "score": 1.0},  # losses never count
        {**base, "method": "c", "metric": "loss", "split": "train", "score": 9.0},
        {**base, "method": "a", "metric": "pearson", "precision": "int8", "score": 0.0},  # nor other precisions
        {**base, "method": "c", "metric": "pearson", "precision": "int8", "score": 99.0}])
    pairs = method_pairs(frame).set_index(["method_a", "method_b"])
    assert pairs["margin"].to_dict() == {("a", "b"): pytest.approx(3), ("a", "c"): pytest.approx(0.5),
                                         ("b", "c"): pytest.approx(2.5, rel=1e-3)}
    assert pairs["differs"].to_dict() == {("a", "b"): True, ("a", "c"): False, ("b", "c"): True}


def test_the_reference_tells_every_pair_of_training_methods_apart():
    """From the committed reference (results/): for every pair of the training methods, some fp32 quality row
    (a Spearman or Pearson of a cell, not a loss) differs by more than its tolerance, so a method whose code came
    to compute another's would drift."""
    specs = [s for s in reference_specs() if s.method in SMOKE_TRAINING_METHODS]
    frame = load_results(ROOT / "results")
    frame = frame[frame["run_id"].isin({s.run_id for s in specs})]
    pairs = method_pairs(frame)
    n = len(SMOKE_TRAINING_METHODS) - 1  # bebr serves binary codes only: it is told apart at binary, below
    assert len(pairs) == n * (n - 1) // 2
    assert pairs["differs"].all(), pairs[~pairs["differs"]].to_string()
    binary = method_pairs(frame, precision="binary")
    with_bebr = binary[(binary["method_a"] == "bebr") | (binary["method_b"] == "bebr")]
    assert len(with_bebr) == n and with_bebr["differs"].all(), with_bebr.to_string()


def _kl_times(factor):
    original = methods.starbucks_srl.kl_term
    return "kl_term", lambda *args: factor * original(*args)


def _layer_weight_times(factor):
    original = methods.twodmse.layer_weight
    return "layer_weight", lambda layer, weighting: factor * original(layer, weighting)


@pytest.mark.parametrize("method, module, change, factor", [
    ("starbucks-srl", methods.starbucks_srl, _kl_times, 3.0),
    ("2dmse", methods.twodmse, _layer_weight_times, 1.2)])
def test_a_change_inside_an_objective_is_drift_of_that_method(method, module, change, factor, data_dir, monkeypatch,
                                                              capsys):
    """starbucks-srl's KL term x3, or 2dmse's prior-layer weights x1.2, inside the objective: no spec field
    changes and a monkeypatch leaves the code fingerprint as it is, so only the numbers can tell. Against the
    committed reference, `bench reproduce` must exit 1 naming that method, with drift in its fp32 quality rows
    (not only its loss curve), while `full`, trained beside it, stays within tolerance."""
    monkeypatch.setattr(module, *change(factor))
    code = main(["reproduce", "--methods", f"full,{method}", "--results-dir", str(ROOT / "results"),
                 "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert code == 1, out
    # one DRIFT line, the changed method's; `full` may have an "ok" line (its reference made by other code)
    summary = [line for line in out.splitlines() if line.startswith("DRIFT ")]
    assert len(summary) == 1 and summary[0].startswith(f"DRIFT {method} on stsb"), out
    quality = int(summary[0].split(" rows (")[1].split(" quality")[0])
    assert quality > 0, summary[0]
    rows = [line.split() for line in out.splitlines() if line.endswith("DRIFT") and line.split()[0] == method]
    assert any(r[4] == "fp32" and r[5] in ("spearman", "pearson") for r in rows), out
    assert not any(line.split()[0] == "full" and line.endswith("DRIFT") for line in out.splitlines())


def test_reproduce_without_a_reference_says_how_to_make_one(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(bench.reproduce, "reference_specs", only_pretrained)
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
    for path in sorted((tmp_path / "a").glob("*.csv.gz")):
        with np.load(examples_path(path)) as x, np.load(examples_path(tmp_path / "b" / path.name)) as y:
            assert sorted(x.files) == sorted(y.files)
            for name in x.files:
                assert np.array_equal(x[name], y[name]), name
