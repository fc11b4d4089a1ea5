"""Oracle: our STS and retrieval scores equal mteb 2.x's own evaluation of the same model on the same data.

mteb runs a custom local task over our loaded data with an encoder that returns our (layer, dim) slice
(first `layer` blocks' pooled vector, first `dim` coordinates); mteb does its own similarity, correlation
(scipy) and retrieval metrics (pytrec_eval). Real MiniLM, real STS-B test and a SciFact slice (all 300 test
queries; the judged documents plus 1,000 others, so the corpus encodes in seconds).
"""

from __future__ import annotations

from dataclasses import replace

import mteb
import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from bench.data.beir import RetrievalSet, load_beir
from bench.data.sts import load_stsb
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached, evaluate_grid
from bench.spec import EvalSpec, SubModel
from bench.storage import Plan, Storage, StoredLayers
from bench.tasks import TASKS
from bench.transforms import truncate
from methods import Checkpoint

SPEC = EvalSpec(max_seq_len=128, max_query_len=64, max_doc_len=128, precisions=("fp32",))
CELLS = [SubModel(6, 384), SubModel(3, 96)]  # the full model and one truncated cell


class SliceEncoder(AbsEncoder):
    """mteb encoder returning our (layer, dim) slice of MiniLM. It looks each text up in the all-layer arrays our
    evaluator encoded (one encode serves both sides, which keeps this test fast); mteb computes everything else."""

    def __init__(self, arrays: dict[str, dict[str, np.ndarray]], cell: SubModel):
        self.arrays, self.cell = arrays, cell
        self.mteb_model_meta = ModelMeta(
            loader=None, name=f"elastic-bench/minilm-l{cell.layer}-d{cell.dim}", revision="1", model_type=["dense"],
            embed_dim=cell.dim, similarity_fn_name="cosine", languages=None, open_weights=True, release_date=None,
            n_parameters=0, n_embedding_parameters=0, memory_usage_mb=0, license="mit", max_tokens=512,
            reference=None, framework=[], use_instructions=False, public_training_code=None,
            public_training_data=None, training_datasets=set(), modalities=["text"])

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        texts = [t for batch in inputs for t in batch["text"]]
        if task_metadata.type == "Retrieval":
            side = self.arrays["queries" if prompt_type == PromptType.query else "corpus"]
        else:
            side = self.arrays["sentences"]
        vectors = np.stack([side[t][self.cell.layer - 1] for t in texts])
        return truncate(vectors, self.cell.dim, normalize=True)


def evaluate_ours(encoder: Encoder, task, data, cache_dir) -> tuple[dict, dict]:
    """Our grid scores of CELLS, and the very vectors they were computed from (a cache hit), keyed by text."""
    rows, _ = evaluate_grid(encoder, Checkpoint("minilm", "minilm", targets=tuple(CELLS), only_targets=True), task,
                            data, SPEC, cache_dir=cache_dir)
    scores = {(r["layer"], r["dim"], r["metric"]): r["score"] for r in rows if r.get("precision") == "fp32"}
    lookup, storage = {}, Storage.for_cells(CELLS, SPEC.store_dtype)  # what evaluate_grid stored: layers 3, 6
    for side, (texts, max_len) in task.texts(data, SPEC).items():
        arrays, _ = encode_cached(encoder, "minilm", side, Texts(texts, max_len), Plan(SPEC.batch_size, storage),
                                  cache_dir)
        lookup[side] = {t: StoredLayers(arrays[:, i], storage.layers) for i, t in enumerate(texts)}
    assert len(list(cache_dir.glob("*.npy"))) == len(lookup)  # cache hits: the vectors the scores came from
    return scores, lookup


def _metadata(name: str, kind: str, main_score: str) -> TaskMetadata:
    return TaskMetadata(
        name=name, dataset={"path": f"local/{name}", "revision": "1"}, description="local copy for an oracle test",
        reference=None, type=kind, category="t2t", modalities=["text"], eval_splits=["test"],
        eval_langs=["eng-Latn"], main_score=main_score, date=None, domains=None, task_subtypes=None, license=None,
        annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation="")


def _run_mteb(model, task, tmp_path) -> dict:
    result = mteb.evaluate(model, [task], cache=mteb.ResultCache(cache_path=tmp_path), overwrite_strategy="always")
    return result.task_results[0].scores["test"][0]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.named("minilm", device="cpu")


def test_sts_equals_mteb(minilm, data_dir, tmp_path):
    pairs = load_stsb(data_dir, "test")

    class LocalSTSB(AbsTaskSTS):
        metadata = _metadata("LocalSTSBenchmark", "STS", "cosine_spearman")
        min_score, max_score = 0, 5

        def load_data(self, **kwargs):
            self.dataset = DatasetDict({"test": Dataset.from_dict(
                {"sentence1": pairs.sentences1, "sentence2": pairs.sentences2, "score": pairs.scores.tolist()})})
            self.data_loaded = True

    ours, lookup = evaluate_ours(minilm, TASKS.get("stsb"), pairs, tmp_path / "enc")
    for cell in CELLS:
        theirs = _run_mteb(SliceEncoder(lookup, cell), LocalSTSB(), tmp_path / f"{cell.layer}")
        assert ours[(cell.layer, cell.dim, "spearman")] / 100 == pytest.approx(theirs["cosine_spearman"], abs=1e-6)
        assert ours[(cell.layer, cell.dim, "pearson")] / 100 == pytest.approx(theirs["cosine_pearson"], abs=1e-6)


def _scifact_slice(data_dir) -> RetrievalSet:
    full = load_beir(data_dir, "scifact")
    judged = {d for docs in full.qrels.values() for d in docs}
    keep = [i for i, d in enumerate(full.corpus_ids) if d in judged or i < 1000]
    return replace(full, corpus_ids=[full.corpus_ids[i] for i in keep],
                   corpus_texts=[full.corpus_texts[i] for i in keep])


def test_retrieval_equals_mteb(minilm, data_dir, tmp_path):
    data = _scifact_slice(data_dir)

    class LocalSciFact(AbsTaskRetrieval):
        metadata = _metadata("LocalSciFactSlice", "Retrieval", "ndcg_at_10")

        def load_data(self, **kwargs):
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_dict({"id": data.corpus_ids, "title": [""] * len(data.corpus_ids),
                                             "text": data.corpus_texts}),
                "queries": Dataset.from_dict({"id": data.query_ids, "text": data.query_texts}),
                "relevant_docs": data.qrels, "top_ranked": None}}}
            self.data_loaded = True

    ours, lookup = evaluate_ours(minilm, TASKS.get("scifact"), data, tmp_path / "enc")
    for cell in CELLS:
        theirs = _run_mteb(SliceEncoder(lookup, cell), LocalSciFact(), tmp_path / f"{cell.layer}")
        for metric, key in (("ndcg@10", "ndcg_at_10"), ("mrr@10", "mrr_at_10"), ("recall@100", "recall_at_100")):
            assert ours[(cell.layer, cell.dim, metric)] / 100 == pytest.approx(theirs[key], abs=1e-4), metric
    assert ours[(6, 384, "ndcg@10")] > 50  # MiniLM on SciFact is in the 60s: a sanity floor, not the oracle
