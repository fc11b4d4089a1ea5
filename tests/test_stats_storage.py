"""What the statistics need stored beside a run's per-example values: for STS each pair's two sentence identities
(normalised exact text), for retrieval each per-query value's query id; once per run, and old files without them
still load."""

from __future__ import annotations

import numpy as np

from bench.cli import main
from bench.data.beir import RetrievalSet
from bench.data.sts import STSPairs, load_stsb
from bench.results import examples_path, make_row, read_examples, run_fields, write_run
from bench.spec import RunSpec
from bench.tasks import TASKS


def shared_sentence_pairs() -> STSPairs:
    # "A man sings." occurs three times, spelled three ways; "Dogs run." twice
    left = ["A man sings.", "a  man SINGS. ", "Dogs run.", "A cat sleeps."]
    right = ["Dogs run.", "A bird flies.", " A man sings.", "A dog barks."]
    return STSPairs(left, right, np.array([1.0, 2.0, 3.0, 4.0]), 0.0, 5.0)


def test_sts_gold_names_each_pairs_sentences_by_normalised_text():
    # oracle: identities written out by hand (same normalised text <=> same index), indices into the distinct ones
    stored = TASKS.get("stsb").gold(shared_sentence_pairs())
    left, right = stored["left_sentence"], stored["right_sentence"]
    man, dogs = left[0], left[2]
    assert left[1] == man and right[2] == man and right[0] == dogs
    assert len({man, dogs, right[1], left[3], right[3]}) == 5
    assert sorted(set(left) | set(right)) == list(range(5))
    np.testing.assert_array_equal(stored["gold"], [1.0, 2.0, 3.0, 4.0])


def test_retrieval_gold_names_the_query_of_each_per_query_value():
    data = RetrievalSet(corpus_ids=["d0"], corpus_texts=["x"], query_ids=["q7", "q10", "q2"],
                        query_texts=["a", "b", "c"], qrels={"q7": {"d0": 1}, "q10": {"d0": 1}, "q2": {"d0": 1}})
    assert TASKS.get("scifact").gold(data)["query_ids"].tolist() == ["q7", "q10", "q2"]


def _write(folder, examples: dict):
    spec = RunSpec(method="pretrained", task="stsb")
    rows = [make_row(run_fields(spec, "c0de"), metric="spearman", score=1.0, layer=1, dim=16, n_examples=4)]
    return read_examples(examples_path(write_run(folder, spec, "c0de", rows, examples)))


def test_identities_round_trip_with_their_types_and_old_files_still_load(tmp_path):
    left = np.array([0, 0, 1, 3])
    arrays = _write(tmp_path / "new", {"1/16/fp32/similarity": np.linspace(0, 1, 4), "gold": np.arange(4.0),
                                       "left_sentence": left, "query_ids": np.array(["q1", "q10", "q2", "q3"])})
    assert arrays["left_sentence"].dtype.kind == "i" and arrays["left_sentence"].tolist() == left.tolist()
    assert arrays["query_ids"].tolist() == ["q1", "q10", "q2", "q3"]  # text, not pickled objects
    assert arrays["1/16/fp32/similarity"].dtype == np.float32  # values are stored as before
    old = _write(tmp_path / "old", {"1/16/fp32/similarity": np.linspace(0, 1, 4), "gold": np.arange(4.0)})
    assert sorted(old) == ["1/16/fp32/similarity", "gold"]


def test_a_real_sts_run_stores_the_identities_once(tmp_path, data_dir):
    results = tmp_path / "results"
    assert main(["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--dims", "16",
                 "--precisions", "fp32", "--data-dir", str(data_dir), "--results-dir", str(results)]) == 0
    (path,) = results.glob("*.examples.npz")
    arrays = read_examples(path)
    pairs = load_stsb(data_dir, "test").head(200)
    keys = np.array([" ".join(s.lower().split()) for s in pairs.sentences1 + pairs.sentences2])
    ids = np.r_[arrays["left_sentence"], arrays["right_sentence"]]
    assert len(ids) == 400 and all(k.endswith("similarity") for k in arrays if "/" in k)
    for i in range(400):  # same identity <=> same normalised text
        np.testing.assert_array_equal(ids == ids[i], keys == keys[i])
