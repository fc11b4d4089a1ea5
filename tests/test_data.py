"""The data loaders: official sizes on the real data (../shared/data or $BENCH_DATA_DIR; skipped when absent) and one
clear BenchError line for missing or malformed files, through the CLI too (exit 2, one line on stderr).

Oracle for the sizes: the official releases' counts (STS-B readme, SemEval STS 2012-16 test sets, SICK SemEval-2014,
BEIR SciFact, SNLI 1.0 via SentEval) as listed in ../shared/data/README.md.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench import BenchError
from bench.cli import main
from bench.data.beir import load_beir
from bench.data.pairs import load_mrpc, load_triplets
from bench.data.sts import load_sickr, load_sts_year, load_stsb

# ---- real data: official sizes ----------------------------------------------------------------------------------

def test_stsb_sizes(data_dir):
    assert [len(load_stsb(data_dir, s)) for s in ("train", "dev", "test")] == [5749, 1500, 1379]
    test = load_stsb(data_dir, "test")
    assert test.scores.min() >= 0 and test.scores.max() <= 5 and (test.min_score, test.max_score) == (0, 5)


def test_sickr_is_all_semeval_pairs(data_dir):
    sick = load_sickr(data_dir)
    assert len(sick) == 9927 and sick.scores.min() >= 1 and sick.scores.max() <= 5


@pytest.mark.parametrize("year,n", [(12, 3108), (13, 1500), (14, 3750), (15, 3000), (16, 1186)])
def test_sts_year_sizes(data_dir, year, n):
    assert len(load_sts_year(data_dir, year)) == n


def test_scifact_sizes(data_dir):
    data = load_beir(data_dir, "scifact", "test")
    assert len(data.corpus_ids) == len(set(data.corpus_ids)) == 5183
    assert len(data.query_ids) == 300
    assert sum(len(docs) for docs in data.qrels.values()) == 339
    assert set(data.qrels) == set(data.query_ids) and all(data.query_texts)


def test_training_sets_sizes(data_dir):
    assert len(load_triplets(data_dir, "snli")) == 6503
    assert len(load_triplets(data_dir, "twitter-url")) == 11045
    assert len(load_triplets(data_dir, "xnli-en")) == 1670
    train = load_mrpc(data_dir, "train")
    assert len(train) == 4076 and sum(label for _, _, label in train) == 2753
    assert len(load_mrpc(data_dir, "test")) == 1725


# ---- bad input: one line naming the file and the fix -------------------------------------------------------------

MISSING = [  # loader, file it needs first, dataset name in the fix
    (lambda d: load_stsb(d, "test"), "stsbenchmark/sts-test.csv", "stsb"),
    (load_sickr, "sick/senteval_semeval2014_tokenized/SICK_train.txt", "sickr"),
    (lambda d: load_sts_year(d, 14), "sts12-16/normalized/sts14.tsv", "sts14"),
    (lambda d: load_beir(d, "nfcorpus"), "nfcorpus/qrels/test.tsv", "nfcorpus"),
    (lambda d: load_triplets(d, "snli"), "snli_senteval/snli_triplets.tsv", "snli"),
    (lambda d: load_triplets(d, "xnli-en"), "xnli_en_test/triplets.tsv", "xnli-en"),
    (load_mrpc, "mrpc/msr_paraphrase_train.txt", "mrpc"),
]


@pytest.mark.parametrize("load,rel,name", MISSING, ids=[m[2] for m in MISSING])
def test_missing_file_is_one_line_naming_it_and_the_fetch(tmp_path, load, rel, name):
    with pytest.raises(BenchError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"missing data file {tmp_path / rel}" in msg
    assert f"`bench data fetch {name} --data-dir {tmp_path}`" in msg


def test_missing_beir_corpus_names_the_corpus(tmp_path):
    (tmp_path / "mine" / "qrels").mkdir(parents=True)
    (tmp_path / "mine" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "mine" / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    with pytest.raises(BenchError, match=f"missing data file {tmp_path / 'mine' / 'corpus.jsonl'}: run "
                                         f"`bench data fetch mine --data-dir {tmp_path}`"):
        load_beir(tmp_path, "mine")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


STSB_OK = "main-news\tMSRpar\t2012\t1\t4.0\tA man.\tA person.\n"
MALFORMED = [  # loader, file, content, expected message part
    (lambda d: load_stsb(d, "test"), "stsbenchmark/sts-test.csv",
     STSB_OK * 2 + "main-news\tMSRpar\t2012\t1\t4.0\tonly one\n",
     "line 3: expected at least 7 tab-separated columns, got 6"),
    (lambda d: load_stsb(d, "test"), "stsbenchmark/sts-test.csv", STSB_OK + "g\tf\ty\t2\tfour\ta\tb\n",
     "line 2: score 'four' is not a number"),
    (lambda d: load_sts_year(d, 12), "sts12-16/normalized/sts12.tsv",
     "dataset\tscore\tsentence1\tsentence2\nMSRpar\t\ta\tb\n", "line 2: score '' is not a number"),
    (lambda d: load_triplets(d, "snli"), "snli_senteval/snli_triplets.tsv",
     "split\tanchor\tpositive\tnegative\ndev\ta\tb\tc\ndev\ta\tb\n",
     "line 3: expected at least 4 tab-separated columns"),
]


@pytest.mark.parametrize("load,rel,content,expected", MALFORMED, ids=["stsb-columns", "stsb-score", "sts12-score",
                                                                      "snli-columns"])
def test_malformed_line_is_one_line_naming_file_and_line(tmp_path, load, rel, content, expected):
    path = _write(tmp_path / rel, content)
    with pytest.raises(BenchError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"malformed data file {path}, {expected}" in msg


def test_malformed_sick_score_names_the_file_and_line(tmp_path):
    folder = tmp_path / "sick" / "senteval_semeval2014_tokenized"
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    _write(folder / "SICK_train.txt", header + "1\ta\tb\t4.5\tNEUTRAL\n")
    _write(folder / "SICK_trial.txt", header + "2\ta\tb\tNEUTRAL\t4.5\n")
    _write(folder / "SICK_test_annotated.txt", header)
    with pytest.raises(BenchError, match=f"malformed data file {folder / 'SICK_trial.txt'}, line 2: score 'NEUTRAL'"):
        load_sickr(tmp_path)


def test_malformed_beir_files(tmp_path):
    folder = tmp_path / "mine"
    qrels = _write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(BenchError, match=f"malformed data file {qrels}, line 2: relevance 'high' is not a number"):
        load_beir(tmp_path, "mine")
    _write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    queries = _write(folder / "queries.jsonl", '{"_id": "q1", "text": "q"}\n{"_id": "q2", \n')
    with pytest.raises(BenchError, match=f"malformed data file {queries}, line 2: not JSON "):
        load_beir(tmp_path, "mine")
    _write(folder / "queries.jsonl", '{"_id": "q1", "text": "q"}\n')
    corpus = folder / "corpus.jsonl.gz"
    corpus.write_bytes(gzip.compress(b'{"_id": "d1", "text": "doc"}\n')[:-6])  # truncated download
    with pytest.raises(BenchError, match=f"malformed data file {corpus}, after line 1: damaged gzip stream "):
        load_beir(tmp_path, "mine")


def test_empty_sts_file_is_an_error(tmp_path):
    path = _write(tmp_path / "sts12-16" / "normalized" / "sts13.tsv", "dataset\tscore\tsentence1\tsentence2\n")
    with pytest.raises(BenchError, match=f"data file {path} holds no pairs"):
        load_sts_year(tmp_path, 13)


# ---- the CLI: exit 2 and one line on stderr ---------------------------------------------------------------------

def _run(tmp_path: Path, task: str) -> list[str]:
    return ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", task, "--data-dir", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]


def test_cli_malformed_data_exits_2_with_one_line(tmp_path, capsys):
    path = _write(tmp_path / "data" / "sts12-16" / "normalized" / "sts15.tsv",
                  "dataset\tscore\tsentence1\tsentence2\nx\t1.0\ta\tb\nx\tn/a\ta\tb\n")
    assert main(_run(tmp_path, "sts15")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"malformed data file {path}, line 3: score 'n/a' is not a number" in err


def test_cli_missing_data_offline_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(_run(tmp_path, "stsb")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"missing data file {tmp_path / 'data' / 'stsbenchmark' / 'sts-test.csv'}" in err
    assert f"`bench data fetch stsb --data-dir {tmp_path / 'data'}`" in err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))
