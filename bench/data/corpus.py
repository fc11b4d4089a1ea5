"""Plain text for SMAE pre-training: sentences from the data directory, or a Hugging Face dataset streamed.

A corpus is named by a string (recorded in the pre-training spec, so it keys the cached checkpoint):
- local sources joined with "+", e.g. the default `snli+xnli-en+twitter-url`: every sentence of those triplet
  files, deduplicated, less every sentence of an evaluation set on disk (bench/data/decontaminate.py: SNLI shares
  31 sentences with STS-B test, 68 with SICK-R, 51 with STS12, 50 with STS15; XNLI-en test and the Twitter URL
  train split share none). About 42k sentences in all.
- `stsb-train` and `scifact-corpus` exist but are opt-in, because they leak into evaluation: STS-B train is built
  from the SemEval STS 2012-2016 sets and shares thousands of sentences with our STS12-16 test sets (1,907 of
  STS12, 3,346 of STS14, ...), and the SciFact corpus is the very collection searched at test time (pre-training on
  it is unsupervised domain adaptation: report it as such, never as a plain score).
- `hf:<dataset>[:<config>]`, e.g. `hf:HuggingFaceFW/fineweb:sample-100BT` (the paper's): the `text` field of the
  train split, streamed, shuffled with a seeded buffer, each document cut to a random window of the token budget
  (the paper: random 510-token windows). A local dataset folder works the same way (`hf:/path/to/folder`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Iterator

from tqdm.auto import tqdm

from bench import BenchError
from bench.data.decontaminate import drop_contaminated, excluded_texts

DEFAULT_CORPUS = "snli+xnli-en+twitter-url"
HUB_PREFIX = "hf:"
SHUFFLE_BUFFER = 10_000


def _triplet_sentences(name: str) -> Callable[[Path], list[str]]:
    def read(data_dir: Path) -> list[str]:
        from bench.data.pairs import load_triplets

        return [s for triplet in load_triplets(data_dir, name) for s in triplet]
    return read


def _stsb_train(data_dir: Path) -> list[str]:
    from bench.data.sts import load_stsb

    pairs = load_stsb(data_dir, "train")
    return pairs.sentences1 + pairs.sentences2


def _scifact_corpus(data_dir: Path) -> list[str]:
    from bench.data.beir import _corpus_path, _read_jsonl

    docs = _read_jsonl(_corpus_path(Path(data_dir) / "scifact", "scifact"))
    return [(d.get("title", "") + " " + d.get("text", "")).strip() for d in docs]


LOCAL_SOURCES: dict[str, Callable[[Path], list[str]]] = {
    "snli": _triplet_sentences("snli"),
    "xnli-en": _triplet_sentences("xnli-en"),
    "twitter-url": _triplet_sentences("twitter-url"),
    "stsb-train": _stsb_train,  # opt-in: leaks into STS12-16 (see the module docstring)
    "scifact-corpus": _scifact_corpus,  # opt-in: the retrieval corpus itself
}


def load_local_corpus(data_dir: Path, name: str = DEFAULT_CORPUS) -> list[str]:
    """Every non-empty text of the named local sources, first occurrence kept, in file order, none of an evaluation
    set."""
    return local_corpus(data_dir, name)[0]


def local_corpus(data_dir: Path, name: str = DEFAULT_CORPUS) -> tuple[list[str], int]:
    """load_local_corpus's texts, and how many distinct texts were dropped for being evaluation texts."""
    texts: dict[str, None] = {}
    for source in name.split("+"):
        if source not in LOCAL_SOURCES:
            raise BenchError(f"unknown corpus source {source!r}; join some of {', '.join(LOCAL_SOURCES)} with '+', "
                             f"or stream a hub dataset with {HUB_PREFIX}<dataset>[:<config>]")
        texts.update(dict.fromkeys(t.strip() for t in LOCAL_SOURCES[source](data_dir) if t.strip()))
    return drop_contaminated(texts, excluded_texts(data_dir), texts_of=lambda text: (text,))


def random_window(text: str, tokenizer, max_tokens: int, rng: random.Random) -> str:
    """A document longer than max_tokens tokens is cut to max_tokens tokens starting at a random word start
    (cut on character offsets, so the text stays untouched inside the window)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets, words = enc["offset_mapping"], enc.word_ids()
    if len(offsets) <= max_tokens:
        return text
    last = len(offsets) - max_tokens
    starts = [i for i in range(last + 1) if i == 0 or words[i] != words[i - 1]] or [0]
    start = rng.choice(starts)
    return text[offsets[start][0]:offsets[start + max_tokens - 1][1]]


def hub_texts(name: str, tokenizer, max_tokens: int, seed: int) -> Iterator[str]:
    """`hf:<dataset>[:<config>]`: the train split's `text` field, streamed, buffer-shuffled, windowed; endless
    (a new shuffle seed each pass)."""
    import datasets

    repo, _, config = name[len(HUB_PREFIX):].partition(":")
    rng = random.Random(seed)
    for epoch in range(1 << 30):
        try:
            stream = datasets.load_dataset(repo, config or None, split="train", streaming=True)
        except Exception as exc:  # offline, 404, no train split: the hub's failures come in many types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BenchError(f"cannot stream corpus {name!r} ({reason}); use a local corpus such as "
                             f"{DEFAULT_CORPUS!r}, or check the connection and that HF_HUB_OFFLINE is unset") from None
        n = 0
        for row in stream.shuffle(seed=seed + epoch, buffer_size=SHUFFLE_BUFFER):
            text = (row.get("text") or "").strip()
            if text:
                n += 1
                yield random_window(text, tokenizer, max_tokens, rng)
        if n == 0:
            raise BenchError(f"corpus {name!r} has no non-empty `text` field in its train split; pick a text dataset")


def corpus_texts(name: str, data_dir: Path, tokenizer, n_texts: int, max_tokens: int,
                 seed: int) -> tuple[list[str], int]:
    """The pre-training texts, and how many evaluation texts were dropped from them. Local: every sentence of the
    named sources (the training loop orders them, epoch after epoch). Hub: the first `n_texts` windows of the
    seeded stream (pass the run's steps x examples per step, so each document is read once, as the paper's one
    epoch), held in memory; not filtered (a window of hundreds of tokens is never an evaluation sentence): 0."""
    if not name.startswith(HUB_PREFIX):
        return local_corpus(data_dir, name)
    stream = hub_texts(name, tokenizer, max_tokens, seed)
    return [next(stream) for _ in tqdm(range(n_texts), desc=f"stream {name}", unit="text", leave=False,
                                       disable=os.environ.get("BENCH_QUIET") == "1")], 0
