"""Training data: NLI triplets (anchor, entailment, contradiction), MRPC paraphrase pairs, STS-B train."""

from __future__ import annotations

from pathlib import Path

from bench import BenchError
from bench.data import require, split_tsv_line

# name -> (relative path, columns skipped before anchor/positive/negative, has header)
TRIPLET_FILES = {
    "snli": ("snli_senteval/snli_triplets.tsv", 1, True),
    "xnli-en": ("xnli_en_test/triplets.tsv", 0, True),
    "twitter-url": ("twitter_url_corpus/triplets.tsv", 0, True),
}


def load_triplets(data_dir: Path, name: str = "snli") -> list[tuple[str, str, str]]:
    if name not in TRIPLET_FILES:
        raise BenchError(f"unknown triplet set {name!r}; known: {', '.join(TRIPLET_FILES)}")
    rel, skip, header = TRIPLET_FILES[name]
    path = require(Path(data_dir) / rel, name)
    out = []
    with open(path, encoding="utf-8") as fh:
        if header:
            next(fh, None)
        for i, line in enumerate(fh, 2 if header else 1):
            p = split_tsv_line(line, skip + 3, path, i)
            out.append((p[skip], p[skip + 1], p[skip + 2]))
    if not out:
        raise BenchError(f"training data {path} is empty; re-download it with `bench data fetch {name}`")
    return out


def load_mrpc(data_dir: Path, split: str = "train") -> list[tuple[str, str, int]]:
    """(sentence1, sentence2, is_paraphrase) from the original TSV (UTF-8 BOM, header)."""
    path = require(Path(data_dir) / "mrpc" / f"msr_paraphrase_{split}.txt", "mrpc")
    out = []
    with open(path, encoding="utf-8-sig") as fh:
        next(fh, None)
        for i, line in enumerate(fh, 2):
            p = split_tsv_line(line, 5, path, i)
            out.append((p[3], p[4], int(p[0])))
    return out
