"""Loaders for the on-disk data layout (see ../shared/data/README.md) and the data directory itself."""

from __future__ import annotations

import os
from pathlib import Path

from bench import BenchError

DEFAULT_DATA_DIR = Path("data")  # relative to the working directory; `bench data fetch` fills it


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """--data-dir, else $BENCH_DATA_DIR, else ./data; made absolute, so that a relative path means the same
    folder in every process (a test's subprocess, a torchrun worker, a Slurm job) whatever its working dir."""
    if data_dir is None:
        data_dir = os.environ.get("BENCH_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser().resolve()


def require(path: Path, dataset: str) -> Path:
    """The path, or one error line naming the missing file and how to get it."""
    if not path.exists():
        raise BenchError(f"missing data file {path}: run `bench data fetch {dataset} --data-dir {path_root(path)}` "
                         f"(needs the Hugging Face hub) or point --data-dir / BENCH_DATA_DIR at a folder with it")
    return path


def path_root(path: Path) -> Path:
    """The data dir a dataset file lives under (the parent of its dataset folder)."""
    for parent in path.parents:
        if parent.name == "qrels":  # <data>/<beir set>/qrels/<split>.tsv, also when the set's folder is missing
            return parent.parent.parent
        if parent.name in ("stsbenchmark", "sick", "sts12-16", "snli_senteval", "mrpc", "xnli_en_test",
                           "twitter_url_corpus") or (parent / "qrels").exists():
            return parent.parent
    return path.parent


def split_tsv_line(line: str, n_min: int, source: Path, lineno: int) -> list[str]:
    """Unquoted TSV (sentences contain '"'): split on tabs, check the column count."""
    parts = line.rstrip("\n").rstrip("\r").split("\t")
    if len(parts) < n_min:
        raise BenchError(f"malformed data file {source}, line {lineno}: expected at least {n_min} tab-separated "
                         f"columns, got {len(parts)}; re-download it with `bench data fetch`")
    return parts
