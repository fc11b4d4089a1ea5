"""benchmarks/gpu_check.py runs on CPU with tiny sizes and prints its figures; the GPU peak table and the MFU
arithmetic (oracle: the FLOP formulas written out here, 2N and 6N per token, against data-sheet peaks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from bench.cli import main as bench_main

REPO = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

TINY = ["--device", "cpu", "--backbone", "tiny-random-bert", "--texts", "40", "--batch-size", "16",
        "--train-batch", "4", "--train-steps", "2"]


def test_runs_on_cpu_with_tiny_sizes_and_prints_its_figures(data_dir, tmp_path, capsys):
    results = tmp_path / "results"
    assert bench_main(["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--data-dir",
                       str(data_dir), "--results-dir", str(results), "--cache-dir", str(tmp_path), "--device",
                       "cpu"]) == 0
    capsys.readouterr()
    gpu_check.main([*TINY, "--data-dir", str(data_dir), "--json-out", str(tmp_path / "cpu.json"),
                    "--results-dir", str(results)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"runs in {results}:"
    assert lines[1].split()[:3] == ["pretrained", "stsb", "cpu"] and "spearman at (2, 64)" in lines[1]
    assert lines[2].startswith("device: cpu (cpu), torch ") and lines[2].endswith("peak unknown (no MFU)")
    assert "N = 99,968 parameters of tiny-random-bert" in lines[3]  # 2 blocks of (4 x 64^2 + 2 x 64 x 256) + biases
    assert lines[4].startswith("encode: 40 texts, ") and lines[4].endswith("tokens/s, MFU n/a")
    assert lines[5].startswith("train step (starbucks-srl, 4 triplets, median of 2): ") and "MFU n/a" in lines[5]
    assert [line.split()[0] for line in lines[7:]] == ["figure", "encode", "encode", "train", "train", "train"]
    figures = json.loads((tmp_path / "cpu.json").read_text())
    assert figures["device"] == "cpu" and figures["texts"] == 40 and figures["encode MFU"] is None


def test_mfu_follows_the_flop_formulas(data_dir, tmp_path, capsys):
    """With a peak given (1 GFLOP/s here), MFU = 2 x N x tokens / seconds (encode) and 6 x N x tokens per step /
    step time (training), N = 99,968, over the peak: recomputed from the figures the run wrote."""
    gpu_check.main([*TINY, "--peak-tflops", "0.001", "--data-dir", str(data_dir), "--json-out", str(tmp_path / "f")])
    f, n = json.loads((tmp_path / "f").read_text()), 99_968
    assert f["encode MFU"] == pytest.approx(2 * n * f["tokens"] / f["seconds"] / 1e9)
    assert f["train MFU"] == pytest.approx(6 * n * f["step tokens"] / (f["train step ms"] / 1000) / 1e9)
    assert f["step tokens"] > 4 * 3 * 2  # three columns of four texts, at least a word and two specials each


def test_figures_print_beside_the_cpu_figures_with_mfu_from_the_flop_formulas(capsys):
    """A GPU's figures (made up) beside CPU figures from a file: MFU = 6 x N x tokens / step time / peak."""
    n, tokens, step_s, peak = 10_000_000, 20_000, 0.05, gpu_check.peak_tflops("NVIDIA H200")
    cuda = {"device": "cuda", "encode tokens/s": 1e6, "encode MFU": gpu_check.mfu(2 * n * 1e6, peak),
            "train step ms": 1000 * step_s, "train tokens/s": tokens / step_s,
            "train MFU": gpu_check.mfu(6 * n * tokens / step_s, peak)}
    cpu = {"device": "cpu", "backbone": "minilm", "texts": 512, "batch": 16, "encode tokens/s": 2e3,
           "encode MFU": None, "train step ms": 2500.0, "train tokens/s": 200.0, "train MFU": None}
    gpu_check.print_side_by_side(cuda, cpu)
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["figure", "cuda", "cpu"]
    assert out[2].split() == ["encode", "tokens/s", "1,000,000", "2,000"]
    assert out[3].split() == ["encode", "MFU", f"{100 * 2 * n * 1e6 / 989.4e12:.1f}%", "n/a"]
    assert out[6].split() == ["train", "MFU", f"{100 * 6 * n * tokens / step_s / 989.4e12:.1f}%", "n/a"] == \
        ["train", "MFU", "2.4%", "n/a"]
    assert out[7] == "cuda / cpu: encode 500.0x, train step 50.0x (cpu figures: minilm, 512 texts, batch 16)"


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4),
                                        ("NVIDIA H100 PCIe", 756.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0), ("NVIDIA A10G", 70.0),
                                        ("Tesla V100-SXM2-16GB", None)])
def test_peak_table_matches_device_names(name, peak):
    assert gpu_check.peak_tflops(name) == peak


def test_the_shell_script_parses_and_names_the_data_and_install_steps():
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needed in ("pip install -q torch\n", "pip install -q -e .", "HF_HUB_OFFLINE=1", "../shared/data",
                   "--suite smoke", "--methods pretrained,starbucks-srl --tasks stsb --steps 20",
                   "benchmarks/gpu_check.py --device cuda"):
        assert needed in text, needed
