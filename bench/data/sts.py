"""STS pairs: STS-B, SICK-R (the 9,927 SemEval-2014 pairs, as MTEB scores it), STS12-16 ("all" setting)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.data import malformed, refetch_hint, require, split_tsv_line, text_lines


@dataclass(frozen=True)
class STSPairs:
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # gold similarity
    min_score: float
    max_score: float

    def __len__(self) -> int:
        return len(self.scores)

    def head(self, n: int | None) -> "STSPairs":
        if n is None:
            return self
        return STSPairs(self.sentences1[:n], self.sentences2[:n], self.scores[:n], self.min_score, self.max_score)


def sentence_key(text: str) -> str:
    """A sentence's identity across pairs and runs: its normalised exact text (stripped, lowercased, whitespace
    collapsed), so pairs that share a sentence up to case or spacing share it here too."""
    return " ".join(text.lower().split())


def sentence_identities(pairs: STSPairs) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's two sentences as indices into the pairs' sorted distinct sentence keys (`sentence_key`): what a
    sentence-level bootstrap resamples, and what pairs two runs' per-pair values."""
    keys = np.array([sentence_key(s) for s in pairs.sentences1 + pairs.sentences2], dtype=str)
    _, index = np.unique(keys, return_inverse=True)
    index = index.astype(np.int32)
    return index[:len(pairs)], index[len(pairs):]


def _parse_score(text: str, source: Path, lineno: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise malformed(source, lineno, f"score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise malformed(source, lineno, f"score {text!r} is not a finite number")
    return value


def _pairs(rows: list[tuple[str, str, float]], lo: float, hi: float, source: Path) -> STSPairs:
    if not rows:
        raise BenchError(f"data file {source} holds no pairs; {refetch_hint(source)}")
    s1, s2, sc = zip(*rows)
    return STSPairs(list(s1), list(s2), np.asarray(sc, dtype=np.float64), lo, hi)


def load_stsb(data_dir: Path, split: str = "test") -> STSPairs:
    """The original release's sts-{split}.csv: tab-separated, no header, score in column 5; extra columns ignored."""
    if split not in ("train", "dev", "test"):
        raise BenchError(f"unknown STS-B split {split!r}; use train, dev or test")
    path = require(Path(data_dir) / "stsbenchmark" / f"sts-{split}.csv", "stsb")
    rows = []
    for i, line in text_lines(path):
        p = split_tsv_line(line, 7, path, i)
        rows.append((p[5], p[6], _parse_score(p[4], path, i)))
    return _pairs(rows, 0.0, 5.0, path)


def load_sickr(data_dir: Path) -> STSPairs:
    """All three SemEval-2014 files (train, trial, test: 9,927 pairs), as MTEB's SICK-R and the Starbucks paper."""
    folder = Path(data_dir) / "sick" / "senteval_semeval2014_tokenized"
    rows = []
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        path = require(folder / name, "sickr")
        for i, line in text_lines(path):
            if i > 1:  # after the header
                p = split_tsv_line(line, 4, path, i)
                rows.append((p[1], p[2], _parse_score(p[3], path, i)))
    return _pairs(rows, 1.0, 5.0, path)  # the test file: all pairs of a fetched copy live there


def load_sts_year(data_dir: Path, year: int) -> STSPairs:
    """normalized/sts{YY}.tsv (dataset, score, sentence1, sentence2): every sub-dataset of the year together."""
    if year not in (12, 13, 14, 15, 16):
        raise BenchError(f"unknown STS year {year}; use 12..16")
    path = require(Path(data_dir) / "sts12-16" / "normalized" / f"sts{year}.tsv", f"sts{year}")
    rows = []
    for i, line in text_lines(path):
        if i > 1:  # after the header
            p = split_tsv_line(line, 4, path, i)
            rows.append((p[2], p[3], _parse_score(p[1], path, i)))
    return _pairs(rows, 0.0, 5.0, path)
