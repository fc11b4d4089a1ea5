"""No evaluation sentence in training: the texts of the evaluation sets, and the filter that drops every training
example (fine-tuning triplet or pair, SMAE pre-training sentence, post-hoc head fit text) sharing one with them.

Which sets: a fixed, documented set, not the tasks of one `bench run`: every local STS set whose test file is in the
data dir (stsb's test split, all of sickr, sts12..sts16) and every BEIR-layout folder of the data dir (its queries
and its corpus documents). A checkpoint is shared by every task of a run and by later runs on other tasks, so the
exclusion may not depend on the task list; it depends on what is on disk, and the names of the sets found join the
training keys (methods/_jobs.training_key, methods/starbucks.pretrain_spec), so a checkpoint trained against one
exclusion set never answers for another. Left out: mteb tasks (`mteb:...`, their texts come through mteb) and
hub-streamed pre-training windows (hundreds of tokens each, never equal to a sentence).

Match: `normalise` (one function): case-folded, punctuation made space, whitespace collapsed and stripped; exact
equality after that. Punctuation matters: SNLI writes "A man plays a guitar." where SICK-R and STS-B write it
without the full stop or with the tokenizer's spaces ("it 's"), so case and spacing alone find 1 STS-B and 15 SICK-R
sentences in SNLI's triplets where this finds 31 and 68.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Callable, Iterable

from bench.data.beir import _corpus_path, _read_jsonl
from bench.data.sts import load_sickr, load_sts_year, load_stsb

# STS set -> (the file that says it is on disk, its loader)
STS_SETS = {
    "stsb": ("stsbenchmark/sts-test.csv", lambda d: load_stsb(d, "test")),
    "sickr": ("sick/senteval_semeval2014_tokenized/SICK_test_annotated.txt", load_sickr),
    **{f"sts{y}": (f"sts12-16/normalized/sts{y}.tsv", lambda d, y=y: load_sts_year(d, y)) for y in range(12, 17)},
}


_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """The form two texts are compared in: lowercase, punctuation (anything neither a word character nor space) a
    space, every run of whitespace one space, none leading or trailing."""
    return " ".join(_PUNCTUATION.sub(" ", text.casefold()).split())


def evaluation_sets(data_dir: Path) -> tuple[str, ...]:
    """The names of the evaluation sets on disk, sorted: what a training against them is keyed by."""
    data_dir = Path(data_dir)
    sts = [name for name, (marker, _) in STS_SETS.items() if (data_dir / marker).exists()]
    beir = [p.name for p in data_dir.iterdir() if (p / "qrels").is_dir()] if data_dir.is_dir() else []
    return tuple(sorted(sts + beir))


@functools.lru_cache(maxsize=4)
def evaluation_texts(data_dir: Path, names: tuple[str, ...]) -> frozenset[str]:
    """Every normalised text of the named sets: both sentences of every STS pair; every BEIR query and document
    (title and text joined, as retrieval encodes them). Cached: a process reads them once."""
    texts: set[str] = set()
    for name in names:
        if name in STS_SETS:
            pairs = STS_SETS[name][1](data_dir)
            texts.update(pairs.sentences1 + pairs.sentences2)
        else:
            folder = Path(data_dir) / name
            texts.update(q.get("text") or "" for q in _read_jsonl(folder / "queries.jsonl"))
            texts.update(((d.get("title") or "") + " " + (d.get("text") or "")).strip()
                         for d in _read_jsonl(_corpus_path(folder, name)))
    return frozenset(n for n in map(normalise, texts) if n)


def excluded_texts(data_dir: Path) -> frozenset[str]:
    """The normalised texts of every evaluation set on disk."""
    return evaluation_texts(Path(data_dir), evaluation_sets(data_dir))


def drop_contaminated(examples: Iterable, excluded: frozenset[str],
                      texts_of: Callable[[object], Iterable[str]] = lambda example: example) -> tuple[list, int]:
    """The examples none of whose texts (`texts_of(example)`: the example itself, a tuple of texts, by default) is an
    evaluation text, in order, and how many were dropped."""
    examples = list(examples)
    kept = [ex for ex in examples if not any(normalise(text) in excluded for text in texts_of(ex))]
    return kept, len(examples) - len(kept)
