"""Training data: NLI triplets (anchor, entailment, contradiction), MRPC paraphrase pairs, STS-B train, and
AllNLI from the hub for online users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.data import malformed, refetch_hint, require, split_tsv_line, text_lines
from bench.data.decontaminate import drop_contaminated, evaluation_sets, excluded_texts

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
    for i, line in text_lines(path):
        if i > 1 or not header:
            p = split_tsv_line(line, skip + 3, path, i)
            out.append((p[skip], p[skip + 1], p[skip + 2]))
    if not out:
        raise BenchError(f"training data {path} is empty; {refetch_hint(path)}")
    return out


def load_mrpc(data_dir: Path, split: str = "train") -> list[tuple[str, str, int]]:
    """(sentence1, sentence2, is_paraphrase) from the original TSV (UTF-8 BOM, header)."""
    path = require(Path(data_dir) / "mrpc" / f"msr_paraphrase_{split}.txt", "mrpc")
    out = []
    for i, line in text_lines(path, encoding="utf-8-sig"):
        if i > 1:  # after the header
            p = split_tsv_line(line, 5, path, i)
            if p[0] not in ("0", "1"):
                raise malformed(path, i, f"quality {p[0]!r} is not 0 or 1")
            out.append((p[3], p[4], int(p[0])))
    if not out:
        raise BenchError(f"data file {path} holds no pairs; {refetch_hint(path)}")
    return out


ALL_NLI_HUB = ("sentence-transformers/all-nli", "triplet")  # 557,850 train triplets; online users only


@dataclass(frozen=True)
class TrainingSet:
    """Training examples as text tuples. `kind` picks the base loss: "triplets" (anchor, positive, negative) train
    with MultipleNegativesRankingLoss; "scored-pairs" (sentence1, sentence2) with a gold score train with CoSENT.
    `removed`: how many examples were dropped for sharing a text with an evaluation set
    (bench/data/decontaminate.py)."""

    name: str
    kind: str
    texts: list[tuple[str, ...]]
    labels: list[float] | None = None
    removed: int = 0

    def __len__(self) -> int:
        return len(self.texts)


TRAINING_KINDS = {**{name: "triplets" for name in TRIPLET_FILES}, "all-nli": "triplets", "stsb": "scored-pairs"}


def training_kind(name: str) -> str:
    """The kind of a training set by name (which base loss it trains with), without reading it."""
    if name not in TRAINING_KINDS:
        raise BenchError(f"unknown training data {name!r}; known: {', '.join(TRAINING_KINDS)}")
    return TRAINING_KINDS[name]


def load_training_set(data_dir: Path, name: str) -> TrainingSet:
    """A local triplet file, STS-B train (the paper's low-resource setting), or AllNLI from the hub, less every
    example that shares a text with an evaluation set on disk (bench/data/decontaminate.py; the count in `removed`)."""
    raw = _load_raw(data_dir, name)
    excluded = excluded_texts(data_dir)
    labelled = list(zip(raw.texts, raw.labels or [None] * len(raw)))
    kept, removed = drop_contaminated(labelled, excluded, texts_of=lambda example: example[0])
    if not kept:
        raise BenchError(f"every example of training data {name!r} shares a text with an evaluation set "
                         f"({', '.join(evaluation_sets(data_dir))}); train on other data")
    texts, labels = [list(col) for col in zip(*kept)]
    return TrainingSet(name, raw.kind, texts, labels if raw.labels is not None else None, removed)


def _load_raw(data_dir: Path, name: str) -> TrainingSet:
    training_kind(name)
    if name in TRIPLET_FILES:
        return TrainingSet(name, "triplets", load_triplets(data_dir, name))
    if name == "stsb":
        from bench.data.sts import load_stsb

        pairs = load_stsb(data_dir, "train")
        return TrainingSet(name, "scored-pairs", list(zip(pairs.sentences1, pairs.sentences2)),
                           [float(s) for s in pairs.scores])
    return TrainingSet(name, "triplets", _all_nli_from_hub())


def _all_nli_from_hub() -> list[tuple[str, str, str]]:
    from bench.data import fetch  # its load_hub is the one place that reaches the hub (tests replace it)

    repo, config = ALL_NLI_HUB
    train = fetch._split(fetch.load_hub(repo, config, None), "train", repo)
    fetch._columns(train, ("anchor", "positive", "negative"), repo)
    triplets = list(zip(train["anchor"], train["positive"], train["negative"]))
    if not triplets:
        raise BenchError(f"hub dataset {repo} ({config}) has an empty train split; the hub copy changed: report it")
    return triplets
