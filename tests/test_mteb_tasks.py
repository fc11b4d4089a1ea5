"""mteb tasks over the whole grid (bench/tasks/mteb.py), on the local task classes of examples/mteb_local_tasks.py:
pair classification, classification and clustering, three types this suite has no family of its own for; and a
pair classification task of two subsets (made here), scored as the mean over its subsets.

Oracle: `mteb.evaluate` itself, with models that are not ours: sentence-transformers' all-MiniLM-L6-v2 for the
full-size cell, and for a truncated cell a truly truncated SentenceTransformer (first 3 blocks, truncate_dim=96)
whose cut vectors a tiny wrapper re-normalizes as our cells are (truncate_dim alone does not). int8 and binary
cells against the same model's vectors quantized by sentence-transformers' `quantize_embeddings`. No hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid, texts_key
from bench.hub import resolve_backbone
from bench.precisions import supported
from bench.results import load_results
from bench.spec import EvalSpec, SubModel
from bench.tasks import TASKS
from bench.tasks.mteb import MtebTask, encode_role, mteb_metrics, served_vectors
from methods import Checkpoint

REPO = Path(__file__).resolve().parents[1]

EXAMPLES = REPO / "examples" / "mteb_local_tasks.py"
FULL, CUT = SubModel(6, 384), SubModel(3, 96)
SPEC = EvalSpec(precisions=("fp32", "int8", "binary"))
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _local_data(data_dir, monkeypatch):
    """The example tasks read resolve_data_dir() when they load (a run's --data-dir, else $BENCH_DATA_DIR): pinned
    here to the real data, for the tests that load them outside a run."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(data_dir))


def task_name(cls: str) -> str:
    return f"mteb:{EXAMPLES}:{cls}"


def max_difference(ours: dict[str, float], theirs: dict[str, float]) -> float:
    """Largest |ours - theirs| over every number mteb reports (the same names on both sides)."""
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    worst = max(theirs, key=lambda k: abs(ours[k] - theirs[k]))
    print(f"  worst: {worst} ours {ours[worst]!r} mteb {theirs[worst]!r}")
    return abs(ours[worst] - theirs[worst])


# ---- the oracle's models: sentence-transformers, wrapped only where mteb needs a cut re-normalized ----

def oracle_scores(model, task_cls: str) -> dict[str, float]:
    """mteb.evaluate on a fresh instance of the task class, no result cache: its numbers for the test split."""
    import mteb

    from bench.tasks.mteb import from_file

    task = from_file(str(EXAMPLES), task_cls)
    result = mteb.evaluate(model, [task], cache=None, show_progress_bar=False)
    return mteb_metrics({"default": result.task_results[0].scores["test"][0]})


class Renormalized:
    """all-MiniLM-L6-v2 truly truncated (the first `layer` blocks, truncate_dim), its cut vectors re-normalized,
    optionally quantized by `quantize` (vectors -> vectors). An mteb encoder of its own (the AbsEncoder protocol)."""

    def __new__(cls, layer: int, dim: int, quantize=None):
        from mteb.models.abs_encoder import AbsEncoder
        from mteb.models.model_meta import ModelMeta, ScoringFunction
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(resolve_backbone("minilm"), config_kwargs={"num_hidden_layers": layer},
                                 truncate_dim=dim, device="cpu")

        class Wrapper(AbsEncoder):
            mteb_model_meta = ModelMeta.create_empty({"name": f"oracle/minilm-l{layer}-d{dim}", "revision": "1",
                                                      "similarity_fn_name": ScoringFunction.COSINE})

            def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
                return self.vectors([t for batch in inputs for t in batch["text"]])

            def vectors(self, texts):
                v = st.encode(texts, batch_size=64, convert_to_numpy=True)
                v = v / np.linalg.norm(v, axis=1, keepdims=True)
                return v if quantize is None else quantize(v)

        return Wrapper()


def dequantized_int8(v: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """sentence-transformers' int8 codes of v with ranges from `calibration`, decoded by hand to each bucket's
    midpoint (faiss SQ8's decode); a constant dimension to its one value."""
    from sentence_transformers.util.quantization import quantize_embeddings

    low, high = calibration.min(axis=0), calibration.max(axis=0)
    step = (high - low) / 255
    return low + (quantize_embeddings(v, "int8", calibration_embeddings=calibration) + 128.5) * step


def int8_oracle(calibration_texts: list[str], layer: int, dim: int):
    """Vectors -> their int8 reconstruction, ranges from every text of the task."""
    calibration = Renormalized(layer, dim).vectors(calibration_texts)
    return lambda v: dequantized_int8(v, calibration)


def binary_oracle(v: np.ndarray) -> np.ndarray:
    """sentence-transformers' packed sign bits, unpacked to +-1."""
    from sentence_transformers.util.quantization import quantize_embeddings

    return np.unpackbits(quantize_embeddings(v, "ubinary"), axis=1).astype(np.float32) * 2 - 1


# ---- ours ----

@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.named("minilm", device="cpu")


def our_cells(encoder, task_cls: str, precisions=("fp32",), cache_dir=None) -> dict[tuple, dict[str, float]]:
    """Our scores of FULL and CUT: {(layer, dim, precision): {metric: score}} (mteb's numbers only)."""
    task = TASKS.get(task_name(task_cls))
    spec = EvalSpec(precisions=precisions)
    rows, _ = evaluate_grid(encoder, Checkpoint("minilm", "minilm", targets=(FULL, CUT), only_targets=True), task,
                            task.load(None, spec), spec, cache_dir=cache_dir)
    cells: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if "dim" in r and r["metric"] != "relative_encode_cost":
            cells.setdefault((r["layer"], r["dim"], r["precision"]), {})[r["metric"]] = r["score"]
    return cells


@pytest.mark.parametrize("task_cls", ["TwitterParaphrasePairs", "StsSourceClassification", "TwitterStoryClustering"])
def test_full_and_truncated_cells_equal_mteb(minilm, task_cls, tmp_path):
    """(6, 384) against mteb.evaluate(SentenceTransformer(all-MiniLM-L6-v2)); (3, 96) against mteb on the truly
    truncated, re-normalized model. Every number mteb reports, not just the main score. Catches: a wrong layer or
    dim served, vectors not re-normalized after the cut, texts looked up in the wrong rows, and (clustering) rngs
    not reset between mteb's runs."""
    from sentence_transformers import SentenceTransformer

    ours = our_cells(minilm, task_cls, cache_dir=tmp_path)
    full = oracle_scores(SentenceTransformer(resolve_backbone("minilm"), device="cpu"), task_cls)
    cut = oracle_scores(Renormalized(CUT.layer, CUT.dim), task_cls)
    diffs = {"full": max_difference(ours[(6, 384, "fp32")], full), "cut": max_difference(ours[(3, 96, "fp32")], cut)}
    print(f"{task_cls}: max |ours - mteb| {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs
    main = TASKS.get(task_name(task_cls)).meta.main_metric
    assert ours[(6, 384, "fp32")][main] != pytest.approx(ours[(3, 96, "fp32")][main], abs=1e-3)  # cells differ


def test_int8_and_binary_cells_equal_mteb_on_quantized_vectors(minilm, tmp_path):
    """Pair classification at (3, 96): int8 = sentence-transformers' codes with ranges from all the task's texts,
    dequantized; binary = the sign bits as +-1. Catches: ranges from a subset of the texts, codes left as codes,
    0/1 bits instead of +-1 (cosine then is not a function of the Hamming distance)."""
    data = TASKS.get(task_name("TwitterParaphrasePairs")).load(None, SPEC).task.dataset["test"]
    every_text = sorted(set(data["sentence1"]) | set(data["sentence2"]))
    ours = our_cells(minilm, "TwitterParaphrasePairs", ("int8", "binary"), cache_dir=tmp_path)
    int8 = oracle_scores(Renormalized(CUT.layer, CUT.dim, int8_oracle(every_text, CUT.layer, CUT.dim)),
                         "TwitterParaphrasePairs")
    binary = oracle_scores(Renormalized(CUT.layer, CUT.dim, binary_oracle), "TwitterParaphrasePairs")
    diffs = {"int8": max_difference(ours[(3, 96, "int8")], int8),
             "binary": max_difference(ours[(3, 96, "binary")], binary)}
    print(f"quantized: max |ours - mteb| {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_int8_ranges_come_from_every_role_together():
    """A task with queries and documents: one set of ranges over both sides (sentence-transformers' codes with the
    two sides as calibration set). Catches ranges calibrated per role."""
    rng = np.random.default_rng(0)
    queries, documents = rng.standard_normal((30, 32)), 3 * rng.standard_normal((50, 32))
    served = served_vectors({"query": queries, "document": documents}, "int8")
    both = np.concatenate([queries, documents])
    for role, v in (("query", queries), ("document", documents)):
        np.testing.assert_allclose(served[role], dequantized_int8(v, both), atol=1e-5)


def test_a_heads_own_codes_are_served_as_their_reconstruction():
    """bebr's multi-bit codes: mteb gets sum_u w_u s_u, whose inner products are the codes' symmetric distance
    (written out here from the +-1 levels), not the sign bits of the float vectors."""
    from bench.transforms import BinaryCodes

    rng = np.random.default_rng(1)
    levels = rng.integers(0, 2, (10, 2, 16)).astype(np.uint8)  # 10 vectors, 2 levels of 16 bits
    codes = BinaryCodes(np.packbits(levels.reshape(10, 32), axis=-1), 16, (0.75, 0.25))
    served = served_vectors({"text": rng.standard_normal((10, 16))}, "binary", {"text": codes})["text"]
    signs = 2.0 * levels - 1
    sdc = np.einsum("nud,mvd,u,v->nm", signs, signs, codes.weights, codes.weights)
    np.testing.assert_allclose(served @ served.T, sdc, atol=1e-5)


def test_served_binary_cosine_is_a_function_of_hamming_distance():
    """The binary vectors mteb gets: cosine = 1 - 2 hamming / dim (no oracle needed beyond the definition)."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20, 64)).astype(np.float32)
    b = served_vectors({"text": v}, "binary")["text"]
    cosine = (b @ b.T) / 64
    hamming = ((v[:, None] > 0) != (v[None] > 0)).sum(-1)
    np.testing.assert_allclose(cosine, 1 - 2 * hamming / 64, atol=1e-6)


def test_one_encode_per_role_serves_the_whole_grid(tmp_path):
    """Every distinct text mteb asks for is encoded once (one encode call per role) for all 2 x 3 cells x 3
    precisions; a second run on the same cache encodes nothing. Catches an encode per cell or per mteb call."""
    encoder = Encoder.named("tiny-random-bert", device="cpu")
    calls: list[list[str]] = []
    plain = encoder.encode

    def counting(texts, *args, **kwargs):
        calls.append(list(texts.items))
        return plain(texts, *args, **kwargs)

    encoder.encode = counting
    task = TASKS.get(task_name("TwitterParaphrasePairs"))
    spec = EvalSpec(dims=(16, 32, 64), precisions=SPEC.precisions)
    data = task.load(None, spec)
    rows, examples = evaluate_grid(encoder, Checkpoint("tiny", "tiny"), task, data, spec, cache_dir=tmp_path)
    pairs = data.task.dataset["test"]
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(pairs["sentence1"]) | set(pairs["sentence2"]))
    cells = {(r["layer"], r["dim"], r["precision"]) for r in rows if r["metric"] == "max_ap"}
    assert cells == {(layer, dim, p) for layer in (1, 2) for dim in (16, 32, 64) for p in SPEC.precisions}
    assert examples == {}  # mteb reports no per-example values
    assert {r["n_examples"] for r in rows if r["metric"] == "max_ap"} == {len(pairs)}
    evaluate_grid(encoder, Checkpoint("tiny", "tiny"), task, data, spec, cache_dir=tmp_path)
    assert len(calls) == 1  # the cache served the second run


def test_prompt_types_pick_roles_and_the_cache_key_covers_them(data_dir):
    """A retrieval task asks for queries and documents: they are encoded as two roles, each with its own texts
    and its own cache key (a model with prompts encodes them differently)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType

    from bench.data.beir import load_beir

    scifact = load_beir(data_dir, "scifact", "test", 5)
    judged = sorted({d for q in scifact.query_ids for d in scifact.qrels[q]})
    docs = {d: t for d, t in zip(scifact.corpus_ids, scifact.corpus_texts) if d in judged}

    class FewSciFact(AbsTaskRetrieval):
        metadata = TaskMetadata(name="FewSciFact", description="five SciFact queries", dataset={"path": "local/x",
                                "revision": "1"}, type="Retrieval", category="t2t", eval_splits=["test"],
                                eval_langs=["eng-Latn"], main_score="ndcg_at_10")

        def load_data(self, **kwargs):
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_dict({"id": list(docs), "title": [""] * len(docs), "text": list(docs.values())}),
                "queries": Dataset.from_dict({"id": scifact.query_ids, "text": scifact.query_texts}),
                "relevant_docs": {q: scifact.qrels[q] for q in scifact.query_ids}, "top_ranked": None}}}
            self.data_loaded = True

    assert (encode_role(PromptType.query), encode_role(PromptType.document), encode_role(None)) == \
        ("query", "document", "text")
    task = MtebTask("mteb:FewSciFact", FewSciFact(), None)
    texts = task.texts(task.load(None, SPEC), SPEC)
    assert set(texts) == {"query", "document"}
    assert sorted(texts["query"][0]) == sorted(scifact.query_texts) and len(texts["document"][0]) == len(docs)
    assert texts["query"][1] == SPEC.max_query_len and texts["document"][1] == SPEC.max_doc_len
    assert (task.role("query"), task.role("document"), task.role("text")) == ("query", "document", None)
    same = texts["query"][0]  # a model that prompts the roles differently gets two cache entries for one text set
    prompting = json.dumps(["mean", "query: "]), json.dumps(["mean", "passage: "])
    assert texts_key("m", prompting[0], 64, same) != texts_key("m", prompting[1], 64, same)


def test_task_record_carries_mteb_metadata():
    """The row's task record: mteb's name, type, main score, dataset revision and version; no intervals, said why."""
    import mteb

    meta = TASKS.get(task_name("StsSourceClassification")).meta
    assert (meta.display, meta.family, meta.main_metric, meta.revision, meta.mteb_version) == \
        ("StsSourceClassificationLocal", "Classification", "accuracy", "local-slice-1", mteb.__version__)
    assert "no per-example values" in meta.no_intervals and meta.precisions == supported("mteb")


def test_user_task_file_is_part_of_the_run_code(tmp_path):
    """Editing a user's task file changes the run's code fingerprint, so an old result never passes for a new one."""
    from bench.fingerprint import task_code
    from bench.tasks.mteb import from_file

    file = tmp_path / "tasks.py"
    file.write_text(EXAMPLES.read_text())
    name, instance = f"mteb:{file}:TwitterParaphrasePairs", from_file(str(file), "TwitterParaphrasePairs")
    before = task_code(MtebTask(name, instance, file))
    file.write_text(EXAMPLES.read_text() + "\n# edited\n")
    assert task_code(MtebTask(name, instance, file)) != before


# ---- the CLI: a run with our own task beside an mteb one, its report, and bad input ----

def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


UNSLICEABLE = '''
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.task_metadata import TaskMetadata


class Photos(AbsTaskClassification):
    metadata = TaskMetadata(name="Photos", description="images", dataset={"path": "local/photos", "revision": "1"},
                            type="ImageClassification", category="i2c", modalities=["image"], eval_splits=["test"],
                            eval_langs=["eng-Latn"], main_score="accuracy")
    input_column_name = "image"
'''


@pytest.mark.parametrize("tasks, message", [
    ("mteb:TwitterURLCorpu", "unknown mteb task 'TwitterURLCorpu' ('TwitterURLCorpu' not found. Did you mean: "
                             "'TwitterURLCorpus'?)"),
    (f"mteb:{EXAMPLES}:TwitterPairs", "has no class 'TwitterPairs'; did you mean 'TwitterParaphrasePairs'?"),
    (f"mteb:{EXAMPLES}:DatasetDict", "DatasetDict is not an mteb task class"),
    ("mteb:{tmp}/photos.py:Photos", "mteb ImageClassification task over image, which cannot be sliced"),
    ("mteb:{tmp}/nowhere.py:Photos", "nowhere.py not found"),
])
def test_bad_mteb_task_is_one_clear_line(tasks, message, tmp_path, capsys):
    (tmp_path / "photos.py").write_text(UNSLICEABLE)
    args = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", f"stsb,{tasks.format(tmp=tmp_path)}",
            "--results-dir", str(tmp_path)]
    assert main(args) == 2
    assert message in _error_line(capsys)
    assert not list(tmp_path.glob("*.csv.gz"))


def test_smoke_run_with_an_mteb_task_and_its_report(tmp_path, data_dir, capsys):
    """`bench run --methods pretrained,starbucks-srl --suite smoke --tasks stsb,mteb:FILE:CLASS`, then `bench report`:
    mteb's rows with its metadata, a table of their own named by mteb's metadata saying why there are no
    intervals, and the task's heatmap; our STS-B keeps its paper table and its intervals."""
    name = task_name("TwitterParaphrasePairs")
    results, out = tmp_path / "results", tmp_path / "report"
    assert main(["run", "--suite", "smoke", "--methods", "pretrained,starbucks-srl", "--tasks", f"stsb,{name}",
                 "--data-dir", str(data_dir), "--results-dir", str(results)]) == 0
    frame = load_results(results)
    rows = frame[frame["task"] == name]
    main_rows = rows[rows["metric"] == "max_ap"]
    assert len(main_rows) == 2 * 2 * 3 * 3  # methods x layers x dims x precisions (fp32, int8, binary)
    assert main_rows["score"].between(0, 1).all() and {"cosine_ap", "max_f1"} <= set(rows["metric"])
    assert len(list(results.glob("*.examples.npz"))) == 2  # STS-B's only
    assert main(["report", "--results-dir", str(results), "--out", str(out)]) == 0
    slug = "tiny-random-bert"
    heatmap = out / "figures" / slug / f"heatmap_{name.replace('/', '_').replace(':', '_')}_fp32.png"
    assert heatmap.exists(), sorted(p.name for p in (out / "figures" / slug).iterdir())
    table = (out / "tables" / slug / "mteb-PairClassification_fp32.md").read_text()
    assert "TwitterParaphrasePairsLocal" in table and "no bootstrap intervals" in table and "mteb 2." in table
    assert "STS-B" in (out / "tables" / slug / "paper_fp32.md").read_text()
    assert "TwitterParaphrasePairsLocal" in (out / "index.html").read_text()


# ---- a task with several subsets (languages, domains): the mean over subsets, as mteb's TaskResult.get_score ----

def two_subset_pairs():
    """TwitterParaphrasePairs as a task of two subsets, "first" and "second": the first and the next 50 paraphrase
    and 50 other pairs of the same file. Made here, not in the examples file: the README lists that file's tasks."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.task_metadata import TaskMetadata

    from bench.data import resolve_data_dir

    class TwoSubsetPairs(AbsTaskPairClassification):
        metadata = TaskMetadata(
            name="TwoSubsetPairsLocal", description="Twitter URL Corpus train pairs in two subsets",
            dataset={"path": "local/twitter_url_corpus", "revision": "local-slice-1"}, type="PairClassification",
            category="t2t", modalities=["text"], eval_splits=["test"],
            eval_langs={"first": ["eng-Latn"], "second": ["eng-Latn"]}, main_score="max_ap")

        def load_data(self, **kwargs) -> None:
            import gzip

            with gzip.open(resolve_data_dir() / "twitter_url_corpus" / "pairs.tsv.gz", "rt", encoding="utf-8") as fh:
                rows = [line.split("\t") for line in fh.read().splitlines()[1:] if line]
            by_label = {label: [r for r in rows if r[2] == label] for label in "10"}
            self.dataset = {}
            for subset, part in (("first", slice(0, 50)), ("second", slice(50, 100))):
                pairs = by_label["1"][part] + by_label["0"][part]
                self.dataset[subset] = DatasetDict({"test": Dataset.from_dict({
                    "sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs],
                    "labels": [int(p[2]) for p in pairs]})})
            self.data_loaded = True

    return TwoSubsetPairs()


def test_a_task_with_several_subsets_scores_the_mean_over_them(minilm, tmp_path):
    """(6, 384) against mteb.evaluate(SentenceTransformer(all-MiniLM-L6-v2)) on the same two-subset task: the main
    score equals mteb's TaskResult.get_score() (its mean over subsets), every other number the mean of mteb's
    per-subset numbers; n_examples counts both subsets. Catches one subset scored, or subsets pooled."""
    import mteb
    from sentence_transformers import SentenceTransformer

    task = MtebTask("mteb:TwoSubsetPairs", two_subset_pairs(), None)
    spec = EvalSpec(precisions=("fp32",))
    rows, _ = evaluate_grid(minilm, Checkpoint("minilm", "minilm", targets=(FULL,), only_targets=True), task,
                            task.load(None, spec), spec, cache_dir=tmp_path)
    ours = {r["metric"]: r["score"] for r in rows if r.get("dim") == FULL.dim and r["metric"] != "relative_encode_cost"}
    result = mteb.evaluate(SentenceTransformer(resolve_backbone("minilm"), device="cpu"), [two_subset_pairs()],
                           cache=None, show_progress_bar=False).task_results[0]
    per_subset = {s["hf_subset"]: s for s in result.scores["test"]}
    assert set(per_subset) == {"first", "second"}
    assert abs(per_subset["first"]["max_ap"] - per_subset["second"]["max_ap"]) > 1e-3  # the mean is not either one
    assert ours["max_ap"] == pytest.approx(result.get_score(), abs=TOLERANCE)
    for metric in ("cosine_ap", "cosine_f1", "dot_accuracy", "max_f1"):
        assert ours[metric] == pytest.approx(np.mean([s[metric] for s in per_subset.values()]), abs=TOLERANCE)
    assert {r["n_examples"] for r in rows if r["metric"] == "max_ap"} == {200}
