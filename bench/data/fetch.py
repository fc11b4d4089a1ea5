"""`bench data fetch`: write the on-disk data layout (see ../shared/data/README.md) from the Hugging Face hub.

Every dataset goes through one function, `load_hub` (tests replace it with an in-memory fake), and is written into a
temporary folder first; its files are moved into the data dir only once all of them are written, each by an atomic
rename, so an interrupted fetch never leaves a half-written file that the loaders would read.
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from bench import BenchError
from bench.catalog import TASK_META
from bench.data import require

log = logging.getLogger("bench")


def load_hub(repo: str, config: str | None, revision: str | None):
    """Every split of one hub dataset config, as a `datasets.DatasetDict`. The only place that touches the network."""
    import datasets

    try:
        return datasets.load_dataset(repo, config, revision=revision)
    except Exception as exc:  # the hub's failures come in many types (offline, 404, timeouts): one clear line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"could not load {repo} ({config or 'default'}) from the Hugging Face hub: {reason}; "
                         "check the connection and that HF_HUB_OFFLINE is not set") from None


# ---- helpers shared by the writers ----------------------------------------------------------------------------

def _cell(value) -> str:
    """One TSV cell: the loaders split on tabs and read line by line, so no tab or line break may survive."""
    return "" if value is None else str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _write_tsv(path: Path, header: tuple[str, ...] | None, rows: Iterable[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        if header:
            fh.write("\t".join(header) + "\n")
        for row in tqdm(rows, desc=path.name, unit="row", leave=False, disable=os.environ.get("BENCH_QUIET") == "1"):
            fh.write("\t".join(_cell(v) for v in row) + "\n")


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same records give byte-identical .gz files
    opener = partial(gzip.GzipFile, mtime=0) if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        for rec in tqdm(records, desc=path.name, unit="row", leave=False, disable=os.environ.get("BENCH_QUIET") == "1"):
            fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))


def _split(splits, name: str, repo: str):
    if name not in splits:
        raise BenchError(f"hub dataset {repo} has no split {name!r} (it has {', '.join(splits)}); "
                         "the hub copy changed: fetch another revision or report it")
    return splits[name]


def _corpus_split(splits, eval_split: str, repo: str, config: str):
    """BEIR corpus/queries configs: the evaluation split if there is one, else the only split (its name varies
    between copies: 'corpus', 'queries', 'test'), as mteb's own loader picks it."""
    if eval_split in splits:
        return splits[eval_split]
    if len(splits) != 1:
        raise BenchError(f"hub dataset {repo} ({config}) has splits {', '.join(splits)}; "
                         f"expected one, or {eval_split!r}")
    return next(iter(splits.values()))


def _columns(ds, needed: tuple[str, ...], repo: str) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise BenchError(f"hub dataset {repo} lacks column(s) {', '.join(missing)} (it has "
                         f"{', '.join(ds.column_names)}); the hub copy changed: report it")


# ---- writers: one per file layout; each writes under `out` (a temporary data dir) -----------------------------

@dataclass(frozen=True)
class Source:
    repo: str
    revision: str | None  # pinned where MTEB pins it, so fetched data is the data MTEB scores
    needed: tuple[str, ...]  # what its task (or training loader) reads, in reading order: ensure_data checks these
    write: Callable[["Source", Path], None]


def _write_stsb(src: Source, out: Path) -> None:
    splits = load_hub(src.repo, None, src.revision)
    for hub_split, ours in (("train", "train"), ("validation", "dev"), ("test", "test")):
        ds = _split(splits, hub_split, src.repo)
        _columns(ds, ("score", "sentence1", "sentence2"), src.repo)
        # The original's columns genre, filename, year, id: MTEB's copy carries them as genre, dataset, year, sid;
        # a copy without them gets the placeholder "unknown" (the loaders read only score and sentences).
        rows = ((r.get("genre", "unknown"), r.get("dataset", "unknown"), r.get("year", "unknown"),
                 r.get("sid", i), float(r["score"]), r["sentence1"], r["sentence2"]) for i, r in enumerate(ds))
        _write_tsv(out / "stsbenchmark" / f"sts-{ours}.csv", None, rows)


def _write_sickr(src: Source, out: Path) -> None:
    ds = _split(load_hub(src.repo, None, src.revision), "test", src.repo)
    _columns(ds, ("score", "sentence1", "sentence2"), src.repo)
    folder = out / "sick" / "senteval_semeval2014_tokenized"
    header = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")
    # MTEB's copy is the 9,927 SemEval-2014 pairs in one split, without the train/trial/test division or the
    # entailment labels: all pairs go to the test file (load_sickr reads the three files together, so SICK-R is
    # unchanged), the other two hold only their header, and the entailment column is the placeholder "unknown".
    rows = ((r.get("id", i + 1), r["sentence1"], r["sentence2"], float(r["score"]), "unknown")
            for i, r in enumerate(ds))
    _write_tsv(folder / "SICK_test_annotated.txt", header, rows)
    _write_tsv(folder / "SICK_train.txt", header, [])
    _write_tsv(folder / "SICK_trial.txt", header, [])


def _write_sts_year(year: int, src: Source, out: Path) -> None:
    ds = _split(load_hub(src.repo, None, src.revision), "test", src.repo)
    _columns(ds, ("score", "sentence1", "sentence2"), src.repo)
    # MTEB's copy lacks the sub-dataset name (MSRpar, headlines, ...): placeholder "unknown", so SentEval's per-file
    # scores cannot be rebuilt from a fetched copy; the "all" setting the suite scores is unaffected.
    rows = ((r.get("dataset", "unknown"), float(r["score"]), r["sentence1"], r["sentence2"]) for r in ds)
    _write_tsv(out / "sts12-16" / "normalized" / f"sts{year}.tsv", ("dataset", "score", "sentence1", "sentence2"), rows)


def _doc_id(record: dict) -> str:
    return str(record["_id"] if "_id" in record else record["id"])


def _write_beir(name: str, eval_split: str, src: Source, out: Path) -> None:
    """MTEB's BEIR copies: configs corpus, queries and default (the qrels, one split per qrels file)."""
    folder = out / name
    corpus = _corpus_split(load_hub(src.repo, "corpus", src.revision), eval_split, src.repo, "corpus")
    queries = _corpus_split(load_hub(src.repo, "queries", src.revision), eval_split, src.repo, "queries")
    qrels = load_hub(src.repo, "default", src.revision)
    _split(qrels, eval_split, src.repo)
    _write_jsonl(folder / "corpus.jsonl.gz", ({"_id": _doc_id(d), "title": d.get("title") or "",
                                               "text": d.get("text") or ""} for d in corpus))
    _write_jsonl(folder / "queries.jsonl", ({"_id": _doc_id(q), "text": q.get("text") or ""} for q in queries))
    for split, ds in qrels.items():
        _columns(ds, ("query-id", "corpus-id", "score"), src.repo)
        _write_tsv(folder / "qrels" / f"{split}.tsv", ("query-id", "corpus-id", "score"),
                   ((r["query-id"], r["corpus-id"], int(r["score"])) for r in ds))


def snli_triplets(premises: list[str], hypotheses: list[str], labels: list[str]) -> list[tuple[str, str, str]]:
    """The SBERT/SimCSE "AllNLI triplet" recipe: per premise (first-seen order), every (entailment, contradiction)
    hypothesis combination. Checked to rebuild ../shared/data/snli_senteval/snli_triplets.tsv exactly."""
    groups: dict[str, dict[str, list[str]]] = {}
    for premise, hypothesis, label in zip(premises, hypotheses, labels):
        group = groups.setdefault(premise.strip(), {"entailment": [], "contradiction": []})
        if label in group:
            group[label].append(hypothesis.strip())
    return [(a, p, n) for a, g in groups.items() for p in g["entailment"] for n in g["contradiction"]]


def _write_snli(src: Source, out: Path) -> None:
    # The SNLI dev and test splits, as the offline copy (which is SentEval-tokenized; the hub's text is the
    # untokenized original). Hub labels: 0 entailment, 1 neutral, 2 contradiction, -1 no gold label.
    splits = load_hub(src.repo, "plain_text", src.revision)
    names = {0: "entailment", 1: "neutral", 2: "contradiction"}
    rows = []
    for hub_split, ours in (("validation", "dev"), ("test", "test")):
        ds = _split(splits, hub_split, src.repo)
        _columns(ds, ("premise", "hypothesis", "label"), src.repo)
        labels = [names.get(int(x), "none") for x in ds["label"]]
        rows += [(ours, *t) for t in snli_triplets(ds["premise"], ds["hypothesis"], labels)]
    _write_tsv(out / "snli_senteval" / "snli_triplets.tsv", ("split", "anchor", "positive", "negative"), rows)


def _write_mrpc(src: Source, out: Path) -> None:
    # GLUE's MRPC: its train + validation are the original 4,076-pair train file. GLUE lacks the original sentence
    # ids: its row index fills both id columns. Test rows without a public label (-1) are left out.
    splits = load_hub(src.repo, "mrpc", src.revision)
    header = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    for ours, hub_splits in (("train", ("train", "validation")), ("test", ("test",))):
        rows = []
        for hub_split in hub_splits:
            ds = _split(splits, hub_split, src.repo)
            _columns(ds, ("sentence1", "sentence2", "label"), src.repo)
            rows += [(r["label"], r.get("idx", i), r.get("idx", i), r["sentence1"], r["sentence2"])
                     for i, r in enumerate(ds) if int(r["label"]) >= 0]
        _write_tsv(out / "mrpc" / f"msr_paraphrase_{ours}.txt", header, rows)


# ---- the table: dataset name -> where it comes from and what it writes -----------------------------------------

# Evaluation sets: where they come from (hub copy and pinned revision) is their catalog record's; the BEIR sets
# are the catalog's retrieval tasks that name a hub source.
BEIR_HUB = {m.name: (m.source, m.revision, m.split) for m in TASK_META.values() if m.family == "retrieval" and m.source}
_SICK_FILES = tuple(f"sick/senteval_semeval2014_tokenized/{f}"
                    for f in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"))

SOURCES: dict[str, Source] = {
    "stsb": Source(TASK_META["stsb"].source, TASK_META["stsb"].revision, ("stsbenchmark/sts-test.csv",), _write_stsb),
    "sickr": Source(TASK_META["sickr"].source, TASK_META["sickr"].revision, _SICK_FILES, _write_sickr),
    **{f"sts{y}": Source(TASK_META[f"sts{y}"].source, TASK_META[f"sts{y}"].revision,
                         (f"sts12-16/normalized/sts{y}.tsv",), partial(_write_sts_year, y)) for y in range(12, 17)},
    # qrels first, as load_beir reads them: the missing-file line then names the right --data-dir
    **{name: Source(repo, rev, (f"{name}/qrels/{split}.tsv", f"{name}/queries.jsonl", f"{name}/corpus.jsonl"),
                    partial(_write_beir, name, split))
       for name, (repo, rev, split) in BEIR_HUB.items()},
    "snli": Source("stanfordnlp/snli", None, ("snli_senteval/snli_triplets.tsv",), _write_snli),
    "mrpc": Source("nyu-mll/glue", None, ("mrpc/msr_paraphrase_train.txt",), _write_mrpc),
}
# `bench data fetch` with no names: the default suite's evaluation sets plus the small BEIR sets
DEFAULT_SETS = ("stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16", "scifact", "nfcorpus", "arguana", "fiqa")


def source(name: str) -> Source:
    if name not in SOURCES:
        close = difflib.get_close_matches(name, list(SOURCES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BenchError(f"unknown dataset {name!r}: {hint}known: {', '.join(SOURCES)}")
    return SOURCES[name]


def _present(path: Path) -> bool:
    """A file the loaders accept: a BEIR corpus may be stored gzipped."""
    return path.exists() or (path.name == "corpus.jsonl" and path.with_name("corpus.jsonl.gz").exists())


def missing_files(name: str, data_dir: Path) -> list[Path]:
    return [Path(data_dir) / f for f in source(name).needed if not _present(Path(data_dir) / f)]


def _fetch_one(name: str, data_dir: Path) -> list[Path]:
    staging = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=data_dir))  # same filesystem: renames are atomic
    try:
        source(name).write(source(name), staging)
        written = []
        for tmp in sorted(p for p in staging.rglob("*") if p.is_file()):
            final = data_dir / tmp.relative_to(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            written.append(final)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(names: list[str], data_dir: Path) -> list[Path]:
    """Download datasets from the hub into `data_dir` in the loaders' layout; no names = DEFAULT_SETS.
    Returns the files written."""
    names = list(names) or list(DEFAULT_SETS)
    for name in names:
        source(name)  # every name checked before any download
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in tqdm(names, desc="fetch", unit="dataset", disable=os.environ.get("BENCH_QUIET") == "1"):
        log.info("fetching %s from %s", name, source(name).repo)
        written += _fetch_one(name, data_dir)
    return written


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE) set to a true value."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(f, "").strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


HUB_CHECK_TIMEOUT_S = 3.0  # a quick check before a run: offline machines must not hang on it


def hub_reachable() -> bool:
    """Not offline and the hub endpoint answers within a short timeout (any HTTP status counts as an answer)."""
    if hub_offline():
        return False
    from huggingface_hub.constants import ENDPOINT

    try:
        urllib.request.urlopen(urllib.request.Request(ENDPOINT, method="HEAD"), timeout=HUB_CHECK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts, refused connections, a malformed HF_ENDPOINT
        return False
    return True


def ensure_data(name: str, data_dir: Path) -> None:
    """Before a run: fetch a dataset whose files are missing when the hub answers, else raise the one-line
    missing-file error. Names `bench data fetch` does not know (a local BEIR folder) are left to their loader."""
    if name not in SOURCES:
        return
    missing = missing_files(name, data_dir)
    if not missing:
        return
    if not hub_reachable():
        require(missing[0], name)  # raises: names the file and `bench data fetch`
    log.info("%s: %s is missing; fetching it from the Hugging Face hub", name, missing[0])
    fetch([name], data_dir)
