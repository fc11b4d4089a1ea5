"""Where and in what dtype the forward passes run: the device, whether it computes bf16 natively, and the autocast
context of a forward pass (bench.spec.DTYPES). Used by training and encoding alike; nothing here knows models."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from bench import BenchError
from bench.spec import check_dtype

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 dot products
CPUINFO = Path("/proc/cpuinfo")


def pick_device(device: str | None = None) -> torch.device:
    """The named device, else the GPU when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX); elsewhere torch emulates them,
    slower than fp32. torch's own checks are private names: used where they exist, else /proc/cpuinfo's flags."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(callable(check) for check in checks):
            return any(check() for check in checks if callable(check))
    except Exception:  # noqa: BLE001 - a private API that changed its behaviour: read the flags instead
        pass
    try:
        flags = set(CPUINFO.read_text().split())
    except OSError:
        return False
    return bool(flags & set(BF16_CPU_FLAGS))


def check_dtype_supported(dtype: str, device: torch.device) -> None:
    """One line for a dtype this device does not compute natively (bf16 on a CPU without AVX512-BF16 or AMX would
    be emulated, slower than fp32; on a GPU without bf16 it fails)."""
    check_dtype(dtype)
    if dtype == "fp32":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BenchError("dtype bf16: this GPU does not support bf16 (torch.cuda.is_bf16_supported() is False); "
                         "use --dtype fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise BenchError(f"dtype bf16: this CPU has no native bf16 (looked for CPU flags {' or '.join(BF16_CPU_FLAGS)}"
                         "); use --dtype fp32")
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"dtype bf16 runs on cpu or cuda, not {device.type}; use --dtype fp32")


def autocast(device: torch.device, dtype: str = "fp32"):
    """The compute dtype of a forward pass: bf16 autocast for "bf16" (matmuls in bf16 from float32 master weights;
    norms and softmax stay float32, as autocast's op lists say), nothing for "fp32", on CPU and CUDA alike."""
    check_dtype(dtype)
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
