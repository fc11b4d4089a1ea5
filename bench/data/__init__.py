"""Loaders for the on-disk data layout (see ../shared/data/README.md) and the data directory itself."""

from __future__ import annotations

import gzip
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench import BenchError

DEFAULT_DATA_DIR = Path("data")  # relative to the working directory; `bench data fetch` fills it


_running_with: list[Path] = []  # the data dir of the run in progress (use_data_dir), innermost last


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """--data-dir, else the running command's (use_data_dir), else $BENCH_DATA_DIR, else ./data; made absolute, so
    that a relative path means the same folder in every process whatever its working dir."""
    if data_dir is None:
        data_dir = (_running_with[-1] if _running_with else None) or os.environ.get("BENCH_DATA_DIR") \
            or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser().resolve()


@contextmanager
def use_data_dir(data_dir: Path) -> Iterator[Path]:
    """Within the block, code that finds data without being handed a folder (a task name that is a BEIR folder of
    the data dir, a user's mteb task file calling resolve_data_dir()) reads `data_dir`. A run sets it for its own
    process only (bench/runner.run_all: every launched process gets it from the RunContext), never in the
    environment, so nothing outlives the run."""
    _running_with.append(resolve_data_dir(data_dir))
    try:
        yield _running_with[-1]
    finally:
        _running_with.pop()


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


def refetch_hint(path: Path) -> str:
    """How to replace a damaged data file: `bench data fetch <name>` when the file belongs to a dataset it writes
    (it rewrites all of that dataset's files), else a fresh copy of the original."""
    from bench.data.fetch import SOURCES

    posix = "/" + Path(path).as_posix().removesuffix(".gz").lstrip("/")
    folder = posix.rsplit("/", 1)[0]
    # the file itself, else a file beside one (sts-train.csv beside sts-test.csv) when only one dataset has it
    for where, suffix in ((posix, lambda rel: "/" + rel), (folder, lambda rel: "/" + rel.rsplit("/", 1)[0])):
        found = {(name, where[:-len(suffix(rel))]) for name, source in SOURCES.items() for rel in source.needed
                 if where.endswith(suffix(rel))}
        if len({name for name, _ in found}) == 1:
            name, root = found.pop()
            root = root if Path(path).is_absolute() else root.lstrip("/") or "."
            return f"re-download it with `bench data fetch {name} --data-dir {root}`"
    return "replace it with a good copy of the original file"


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, gzipped when its name ends in .gz. Every loader reads through here, so
    a file that is not text (bad bytes, a damaged or cut gzip stream) is one error line naming it and the fix."""
    gzipped = Path(path).suffix == ".gz"
    lineno = 0
    try:
        with (gzip.open if gzipped else open)(path, "rt", encoding=encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except UnicodeDecodeError as exc:
        problem = f"not {encoding} text ({exc.reason})"
    except (OSError, EOFError, zlib.error) as exc:  # gzip: bad header or CRC (OSError), cut short, bad deflate data
        problem = f"{'damaged gzip stream' if gzipped else 'unreadable'} ({exc})"
    else:
        return
    where = f", after line {lineno}" if lineno else ""
    raise BenchError(f"malformed data file {path}{where}: {problem}; {refetch_hint(path)}")


def split_tsv_line(line: str, n_min: int, source: Path, lineno: int) -> list[str]:
    """Unquoted TSV (sentences contain '"'): split on tabs, check the column count."""
    parts = line.rstrip("\n").rstrip("\r").split("\t")
    if len(parts) < n_min:
        raise BenchError(f"malformed data file {source}, line {lineno}: expected at least {n_min} tab-separated "
                         f"columns, got {len(parts)}; {refetch_hint(source)}")
    return parts


def malformed(source: Path, lineno: int, problem: str) -> BenchError:
    """The one error of a bad value in a data file: file, line, what is wrong, how to get a good copy."""
    return BenchError(f"malformed data file {source}, line {lineno}: {problem}; {refetch_hint(source)}")
