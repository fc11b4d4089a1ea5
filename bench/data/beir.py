"""BEIR-format retrieval sets: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.data import malformed, refetch_hint, require, split_tsv_line, text_lines


@dataclass(frozen=True)
class RetrievalSet:
    corpus_ids: list[str]
    corpus_texts: list[str]  # title and text joined with a space, as BEIR/MTEB do
    query_ids: list[str]  # the queries judged in the split (also those judged only non-relevant)
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _read_jsonl(path: Path) -> list[dict]:
    """One JSON object with an "_id" per non-empty line; "title" and "text", where present, strings (or null)."""
    out = []
    for i, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise malformed(path, i, f"not JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
        if not isinstance(record, dict) or "_id" not in record:
            raise malformed(path, i, 'expected a JSON object with an "_id"')
        bad = [k for k in ("title", "text") if not isinstance(record.get(k) or "", str)]
        if bad:
            raise malformed(path, i, f'"{bad[0]}" is not a string')
        out.append(record)
    return out


def _corpus_path(folder: Path, name: str) -> Path:
    for candidate in ("corpus.jsonl.gz", "corpus.jsonl"):
        if (folder / candidate).exists():
            return folder / candidate
    return require(folder / "corpus.jsonl", name)


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for i, line in text_lines(path):
        p = split_tsv_line(line, 3, path, i)
        if i == 1 and p[0] == "query-id":
            continue
        try:
            qrels.setdefault(p[0], {})[p[1]] = int(float(p[2]))
        except (ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise malformed(path, i, f"relevance {p[2]!r} is not a number") from None
    return qrels


def load_beir(data_dir: Path, name: str, split: str = "test", max_queries: int | None = None) -> RetrievalSet:
    folder = Path(data_dir) / name
    qrels_path, queries_path = folder / "qrels" / f"{split}.tsv", folder / "queries.jsonl"
    qrels = load_qrels(require(qrels_path, name))
    # every judged query is scored, also one judged only non-relevant (it scores 0), as BEIR and mteb do
    if not any(r > 0 for docs in qrels.values() for r in docs.values()):
        raise BenchError(f"data file {qrels_path} holds no relevant judgement (relevance > 0); "
                         f"{refetch_hint(qrels_path)}")
    queries = {str(q["_id"]): q.get("text") or "" for q in _read_jsonl(require(queries_path, name))}
    query_ids = [q for q in queries if q in qrels][:max_queries]
    if not query_ids:
        raise BenchError(f"data file {queries_path} holds none of the {len(qrels)} judged queries of {qrels_path}; "
                         f"{refetch_hint(queries_path)}")
    corpus_path = _corpus_path(folder, name)
    corpus = _read_jsonl(corpus_path)
    if not corpus:
        raise BenchError(f"data file {corpus_path} holds no documents; {refetch_hint(corpus_path)}")
    return RetrievalSet(
        corpus_ids=[str(d["_id"]) for d in corpus],
        corpus_texts=[((d.get("title") or "") + " " + (d.get("text") or "")).strip() for d in corpus],
        query_ids=query_ids, query_texts=[queries[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids},
    )
