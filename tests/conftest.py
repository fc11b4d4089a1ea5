"""Shared fixtures. Nothing here may reach the network: the hub is switched off for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["BENCH_QUIET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


# Absolute for every process a test starts (subprocesses run in other working directories).
os.environ["BENCH_DATA_DIR"] = str(_data_dir())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data (../shared/data or $BENCH_DATA_DIR)."""
    path = _data_dir()
    if not (path / "stsbenchmark").is_dir():
        pytest.skip(f"real data not found at {path}; set BENCH_DATA_DIR")
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory) -> None:
    """Encodings and checkpoints go to a per-session cache, never the user's ./cache."""
    if "BENCH_CACHE_DIR" not in os.environ:
        os.environ["BENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("bench-cache"))
