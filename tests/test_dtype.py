"""The compute dtype (--dtype fp32 | bf16): fp32 is what ran before (same keys, plain float32 code), bf16 is a run of
its own (run_id, checkpoint and encoding keys, a `dtype` column) whose scores stay close to fp32's, and a dtype the
device cannot compute is one error line.

The bf16 runs here monkeypatch the native-bf16 check to True: torch computes bf16 on any CPU (emulated where the CPU
lacks avx512_bf16 / amx_bf16, so slower but with the same rounding of the inputs), so the bookkeeping is tested on
every machine; only `bench run` refuses it there. The test of a real run on this CPU skips where it is not native.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench.devices as devices
import bench.evaluate as evaluate
from bench import BenchError
from bench.catalog import main_rows, method_labels
from bench.cli import main
from bench.devices import autocast, check_dtype_supported
from bench.encoder import Encoder
from bench.evaluate import texts_key
from bench.results import COLUMNS, load_results, read_run_file
from bench.runner import make_specs
from bench.suites import default, get_suite, smoke, with_overrides

REPO = Path(__file__).resolve().parents[1]
# |bf16 - fp32| of Spearman and Pearson (x100, as stored) of the smoke suite's tiny random BERT, pretrained and full
# (8 steps), STS-B's first 200 pairs, every layer x dims 16/32/64, largest over the cells as measured: fp32 0.033,
# int8 0.22, binary 0.96 (a random 64-dim model has many coordinates near 0, whose sign bf16's rounding flips).
# About twice those:
BF16_TOLERANCE = {"fp32": 0.07, "int8": 0.5, "binary": 2.0}


def _spec(suite, method: str, task: str):
    return next(s for s in make_specs(suite, method) if s.task == task)


def test_fp32_keeps_the_run_ids_checkpoint_keys_and_cache_keys_of_before(monkeypatch):
    """Pinned: a committed default-suite run (results/ holds starbucks__scifact__fcb35f8b0027__*), the smoke suite's
    full run and its checkpoint key, and the encoding cache key of an fp32 encoder (the code fingerprint pinned too,
    as only the serving tag is at stake here). The run_ids were pinned from the code before the dtype field and
    re-pinned once when issue 22 changed the evaluation spec (rescore_docs gone, the default precisions grown); the
    model key and cache key are still the ones from before the dtype field."""
    assert list((REPO / "results").glob("starbucks__scifact__fcb35f8b0027__*.csv.gz"))
    committed = _spec(default(), "starbucks", "scifact")
    assert committed.dtype == "fp32" and committed.run_id == "fcb35f8b0027"
    full = _spec(smoke(), "full", "stsb")
    assert (full.run_id, full.model_key) == ("f299e155479a", "57c800928ed8")
    monkeypatch.setattr(evaluate, "encoding_code", lambda: "pinned")
    encoder = Encoder.named("tiny-random-bert", device="cpu")
    assert encoder.serving_tag() == '["mean", true, "", "", "every", [], null, false, null]'
    assert texts_key("m", encoder.serving_tag("document"), 64, ["a", "b"]) == "10b42892b33737a9"


def test_bf16_changes_the_run_id_checkpoint_smae_and_cache_keys(monkeypatch):
    from methods.starbucks import Starbucks, pretrain_spec

    fp32 = _spec(default(), "starbucks", "scifact")
    bf16 = replace(fp32, dtype="bf16")
    assert bf16.run_id != fp32.run_id and bf16.model_key != fp32.model_key
    params = Starbucks.Params(**dict(fp32.params))
    assert "dtype" not in pretrain_spec(fp32, params, (), ()) and pretrain_spec(bf16, params, (), ())["dtype"] == "bf16"
    monkeypatch.setattr(evaluate, "encoding_code", lambda: "pinned")
    encoder = Encoder.named("tiny-random-bert", device="cpu")
    keys = {dtype: texts_key("m", replace(encoder, dtype=dtype).serving_tag(), 64, ["a"]) for dtype in ("fp32", "bf16")}
    assert keys["fp32"] != keys["bf16"]


def test_suites_say_their_dtype_and_the_command_line_overrides_it():
    assert get_suite("paper-sts").dtype == "bf16"
    assert {get_suite(name).dtype for name in ("smoke", "default", "cpu-full", "public-models")} == {"fp32"}
    assert {s.dtype for s in make_specs(with_overrides(smoke(), dtype="bf16"), "pretrained")} == {"bf16"}


def test_fp32_runs_the_plain_float32_code(monkeypatch):
    """fp32 enters no autocast, in encoding or training: the float32 code of before, on CPU and CUDA alike (CUDA's
    default was bf16 autocast). The hidden states reach pooling as the very tensors the model returned."""
    def refuse(*args, **kwargs):
        raise AssertionError("autocast entered for fp32")

    monkeypatch.setattr(torch, "autocast", refuse)
    assert isinstance(autocast(torch.device("cuda"), "fp32"), type(autocast(torch.device("cpu"))))
    encoder = Encoder.named("tiny-random-bert", device="cpu")
    features = encoder.tokenize(["a sentence", "another one here"], "", 16)
    with torch.inference_mode():
        states = encoder.hidden_states(features)
        plain = encoder.model(**features, output_hidden_states=True).hidden_states[1:]
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(states, plain))


def test_bf16_encoding_computes_in_bf16_and_pools_in_float32():
    encoder = Encoder.named("tiny-random-bert", device="cpu", dtype="bf16")
    texts = ["a sentence", "another one here", "and a third, longer than the other two"]
    bf16 = encoder.vectors(texts, 16)
    encoder.dtype = "fp32"
    fp32 = encoder.vectors(texts, 16)
    assert bf16.dtype == fp32.dtype == "float32"
    assert 0 < abs(bf16 - fp32).max() < 0.05 * abs(fp32).max()  # bf16 rounding (2^-8 relative), not another model


def _run_smoke(data_dir: Path, folder: Path, dtype: str) -> pd.DataFrame:
    args = ["run", "--suite", "smoke", "--methods", "pretrained,full", "--tasks", "stsb", "--dtype", dtype,
            "--data-dir", str(data_dir), "--results-dir", str(folder), "--cache-dir", str(folder), "--device", "cpu"]
    assert main(args) == 0
    return load_results(folder)


def _scores(rows: pd.DataFrame) -> pd.Series:
    quality = rows[(rows["dim"] > 0) & rows["metric"].isin(["spearman", "pearson"])]
    return quality.set_index(["method", "layer", "dim", "precision", "metric"])["score"].sort_index()


def test_a_bf16_run_is_recorded_keyed_apart_and_close_to_fp32(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    fp32, bf16 = (_run_smoke(data_dir, tmp_path / dtype, dtype) for dtype in ("fp32", "bf16"))
    assert set(fp32["dtype"]) == {"fp32"} and set(bf16["dtype"]) == {"bf16"}
    expected = {s.run_id for s in make_specs(with_overrides(smoke(), tasks=("stsb",), dtype="bf16"), "pretrained,full")}
    assert set(bf16["run_id"]) == expected and not expected & set(fp32["run_id"])
    assert len(list((tmp_path / "bf16" / "checkpoints").iterdir())) == 1  # trained again, not fp32's checkpoint
    losses = [rows[rows["metric"] == "loss"].sort_values("step")["score"].to_numpy() for rows in (fp32, bf16)]
    assert (losses[0] != losses[1]).any()  # training ran in bf16 too
    gap = (_scores(bf16) - _scores(fp32)).abs()
    assert gap.notna().all() and (gap.groupby(level="method").max() > 0).all()  # both encoded in bf16
    for precision, tolerance in BF16_TOLERANCE.items():
        assert gap.xs(precision, level="precision").max() < tolerance, precision
    # in one results folder, reports tell them apart (never averaged as if seeds); fp32 alone keeps its plain label
    assert len(set(method_labels(main_rows(pd.concat([fp32, bf16]))))) == 4
    assert set(method_labels(main_rows(fp32))) == {"pretrained", "full"}


@pytest.mark.skipif(not devices.cpu_has_native_bf16(), reason="this CPU has no native bf16 (CPU flags avx512_bf16 "
                    "or amx_bf16): bench run refuses --dtype bf16 here")
def test_a_bf16_run_on_a_native_cpu(data_dir, tmp_path):
    assert set(_run_smoke(data_dir, tmp_path, "bf16")["dtype"]) == {"bf16"}


def test_bad_dtypes_are_one_error_line(data_dir, tmp_path, monkeypatch, capsys):
    base = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--data-dir", str(data_dir),
            "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path), "--device", "cpu"]
    assert main([*base, "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown dtype 'fp16'; choose from fp32, bf16 (e.g. --dtype bf16)"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert main([*base, "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "avx512_bf16" in err and "amx_bf16" in err and "--dtype fp32" in err
    assert not list(tmp_path.rglob("*.csv.gz"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(BenchError, match="GPU does not support bf16"):
        check_dtype_supported("bf16", torch.device("cuda"))


def test_native_bf16_reads_torch_or_else_the_cpu_flags(monkeypatch, tmp_path):
    """torch's checks are private names: where they are missing or fail, /proc/cpuinfo's flags decide."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert devices.cpu_has_native_bf16()
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "CPUINFO", cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx512f avx512_vnni\n")
    assert not devices.cpu_has_native_bf16()
    cpuinfo.write_text("flags\t\t: fpu avx512f avx512_bf16\n")
    assert devices.cpu_has_native_bf16()

    def broken():
        raise RuntimeError("changed")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert devices.cpu_has_native_bf16()


def test_results_from_before_the_dtype_column_read_as_fp32(tmp_path):
    """A committed results file with its dtype column dropped is a file from before the column."""
    committed = sorted((REPO / "results").glob("pretrained__stsb__*.csv.gz"))[0]
    old = tmp_path / committed.name
    pd.read_csv(committed).drop(columns="dtype").to_csv(old, index=False)
    assert "dtype" not in pd.read_csv(old).columns and "dtype" in COLUMNS
    assert set(read_run_file(old)["dtype"]) == {"fp32"}


def test_dtype_speed_runs_quick_on_the_tiny_model(data_dir, capsys):
    spec = importlib.util.spec_from_file_location("dtype_speed", REPO / "benchmarks" / "dtype_speed.py")
    dtype_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dtype_speed)
    dtype_speed.main(["--quick", "--backbone", "tiny-random-bert", "--data-dir", str(data_dir), "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny-random-bert on cpu") and "native bf16" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["fp32", "bf16", "bf16"] and "ratio to fp32" in lines[3]
    assert lines[5].startswith("train step (starbucks-srl, 16 triplets") and "ratio" in lines[5]
    assert lines[6].startswith("STS-B test (200 pairs)") and lines[-1].startswith("  largest over the whole grid: ")


def test_dtype_speed_compares_a_suite_run_with_fp32_results(tmp_path, capsys):
    """--suite against itself: every diagonal cell differs by 0 (the tiny model's reference runs, also in results/,
    are cells of their own backbone, never another seed), no mark changes."""
    spec = importlib.util.spec_from_file_location("dtype_speed", REPO / "benchmarks" / "dtype_speed.py")
    dtype_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dtype_speed)
    folder = tmp_path / "r"
    folder.mkdir()
    for path in (REPO / "results").glob("*__stsb__*"):
        if path.name.split("__")[0] in ("pretrained", "separate", "starbucks-srl"):
            (folder / path.name).write_bytes(path.read_bytes())
    dtype_speed.compare_suite(folder, folder)
    out = capsys.readouterr().out
    cells = [line for line in out.splitlines() if line.startswith(("  minilm ", "  tiny-random-bert "))]
    # pretrained has one seed (no spread); separate and starbucks-srl have three (a spread, printed as a number)
    assert len(cells) == 22 and all("+0.000  " in line for line in cells)
    assert any(line.endswith("none (1 seed)") for line in cells) and not all(line.endswith("seed)") for line in cells)
    assert "largest |bf16 - fp32|: 0.000 over 22 cells" in out and "none changes" in out
