"""Cells beyond the prefix grid (bench/variants.py): random coordinate subsets and asymmetric query/document layers.

Oracles: for a query layer, MiniLM truly truncated to the query layer and to the document layer (transformers'
num_hidden_layers: the blocks above are never built), ranked by numpy and scored by nDCG@10's formula
(trec_eval's: gain = grade, discount log2(rank + 1)); for a random subset, the coordinates picked by hand and scipy's
Spearman of the cosines; numpy for the report's mean, spread and counts.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from bench import BenchError
from bench.data.sts import load_stsb
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid
from bench.report import variants as report_variants
from bench.spec import EvalSpec, SubModel
from bench.tasks import TASKS
from bench.tasks.retrieval import RetrievalTask
from bench.catalog import local_beir_meta
from bench.transforms import truncate
from bench.variants import QueryLayer, RandomSubset, example_key, subset_coordinates, variant_cells
from methods import Checkpoint

N_QUERIES, N_OTHER_DOCS = 12, 120


@pytest.fixture(scope="module")
def mini_scifact(data_dir, tmp_path_factory):
    """A BEIR folder of real SciFact text: 12 test queries, their relevant abstracts and 120 others."""
    root = tmp_path_factory.mktemp("data")
    qrels = pd.read_csv(data_dir / "scifact" / "qrels" / "test.tsv", sep="\t", dtype=str)
    queries = sorted(qrels["query-id"].unique(), key=int)[:N_QUERIES]
    qrels = qrels[qrels["query-id"].isin(queries)]
    with gzip.open(data_dir / "scifact" / "corpus.jsonl.gz", "rt") as fh:
        corpus = [json.loads(line) for line in fh]
    relevant = set(qrels["corpus-id"])
    docs = [d for d in corpus if d["_id"] in relevant] + [d for d in corpus if d["_id"] not in relevant][:N_OTHER_DOCS]
    folder = root / "mini-scifact"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    with open(data_dir / "scifact" / "queries.jsonl") as fh:
        texts = [json.loads(line) for line in fh]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in texts if q["_id"] in queries))
    qrels.to_csv(folder / "qrels" / "test.tsv", sep="\t", index=False)
    return root


def ndcg_at_10(scores: np.ndarray, doc_ids: list[str], judged: dict[str, int]) -> float:
    order = np.argsort(-scores, kind="stable")[:10]
    dcg = sum(judged.get(doc_ids[i], 0) / np.log2(rank + 2) for rank, i in enumerate(order))
    ideal = sorted(judged.values(), reverse=True)[:10]
    return 100 * dcg / sum(g / np.log2(rank + 2) for rank, g in enumerate(ideal))


def test_query_layer_cells_equal_two_truly_truncated_models(mini_scifact):
    task = RetrievalTask(local_beir_meta("mini-scifact"))
    spec = EvalSpec(layers=(2, 5), dims=(384,), precisions=("fp32",), max_doc_len=64, asymmetric_dims=(384,),
                    variant_precisions=("fp32",))
    data = task.load(mini_scifact, spec)
    rows, examples = evaluate_grid(Encoder.named("minilm", device="cpu"), Checkpoint("minilm", "minilm"), task, data,
                                   spec)
    scored = {(r["layer"], r.get("variant", "")): r["score"] for r in rows if r.get("metric") == "ndcg@10"}
    assert set(scored) == {(2, ""), (5, ""), (2, "query-layer:5"), (5, "query-layer:2")}
    cost = {(r["layer"], r.get("variant", "")): r["score"] for r in rows if r.get("metric") == "relative_encode_cost"}
    assert cost[(5, "query-layer:2")] == pytest.approx(2 / 6)  # the query side's encode: documents are offline

    def vectors(layer, texts, max_len):
        return truncate(Encoder.named("minilm", device="cpu", num_layers=layer).vectors(texts, max_len)[-1], 384, True)

    docs = {layer: vectors(layer, data.corpus_texts, 64) for layer in (2, 5)}
    queries = {layer: vectors(layer, data.query_texts, 64) for layer in (2, 5)}
    for doc_layer, query_layer in ((5, 2), (2, 5), (5, 5)):
        similarity = queries[query_layer] @ docs[doc_layer].T
        expected = [ndcg_at_10(s, data.corpus_ids, data.qrels[q]) for s, q in zip(similarity, data.query_ids)]
        variant = "" if doc_layer == query_layer else f"query-layer:{query_layer}"
        # measured here: identical (the same rankings); 1e-6 leaves room for another summation order
        np.testing.assert_allclose(examples[example_key(doc_layer, 384, "fp32", "ndcg@10", variant)], expected,
                                   atol=1e-6)
    assert scored[(5, "query-layer:2")] != scored[(5, "")]  # the query layer was read, not the document's


def test_random_subset_cells_score_the_coordinates_picked_by_hand(data_dir):
    pairs = load_stsb(data_dir, "test").head(200)
    task = TASKS.get("stsb")
    spec = EvalSpec(layers=(1,), dims=(16, 32), precisions=("fp32", "int8"), random_subsets=3,
                    variant_precisions=("fp32",))
    encoder = Encoder.named("tiny-random-bert", device="cpu")
    rows, examples = evaluate_grid(encoder, Checkpoint("tiny-random-bert", "tiny-random-bert"), task, pairs, spec)
    variants = {(r["dim"], r["precision"], r["variant"]) for r in rows if r.get("variant")}
    assert variants == {(dim, "fp32", f"subset:{s}") for dim in (16, 32) for s in range(3)}  # fp32 only
    texts = task.texts(pairs, spec)["sentences"][0]
    index = {t: i for i, t in enumerate(texts)}
    left, right = [index[s] for s in pairs.sentences1], [index[s] for s in pairs.sentences2]
    layer = encoder.vectors(texts, spec.max_seq_len)[0]
    for draw in range(3):
        picked = truncate(layer[:, subset_coordinates(encoder.width, 16, draw)], 16, True)
        cosine = np.einsum("nd,nd->n", picked[left], picked[right])
        # measured here: 2.4e-7 (float32 vectors of two encodes batched differently), and Spearman identical
        np.testing.assert_allclose(examples[example_key(1, 16, "fp32", "similarity", f"subset:{draw}")], cosine,
                                   atol=1e-5)
        [spearman] = [r["score"] for r in rows if r.get("variant") == f"subset:{draw}" and r["dim"] == 16
                      and r["metric"] == "spearman"]
        assert spearman == pytest.approx(100 * spearmanr(cosine, pairs.scores).statistic, abs=1e-6)


def test_subset_draws_are_seeded_nested_and_distinct():
    first = subset_coordinates(384, 64, 0)
    assert np.array_equal(first, subset_coordinates(384, 64, 0)) and len(set(first)) == 64
    assert set(subset_coordinates(384, 32, 0)) <= set(first)  # one random order per draw: its first dims
    assert not np.array_equal(first, subset_coordinates(384, 64, 1))
    assert not np.array_equal(first, np.arange(64))  # not the prefix


def test_variant_cells_follow_the_spec_and_the_task_roles():
    cells = [SubModel(layer, dim) for layer in (1, 2) for dim in (16, 32)]
    spec = EvalSpec(random_subsets=2, asymmetric_dims=(32,), dims=(16, 32))
    retrieval = {"corpus": "document", "queries": "query"}
    chosen = variant_cells(cells, spec, 32, retrieval, own_codes=False)
    assert [(c, v) for c, v in chosen if isinstance(v, RandomSubset)] == [
        (SubModel(layer, 16), RandomSubset(d)) for layer in (1, 2) for d in (0, 1)]  # none at the full width
    assert [(c, v) for c, v in chosen if isinstance(v, QueryLayer)] == [(SubModel(1, 32), QueryLayer(2)),
                                                                         (SubModel(2, 32), QueryLayer(1))]
    assert not [v for _, v in variant_cells(cells, spec, 32, {"sentences": None}, False) if isinstance(v, QueryLayer)]
    assert not [v for _, v in variant_cells(cells, spec, 32, retrieval, True) if isinstance(v, RandomSubset)]


def test_bad_variant_settings_are_one_error(data_dir):
    with pytest.raises(BenchError, match="random_subsets must be >= 0"):
        EvalSpec(random_subsets=-1)
    with pytest.raises(BenchError, match="unknown precision"):
        EvalSpec(variant_precisions=("int3",))
    with pytest.raises(BenchError, match=r"asymmetric dims \[24\] are not among the grid's dims \[16\]"):
        EvalSpec(dims=(16,), asymmetric_dims=(24,))  # given dims: refused before anything trains
    task = TASKS.get("stsb")
    spec = EvalSpec(layers=(1,), precisions=("fp32",), asymmetric_dims=(24,))  # the model's dims: 16, 32, 64
    with pytest.raises(BenchError, match=r"asymmetric dims \[24\] are not among the grid's dims \[16, 32, 64\]"):
        evaluate_grid(Encoder.named("tiny-random-bert", device="cpu"), Checkpoint("tiny-random-bert",
                      "tiny-random-bert"), task, load_stsb(data_dir, "test").head(20), spec)


def test_variant_rows_stay_out_of_the_prefix_grid_unless_asked(tmp_path):
    from bench.results import load_results, make_row, run_fields, write_run
    from bench.spec import RunSpec

    spec = RunSpec("pretrained", "stsb", eval=EvalSpec(random_subsets=1))
    shared = run_fields(spec, "code")
    rows = [make_row(shared, layer=1, dim=16, metric="spearman", score=s, variant=v)
            for s, v in ((50.0, ""), (40.0, "subset:0"))]
    write_run(tmp_path, spec, "code", rows)
    assert list(load_results(tmp_path)["score"]) == [50.0]
    assert sorted(load_results(tmp_path, variants=True)["score"]) == [40.0, 50.0]
    assert EvalSpec().random_subsets == 0 and RunSpec("pretrained", "stsb").run_id == RunSpec(
        "pretrained", "stsb", eval=EvalSpec(variant_precisions=("fp32", "int8", "binary"))).run_id


def test_subset_table_mean_spread_and_reach_against_numpy():
    draws = [61.0, 64.0, 70.0]
    base = dict(backbone="b", task="stsb", method="m", precision="fp32", layer=6, dim=64, split="test",
                metric="spearman", task_meta=TASKS.get("stsb").meta.to_json())
    frame = pd.DataFrame([{**base, "score": 65.0, "variant": ""}] +
                         [{**base, "score": s, "variant": f"subset:{i}"} for i, s in enumerate(draws)])
    row = report_variants.subset_table(frame).iloc[0]
    assert (row["draws"], row["prefix"], row["reached"]) == (3, 65.0, 1)
    assert row["mean"] == pytest.approx(np.mean(draws)) and row["sd"] == pytest.approx(np.std(draws, ddof=1))
    assert (row["low"], row["high"]) == (61.0, 70.0) and row["delta"] == pytest.approx(65.0 - np.mean(draws))


def test_query_layer_report_pairs_each_cell_with_the_references_same_cell(tmp_path):
    """Two methods on a retrieval task, each with its diagonal and one query layer: the matrix reads each cell's own
    per-query values, and the paired test compares it with the reference's same (query layer, document layer)."""
    from bench.results import load_results, make_row, run_fields, write_run
    from bench.spec import RunSpec

    rng = np.random.default_rng(0)
    base = rng.uniform(20, 60, size=200)
    spec_eval = EvalSpec(layers=(1, 2), dims=(32,), precisions=("fp32",), asymmetric_dims=(32,))
    values = {"pretrained": {(1, ""): base, (2, ""): base + 1, (2, "query-layer:1"): base - 5,
                             (1, "query-layer:2"): base},
              "starbucks-srl": {(1, ""): base, (2, ""): base + 1, (2, "query-layer:1"): base + 10 * (base > 25),
                                (1, "query-layer:2"): base}}
    for method, cells in values.items():
        spec = RunSpec(method, "scifact", eval=spec_eval)
        shared = run_fields(spec, "code")
        rows = [make_row(shared, layer=layer, dim=32, metric="ndcg@10", score=float(v.mean()), variant=variant,
                         n_examples=len(v)) for (layer, variant), v in cells.items()]
        examples = {example_key(layer, 32, "fp32", "ndcg@10", variant): v for (layer, variant), v in cells.items()}
        examples["query_ids"] = np.array([f"q{i}" for i in range(len(base))])
        write_run(tmp_path, spec, "code", rows, examples)
    cells = report_variants.query_layer_cells(load_results(tmp_path, examples=True, variants=True))
    cells = cells.set_index(["method", "query_layer", "doc_layer"])
    assert cells.loc[("starbucks-srl", 1, 2), "score"] == pytest.approx(np.mean(base + 10 * (base > 25)), abs=1e-4)
    assert cells.loc[("starbucks-srl", 1, 2), "delta"] == pytest.approx(np.mean(10 * (base > 25) + 5), abs=1e-4)
    assert cells.loc[("starbucks-srl", 1, 2), "q_value"] < 0.05
    assert cells.loc[("starbucks-srl", 2, 1), "reason"].startswith("identical per-example values")
    assert cells.loc[("pretrained", 1, 2), "reference"] == "pretrained" and np.isnan(
        cells.loc[("pretrained", 1, 2), "q_value"])
    text = report_variants.query_layer_markdown(cells.reset_index())
    assert f"| 1 | {np.mean(base):.2f} | {np.mean(base + 10 * (base > 25)):.2f}▲ |" in text  # query layer 1's row


def test_bad_variant_options_on_the_command_line_are_one_line_exit_2(capsys):
    from bench.cli import main

    for args, message in ((["--asymmetric-dims", "24", "--dims", "16,32"], "asymmetric dims [24] are not among"),
                          (["--variant-precisions", "int3"], "unknown precision 'int3'"),
                          (["--random-subsets", "-2"], "random_subsets must be >= 0")):
        assert main(["run", "--suite", "smoke", "--methods", "full", "--tasks", "stsb", "--dry-run", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
