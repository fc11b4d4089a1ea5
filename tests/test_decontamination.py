"""No evaluation sentence in training (bench/data/decontaminate.py): a training example, pre-training sentence or
head fit text that shares a text with an evaluation set on disk is dropped and counted, a clean one stays, the count
reaches the run's rows, and the exclusion set keys the checkpoints. No library does this filter; the oracle is the
planted data: which examples hold an evaluation sentence is known by construction."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bench.cli import main
from bench.data.corpus import local_corpus
from bench.data.decontaminate import evaluation_sets, normalise
from bench.data.pairs import load_training_set
from bench.results import load_results
from bench.spec import RunSpec
from methods import METHODS, RunContext
from methods._jobs import Job, checkpoint_dir

EVAL_SENTENCE = "A man is playing a guitar."
PLANTED = "  a MAN is  playing a   guitar "  # the evaluation sentence, other case, spacing, no full stop
QUERY = "What causes rain?"


def _data(folder: Path, with_beir: bool = True) -> Path:
    """A data dir: one STS-B test pair, one BEIR set (a query and a document), and SNLI triplets of which the
    second holds the STS-B sentence and the third the query, each written differently."""
    (folder / "stsbenchmark").mkdir(parents=True)
    (folder / "stsbenchmark" / "sts-test.csv").write_text(
        f"main-captions\tMSRvid\t2012test\t0001\t5.000\t{EVAL_SENTENCE}\tA man plays the guitar.\n")
    if with_beir:
        (folder / "tinyir" / "qrels").mkdir(parents=True)
        (folder / "tinyir" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        (folder / "tinyir" / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": QUERY}) + "\n")
        document = {"_id": "d1", "title": "", "text": "Clouds."}
        (folder / "tinyir" / "corpus.jsonl").write_text(json.dumps(document) + "\n")
    (folder / "snli_senteval").mkdir()
    rows = [("A dog runs.", "An animal moves.", "A cat sleeps."),
            ("Someone sings.", PLANTED, "Nobody makes music."),
            ("what causes RAIN", "Why does it rain?", "A sunny day."),
            ("Two kids play.", "Children are playing.", "The kids sleep.")]
    (folder / "snli_senteval" / "snli_triplets.tsv").write_text(
        "id\tanchor\tpositive\tnegative\n" + "".join(f"{i}\t" + "\t".join(r) + "\n" for i, r in enumerate(rows)))
    return folder


def test_normalise_ignores_case_spacing_and_punctuation():
    assert normalise(PLANTED) == normalise(EVAL_SENTENCE) == "a man is playing a guitar"
    assert normalise("It 's here .") == normalise("it's here") != normalise("its here")


def test_a_planted_evaluation_sentence_is_dropped_and_counted_and_a_clean_one_stays(tmp_path):
    data = load_training_set(_data(tmp_path), "snli")
    assert data.texts == [("A dog runs.", "An animal moves.", "A cat sleeps."),
                          ("Two kids play.", "Children are playing.", "The kids sleep.")]
    assert data.removed == 2  # the STS-B sentence and the BEIR query


def test_pre_training_sentences_are_filtered_one_by_one(tmp_path):
    texts, removed = local_corpus(_data(tmp_path), "snli")
    assert removed == 2 and len(texts) == 10  # 12 distinct sentences, less the two evaluation ones
    assert PLANTED.strip() not in texts and "what causes RAIN" not in texts and "Someone sings." in texts


def test_the_pre_training_count_reaches_its_rows(tmp_path):
    """The SMAE stage on the planted corpus: its `smae_sentences_removed` row counts the two evaluation sentences."""
    import methods.starbucks as sb
    from bench.runner import make_specs
    from bench.spec import freeze_params
    from bench.suites import get_suite
    from methods.starbucks_srl import resolve_targets

    spec = make_specs(get_suite("smoke"), "starbucks")[0]
    params = sb.Starbucks.Params(**{**dict(spec.params), "corpus": "snli", "pretrain_steps": 1})
    spec = replace(spec, params=freeze_params(vars(params)))
    stage = sb.pretrain(spec, RunContext(_data(tmp_path / "data"), tmp_path, tmp_path / "cache"), params,
                        resolve_targets(None, 2, 64))
    assert [r["score"] for r in stage.rows if r["metric"] == "smae_sentences_removed"] == [2.0]


def test_the_evaluation_sets_on_disk_key_the_checkpoints(tmp_path):
    with_ir, without_ir = _data(tmp_path / "a"), _data(tmp_path / "b", with_beir=False)
    assert evaluation_sets(with_ir) == ("stsb", "tinyir") and evaluation_sets(without_ir) == ("stsb",)
    spec, job = RunSpec(method="full", task="stsb", train_data="snli", backbone="tiny-random-bert"), Job("", None, ())
    folders = {checkpoint_dir(METHODS.get("full")(), spec, RunContext(d, tmp_path, tmp_path), job)
               for d in (with_ir, without_ir)}
    assert len(folders) == 2  # a checkpoint trained against one exclusion set never answers for the other


def test_the_counts_reach_the_run_rows(data_dir, tmp_path):
    """A smoke run on the real data: SNLI's triplets that hold a sentence of an evaluation set on disk (STS-B test,
    SICK-R, STS12-16, SciFact) are counted in the rows of a trained method and of a post-hoc head (whose fit set
    comes from the same triplets); a second run on the reused checkpoints records the same counts."""
    args = ["run", "--suite", "smoke", "--methods", "full,pca", "--tasks", "stsb", "--precisions", "fp32",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
            "--device", "cpu"]
    expected = load_training_set(data_dir, "snli").removed
    assert expected > 0
    assert main(args) == 0
    args[args.index("--precisions") + 1] = "int8"  # another run: the checkpoints are reused, the counts read back
    assert main(args) == 0
    rows = load_results(tmp_path / "r")
    removed = rows[rows["metric"] == "train_examples_removed"]
    assert len(removed) == 4 and removed.groupby("method")["run_id"].nunique().to_dict() == {"full": 2, "pca": 2}
    assert (removed["score"] == expected).all() and (removed["split"] == "train").all()


def test_the_readme_quotes_the_counts_on_the_shared_data(data_dir):
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    snli, corpus = load_training_set(data_dir, "snli"), local_corpus(data_dir)
    assert f"SNLI loses {snli.removed:,} of its {len(snli) + snli.removed:,} triplets" in readme
    assert f"SMAE corpus {corpus[1]:,} of {len(corpus[0]) + corpus[1]:,} sentences" in readme
