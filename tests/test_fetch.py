"""`bench data fetch` and auto-fetch, against a local fake of the hub (never the network).

The fake replaces `bench.data.fetch.load_hub` with in-memory `datasets.DatasetDict`s shaped like the hub copies; the
check is that the suite's own loaders read the written files back and give the fake's rows. Oracles: the shared SNLI
triplet file (rebuilt from its raw SentEval files) and mteb's own task metadata (hub repo and pinned revision).
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

import bench.data.fetch as fetch_mod
from bench import BenchError
from bench.cli import main
from bench.data.beir import load_beir
from bench.data.fetch import SOURCES, ensure_data, fetch, hub_reachable, snli_triplets
from bench.data.pairs import load_mrpc, load_triplets
from bench.data.sts import load_sickr, load_sts_year, load_stsb

STS_ROWS = {"sentence1": ["A man plays a flute.", "Tab\there", 'She said "no".', "Line\nbreak", "x", "y"],
            "sentence2": ["A man plays music.", "Tab there", "She refused.", "Line break", "z", "w"],
            "score": [3.8, 5.0, 2.25, 4.0, 0.0, 1.5]}
CLEAN1 = ["A man plays a flute.", "Tab here", 'She said "no".', "Line break", "x", "y"]  # tabs/newlines -> space


def _sts(n: int = 6, **extra) -> Dataset:
    return Dataset.from_dict({**{k: v[:n] for k, v in STS_ROWS.items()}, **{k: v[:n] for k, v in extra.items()}})


def _beir_hub() -> dict:
    corpus = Dataset.from_dict({"_id": ["d1", "d2", "d3"], "title": ["T1", "", "T3"],
                                "text": ["first doc", "second\tdoc", "third doc"]})
    queries = Dataset.from_dict({"_id": ["q1", "q2", "q3"], "text": ["query one", "query two", "query three"]})
    qrels = DatasetDict({"test": Dataset.from_dict({"query-id": ["q1", "q1", "q2"], "corpus-id": ["d1", "d3", "d2"],
                                                    "score": [1, 2, 1]}),
                         "train": Dataset.from_dict({"query-id": ["q3"], "corpus-id": ["d2"], "score": [1]})})
    return {"corpus": DatasetDict({"corpus": corpus}), "queries": DatasetDict({"queries": queries}), "default": qrels}


def _snli_hub() -> DatasetDict:
    # premise A: 2 entailments x 1 contradiction; premise B: a neutral and a no-gold (-1) row, no triplet
    val = Dataset.from_dict({"premise": ["A", "A", "A", "B", "B", "A"],
                             "hypothesis": ["A-ent1", "A-con", "A-neu", "B-neu", "B-none", "A-ent2"],
                             "label": [0, 2, 1, 1, -1, 0]})
    test = Dataset.from_dict({"premise": ["C", "C"], "hypothesis": ["C-con", "C-ent"], "label": [2, 0]})
    return DatasetDict({"validation": val, "test": test, "train": test})


def _mrpc_hub() -> DatasetDict:
    def split(n, labels):
        return Dataset.from_dict({"sentence1": [f"s1-{i}" for i in range(n)],
                                  "sentence2": [f"s2-{i}" for i in range(n)], "label": labels, "idx": list(range(n))})
    return DatasetDict({"train": split(3, [1, 0, 1]), "validation": split(2, [0, 1]), "test": split(3, [1, -1, 0])})


FAKE_HUB = {
    ("mteb/stsbenchmark-sts", None): DatasetDict({
        "train": _sts(genre=["main-news"] * 6, dataset=["MSRpar"] * 6, year=["2012"] * 6,
                      sid=[str(i) for i in range(6)]),
        "validation": _sts(4), "test": _sts(5)}),
    ("mteb/sickr-sts", None): DatasetDict({"test": _sts()}),
    **{(f"mteb/sts{y}-sts", None): DatasetDict({"test": _sts(y - 10)}) for y in range(12, 17)},
    **{("mteb/nfcorpus", config): dd for config, dd in _beir_hub().items()},
    ("stanfordnlp/snli", "plain_text"): _snli_hub(),
    ("nyu-mll/glue", "mrpc"): _mrpc_hub(),
}


@pytest.fixture
def hub(monkeypatch) -> list:
    """The fake hub; returns the list of (repo, config) loaded, and checks each load asks for the pinned revision."""
    calls = []

    def fake_load_hub(repo, config, revision):
        assert any(s.repo == repo and s.revision == revision for s in SOURCES.values()), (repo, revision)
        calls.append((repo, config))
        if (repo, config) not in FAKE_HUB:
            raise BenchError(f"could not load {repo} ({config}) from the Hugging Face hub: not in the fake")
        return FAKE_HUB[(repo, config)]

    monkeypatch.setattr(fetch_mod, "load_hub", fake_load_hub)
    return calls


def test_stsb_written_files_load_back(hub, tmp_path):
    written = fetch(["stsb"], tmp_path)
    assert sorted(p.name for p in written) == ["sts-dev.csv", "sts-test.csv", "sts-train.csv"]
    for split, n in (("train", 6), ("dev", 4), ("test", 5)):
        pairs = load_stsb(tmp_path, split)
        assert pairs.sentences1 == CLEAN1[:n]
        assert pairs.sentences2 == [s.replace("\t", " ") for s in STS_ROWS["sentence2"][:n]]
        np.testing.assert_array_equal(pairs.scores, STS_ROWS["score"][:n])
    first = (tmp_path / "stsbenchmark" / "sts-train.csv").read_text().splitlines()[0].split("\t")
    assert first[:4] == ["main-news", "MSRpar", "2012", "0"]  # the original's metadata columns, where the hub has them
    placeholder = (tmp_path / "stsbenchmark" / "sts-test.csv").read_text().splitlines()[0].split("\t")
    assert placeholder[:3] == ["unknown"] * 3


def test_sickr_and_sts_years_load_back(hub, tmp_path):
    fetch(["sickr", "sts12", "sts13", "sts14", "sts15", "sts16"], tmp_path)
    sick = load_sickr(tmp_path)
    assert sick.sentences1 == CLEAN1 and sick.scores.tolist() == STS_ROWS["score"]
    for year in range(12, 17):
        pairs = load_sts_year(tmp_path, year)
        assert pairs.sentences1 == CLEAN1[:year - 10]
        assert pairs.scores.tolist() == STS_ROWS["score"][:year - 10]


def test_beir_written_files_load_back(hub, tmp_path):
    fetch(["nfcorpus"], tmp_path)
    data = load_beir(tmp_path, "nfcorpus", "test")
    assert data.corpus_ids == ["d1", "d2", "d3"]
    assert data.corpus_texts == ["T1 first doc", "second\tdoc", "T3 third doc"]  # JSON keeps the text as it is
    assert data.query_ids == ["q1", "q2"] and data.query_texts == ["query one", "query two"]
    assert data.qrels == {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    assert load_beir(tmp_path, "nfcorpus", "train").qrels == {"q3": {"d2": 1}}  # every qrels split is written
    assert (tmp_path / "nfcorpus" / "corpus.jsonl.gz").exists()


def test_snli_triplets_load_back(hub, tmp_path):
    fetch(["snli"], tmp_path)
    assert load_triplets(tmp_path, "snli") == [("A", "A-ent1", "A-con"), ("A", "A-ent2", "A-con"),
                                               ("C", "C-ent", "C-con")]
    lines = (tmp_path / "snli_senteval" / "snli_triplets.tsv").read_text().splitlines()
    splits = [line.split("\t")[0] for line in lines]
    assert splits == ["split", "dev", "dev", "test"]  # the hub's train split is not written


def test_triplet_recipe_rebuilds_the_shared_file(data_dir):
    """Oracle: the offline snli_triplets.tsv, rebuilt from its raw SentEval files by the same function."""
    raw = data_dir / "snli_senteval" / "raw"
    rebuilt = []
    for split in ("dev", "test"):
        columns = [(raw / f"{f}.{split}").read_text(encoding="utf-8").split("\n") for f in ("s1", "s2", "labels")]
        rebuilt += [(split, *t) for t in snli_triplets(*columns)]
    with open(data_dir / "snli_senteval" / "snli_triplets.tsv", encoding="utf-8") as fh:
        shipped = [tuple(line.rstrip("\n").split("\t")) for line in fh][1:]
    assert rebuilt == shipped


def test_mrpc_load_back(hub, tmp_path):
    fetch(["mrpc"], tmp_path)
    train = load_mrpc(tmp_path, "train")  # GLUE train + validation = the original train file
    assert [(a, label) for a, _, label in train] == [("s1-0", 1), ("s1-1", 0), ("s1-2", 1), ("s1-0", 0), ("s1-1", 1)]
    assert load_mrpc(tmp_path, "test") == [("s1-0", "s2-0", 1), ("s1-2", "s2-2", 0)]  # unlabelled (-1) row left out


def test_unknown_name_suggests_and_downloads_nothing(hub, tmp_path):
    with pytest.raises(BenchError, match="unknown dataset 'nfcorpos': did you mean 'nfcorpus'"):
        fetch(["stsb", "nfcorpos"], tmp_path)
    assert hub == [] and list(tmp_path.iterdir()) == []


def test_failed_fetch_leaves_no_partial_dataset(hub, tmp_path):
    """arguana is not in the fake: its corpus load fails, nothing of it (or of the temp dir) remains."""
    with pytest.raises(BenchError, match="could not load mteb/arguana"):
        fetch(["arguana"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refetch_replaces_stale_files(hub, tmp_path):
    stale = tmp_path / "sts12-16" / "normalized" / "sts12.tsv"
    stale.parent.mkdir(parents=True)
    stale.write_text("dataset\tscore\tsentence1\tsentence2\nold\t1.0\tstale\tstale\n")
    fetch(["sts12"], tmp_path)
    assert load_sts_year(tmp_path, 12).sentences1 == CLEAN1[:2]


def test_hub_copy_without_a_needed_column_is_one_error(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch_mod, "load_hub", lambda repo, config, revision: DatasetDict(
        {"test": Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"]})}))
    with pytest.raises(BenchError, match="mteb/sts13-sts lacks column\\(s\\) score"):
        fetch(["sts13"], tmp_path)


def test_ensure_data_offline_gives_the_missing_file_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError) as err:
        ensure_data("nfcorpus", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "nfcorpus" / "qrels" / "test.tsv") in msg
    assert f"`bench data fetch nfcorpus --data-dir {tmp_path}`" in msg
    assert hub == []


def test_ensure_data_fetches_what_is_missing_once(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "hub_reachable", lambda: True)
    ensure_data("nfcorpus", tmp_path)
    assert len(load_beir(tmp_path, "nfcorpus").query_ids) == 2
    n_loads = len(hub)
    ensure_data("nfcorpus", tmp_path)  # present now: no second download
    assert len(hub) == n_loads == 3


def test_ensure_data_leaves_present_and_unknown_sets_alone(hub, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "hub_reachable", lambda: pytest.fail("no hub check for present data"))
    ensure_data("scifact", data_dir)  # shipped with corpus.jsonl.gz, not corpus.jsonl
    ensure_data("my-own-beir-folder", tmp_path)  # not fetchable: its loader reports what is missing
    assert hub == []


def test_hub_reachable_offline_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    assert hub_reachable() is False


def test_hub_reachable_follows_the_endpoint_answer(monkeypatch):
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)

    def refused(request, timeout):
        assert timeout <= 5  # a quick check, never a long hang
        raise urllib.error.URLError("connection refused")

    def http_error(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, None)

    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", refused)
    assert hub_reachable() is False
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", http_error)
    assert hub_reachable() is True  # an HTTP answer, even an error, means the hub is there


def test_every_catalogued_task_is_registered_and_fetchable():
    from bench.catalog import TASK_META
    from bench.tasks import TASKS

    assert set(TASK_META) <= set(TASKS.names())
    assert set(TASK_META) - set(SOURCES) == {"cqadupstack"}  # 12 separate sub-forum sets on the hub


def test_sources_are_the_copies_mteb_pins():
    """Oracle: mteb 2.x's task metadata names the same hub repo, revision and split for every set MTEB has."""
    import mteb

    from bench.catalog import TASK_META

    mteb_names = {"stsb": "STSBenchmark", "sickr": "SICK-R", "sts12": "STS12", "sts13": "STS13", "sts14": "STS14",
                  "sts15": "STS15", "sts16": "STS16", "scifact": "SciFact", "nfcorpus": "NFCorpus",
                  "arguana": "ArguAna", "fiqa": "FiQA2018", "scidocs": "SCIDOCS", "trec-covid": "TRECCOVID",
                  "quora": "QuoraRetrieval", "nq": "NQ", "hotpotqa": "HotpotQA", "climate-fever": "ClimateFEVER",
                  "dbpedia-entity": "DBPedia", "fever": "FEVER", "msmarco": "MSMARCO", "touche2020": "Touche2020"}
    for name, task_name in mteb_names.items():
        meta = mteb.get_task(task_name).metadata
        assert (SOURCES[name].repo, SOURCES[name].revision) == (meta.dataset["path"], meta.dataset["revision"]), name
        assert [TASK_META[name].split] == meta.eval_splits, name


def test_real_hub_loader_offline_is_one_error_line():
    """The real `load_hub` with the hub switched off (conftest): no network, one BenchError line."""
    with pytest.raises(BenchError) as err:
        fetch_mod.load_hub("elastic-bench/not-a-dataset", None, None)
    assert "\n" not in str(err.value) and "could not load elastic-bench/not-a-dataset" in str(err.value)


def test_cli_fetch_prints_the_written_files(hub, tmp_path, capsys):
    assert main(["data", "fetch", "sts15", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "sts12-16" / "normalized" / "sts15.tsv")


def test_cli_fetch_unknown_name_exits_2_with_one_line(hub, tmp_path, capsys):
    assert main(["data", "fetch", "stsbb", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'stsb'" in err


def test_bench_run_fetches_missing_data_by_itself(hub, tmp_path, monkeypatch, capsys):
    """End to end: `bench run` on an empty data dir with the (fake) hub answering fetches STS-B, then scores it."""
    from bench.results import load_results

    monkeypatch.setattr(fetch_mod, "hub_reachable", lambda: True)
    args = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb",
            "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "data" / "stsbenchmark" / "sts-test.csv").exists()
    rows = load_results(tmp_path / "results")
    assert set(rows.loc[rows.metric == "spearman", "n_examples"]) == {5}  # the fake's 5 test pairs


def test_any_beir_folder_in_the_data_dir_is_a_retrieval_task(hub, tmp_path, monkeypatch):
    """The retrieval family takes a BEIR folder by its name even when no task registers that name."""
    from bench.tasks import TASKS
    from bench.tasks.retrieval import RetrievalTask

    fetch(["nfcorpus"], tmp_path)
    (tmp_path / "nfcorpus").rename(tmp_path / "my-set")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert TASKS.get("my-set") == RetrievalTask.local("my-set")
    assert TASKS.expand("stsb,my-set") == ["stsb", "my-set"]
    with pytest.raises(BenchError, match="unknown task 'my-sets'"):
        TASKS.get("my-sets")
