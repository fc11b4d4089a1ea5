"""BEIR-format retrieval sets: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.data import require, split_tsv_line


@dataclass(frozen=True)
class RetrievalSet:
    corpus_ids: list[str]
    corpus_texts: list[str]  # title and text joined with a space, as BEIR/MTEB do
    query_ids: list[str]  # only the queries that have judgements in the split
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    out.append(json.loads(line))
    except (json.JSONDecodeError, OSError, EOFError) as exc:
        raise BenchError(f"malformed data file {path} ({exc}); re-download it with `bench data fetch`") from None
    return out


def _corpus_path(folder: Path, name: str) -> Path:
    for candidate in ("corpus.jsonl.gz", "corpus.jsonl"):
        if (folder / candidate).exists():
            return folder / candidate
    return require(folder / "corpus.jsonl", name)


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            p = split_tsv_line(line, 3, path, i)
            if i == 1 and p[0] == "query-id":
                continue
            try:
                qrels.setdefault(p[0], {})[p[1]] = int(float(p[2]))
            except ValueError:
                raise BenchError(f"malformed data file {path}, line {i}: relevance {p[2]!r} is not a number") from None
    return qrels


def load_beir(data_dir: Path, name: str, split: str = "test", max_queries: int | None = None) -> RetrievalSet:
    folder = Path(data_dir) / name
    qrels = load_qrels(require(folder / "qrels" / f"{split}.tsv", name))
    qrels = {q: docs for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
    queries = {str(q["_id"]): q.get("text", "") for q in _read_jsonl(require(folder / "queries.jsonl", name))}
    corpus = _read_jsonl(_corpus_path(folder, name))
    query_ids = [q for q in queries if q in qrels][:max_queries]
    if not query_ids or not corpus:
        raise BenchError(f"{folder}: no judged queries or an empty corpus; re-download it with `bench data fetch {name}`")
    return RetrievalSet(
        corpus_ids=[str(d["_id"]) for d in corpus],
        corpus_texts=[(d.get("title", "") + " " + d.get("text", "")).strip() for d in corpus],
        query_ids=query_ids, query_texts=[queries[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids},
    )
