"""Any model scored as its authors serve it: our one-pass vectors of every layer equal sentence-transformers'.

Oracles: `SentenceTransformer(folder).encode` for the full model (its pooling, head, prompts, max sequence
length), and a truly truncated `SentenceTransformer(folder, config_kwargs={"num_hidden_layers": k})` for layer k
(the blocks above are never built; the head still applies). For plain Hugging Face decoders the oracle is the
model loaded with k blocks, pooled by hand as decoder embedders do (left padding, last token, EOS). All models
are tiny random ones built by the tests (tests/tiny_models.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import save_hf, st_folder, tiny_bert, tiny_decoder, tokenizer
from transformers import AutoModel, AutoTokenizer

from bench import BenchError
from bench.data.beir import RetrievalSet
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached, evaluate_grid
from bench.hub import Backbone, resolve_backbone
from bench.reproduce import reference_specs
from bench.serving import Serving, resolve_eval
from bench.spec import POOLINGS, EvalSpec, RunSpec
from bench.storage import Plan
from bench.tasks import TASKS
from bench.search import top_k
from bench.tasks.retrieval import make_searcher, per_query_metrics
from bench.transforms import truncate
from methods import Checkpoint

TOL = 1e-5
TEXTS = ["A man is playing a guitar.", "hello", "The quick brown fox jumps over the lazy dog, again and again.",
         "Two dogs run through a field of tall grass while the sun sets.", "ok then", "What is the capital of France?"]


def served_by_st(folder: str, layer: int | None = None, **encode_kwargs) -> np.ndarray:
    """The oracle: SentenceTransformer's own encode of the full model, or of the model cut to `layer` blocks."""
    kwargs = {"config_kwargs": {"num_hidden_layers": layer}} if layer else {}
    return SentenceTransformer(folder, device="cpu", **kwargs).encode(TEXTS, batch_size=4, **encode_kwargs)


def assert_serves_like_st(folder: str, middle: int, **encoder_kwargs) -> Encoder:
    encoder = Encoder.named(folder, device="cpu", **encoder_kwargs)
    ours = encoder.vectors(TEXTS, 512, batch_size=4)
    np.testing.assert_allclose(ours[-1], served_by_st(folder), atol=TOL)
    np.testing.assert_allclose(ours[middle - 1], served_by_st(folder, middle), atol=TOL)
    return encoder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> str:
    return save_hf(tiny_bert(), tmp_path_factory.mktemp("bert"))


def test_bert_cls_dense_normalize_equals_sentence_transformers(bert_dir, tmp_path):
    folder = st_folder(tmp_path / "st", bert_dir, "cls", head=[("Dense", 48), ("Normalize",)])
    encoder = assert_serves_like_st(folder, middle=2)
    assert encoder.width == 48 and encoder.hidden_size == 64  # the dim axis spans what the head serves
    assert [type(m).__name__ for m in encoder.head] == ["Dense", "Normalize"]


def test_qwen3_decoder_lasttoken_default_prompt_equals_sentence_transformers(tmp_path):
    """Left padding and the default prompt: encode(texts) prepends "Represent this: " to every text."""
    hf = save_hf(tiny_decoder("qwen3"), tmp_path / "hf", tokenizer(padding_side="left"))
    folder = st_folder(tmp_path / "st", hf, "lasttoken", head=[("Normalize",)],
                       prompts={"sts": "Represent this: ", "query": "Q: "}, default_prompt_name="sts")
    encoder = assert_serves_like_st(folder, middle=2)
    assert encoder.tokenizer.padding_side == "left" and encoder.prompt_for(None) == "Represent this: "
    without_prompt = SentenceTransformer(folder, device="cpu").encode(TEXTS, prompt="")
    assert np.abs(encoder.vectors(TEXTS, 512)[-1] - without_prompt).max() > 1e-3  # the prompt did change them


def test_mean_without_prompt_tokens_and_layer_norm_equals_sentence_transformers(bert_dir, tmp_path):
    folder = st_folder(tmp_path / "st", bert_dir, "mean", include_prompt=False, head=[("LayerNorm",)],
                       prompts={"sts": "represent the meaning of this sentence: "}, default_prompt_name="sts")
    encoder = assert_serves_like_st(folder, middle=1)
    assert encoder.pooler.include_prompt is False


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("include_prompt", [True, False])
def test_every_pooling_mode_equals_sentence_transformers(pooling, include_prompt, bert_dir, tmp_path):
    folder = st_folder(tmp_path / "st", bert_dir, pooling, include_prompt=include_prompt,
                       prompts={"sts": "a prompt of several tokens: "}, default_prompt_name="sts")
    assert Encoder.named(folder, device="cpu").pooling == pooling
    assert_serves_like_st(folder, middle=2)


def test_minilm_full_and_middle_cells_equal_sentence_transformers():
    """all-MiniLM-L6-v2 (Transformer, mean Pooling, Normalize) at (6, 384), and at layer 3."""
    folder = resolve_backbone("minilm")
    encoder = assert_serves_like_st(folder, middle=3)
    assert (encoder.num_layers, encoder.width, encoder.pooling) == (6, 384, "mean")


def test_retrieval_roles_get_the_prompts_encode_prompt_name_gives(bert_dir, tmp_path):
    """Queries get the `query` prompt, documents the `document` prompt, STS sentences the default one: each equal
    to SentenceTransformer.encode(prompt_name=...) and to what the tasks' text sets are encoded with."""
    folder = st_folder(tmp_path / "st", bert_dir, "mean", head=[("Normalize",)],
                       prompts={"query": "search_query: ", "document": "search_document: ", "sts": "sts: "},
                       default_prompt_name="sts")
    encoder, st = Encoder.named(folder, device="cpu"), SentenceTransformer(folder, device="cpu")
    retrieval, sts = TASKS.get("scifact"), TASKS.get("stsb")
    for task, name, prompt_name in ((retrieval, "queries", "query"), (retrieval, "corpus", "document"),
                                    (sts, "sentences", "sts")):
        ours, _ = encode_cached(encoder, "tiny", name, Texts(TEXTS, 512, task.role(name)), Plan(4),
                                tmp_path / "cache")
        np.testing.assert_allclose(ours[-1], st.encode(TEXTS, prompt_name=prompt_name), atol=TOL)
    queries, _ = encode_cached(encoder, "tiny", "q", Texts(TEXTS, 512, "query"), Plan(4), tmp_path / "cache")
    corpus, _ = encode_cached(encoder, "tiny", "c", Texts(TEXTS, 512, "document"), Plan(4), tmp_path / "cache")
    assert not np.allclose(queries, corpus)  # one cache, two prompts: two encodings


def test_retrieval_scores_come_from_the_prompted_vectors(bert_dir, tmp_path):
    """End to end: evaluate_grid's nDCG@10 at the full cell equals the one computed from SentenceTransformer's
    own query and document vectors through the same search."""
    folder = st_folder(tmp_path / "st", bert_dir, "mean", head=[("Normalize",)],
                       prompts={"query": "find the passage about: ", "document": "passage: "})
    ids = [f"d{i}" for i in range(len(TEXTS))]
    data = RetrievalSet(corpus_ids=ids, corpus_texts=TEXTS, query_ids=["q0", "q1", "q2"],
                        query_texts=["a guitar player", "a fox and a dog", "the capital of France"],
                        qrels={"q0": {"d0": 1}, "q1": {"d2": 1}, "q2": {"d5": 1}})
    spec = resolve_eval(EvalSpec(precisions=("fp32",), dims=(64,)), Backbone(folder))
    rows, _ = evaluate_grid(Encoder.named(folder, device="cpu"), Checkpoint(folder, "tiny"), TASKS.get("scifact"),
                            data, spec)
    ours = {r["metric"]: r["score"] for r in rows if r.get("layer") == 3 and r.get("dim") == 64}
    st = SentenceTransformer(folder, device="cpu")
    corpus = truncate(st.encode(TEXTS, prompt_name="document"), 64, True)
    queries = truncate(st.encode(data.query_texts, prompt_name="query"), 64, True)
    ranked = top_k(make_searcher(corpus, corpus, "fp32", spec).index, queries, 100)[1]
    theirs = per_query_metrics([[ids[i] for i in row] for row in ranked], [data.qrels[q] for q in data.query_ids])
    assert ours["ndcg@10"] == pytest.approx(float(np.mean(theirs["ndcg@10"])), abs=1e-9)


def test_prompts_resolve_into_the_spec_and_change_the_run_id(bert_dir, tmp_path):
    folder = st_folder(tmp_path / "st", bert_dir, "cls", prompts={"query": "q: ", "STS": "sts: "})
    spec = resolve_eval(EvalSpec(), Backbone(folder))
    assert spec.pooling == "cls"
    assert dict(spec.prompts) == {"default": "", "document": "", "query": "q: "}
    override = resolve_eval(EvalSpec(prompts=(("default", "@STS"), ("document", "doc, with a comma: "))),
                            Backbone(folder))
    assert dict(override.prompts) == {"default": "sts: ", "document": "doc, with a comma: ", "query": "q: "}
    run = RunSpec("pretrained", "stsb", backbone=folder, eval=spec)
    assert run.run_id != RunSpec("pretrained", "stsb", backbone=folder, eval=override).run_id
    with pytest.raises(BenchError, match="has no prompt named 'passage'"):
        resolve_eval(EvalSpec(prompts=(("document", "@passage"),)), Backbone(folder))


def test_reference_runs_resolve_to_mean_pooling_and_are_committed():
    """Resolving MiniLM's and the tiny BERT's evaluation gives mean pooling (their own: no sentence-transformers
    config picks another), and every reference run_id has a committed result file: `bench reproduce` finds them."""
    committed = {path.stem.split("__")[2] for path in (Path(__file__).parents[1] / "results").glob("*.csv.gz")}
    specs = reference_specs()
    assert {s.eval.pooling for s in specs} == {"mean"}
    assert {s.run_id for s in specs} <= committed, sorted({s.run_id for s in specs} - committed)


def test_head_on_the_last_layer_only_is_recorded_and_keeps_pooled_states_below(bert_dir, tmp_path):
    folder = st_folder(tmp_path / "st", bert_dir, "mean", head=[("LayerNorm",)])
    every = Encoder.named(folder, device="cpu").vectors(TEXTS, 512)
    last = Encoder.named(folder, device="cpu", head_layers="last").vectors(TEXTS, 512)
    np.testing.assert_allclose(last[-1], every[-1], atol=TOL)  # the last layer is served as before
    pooled = Encoder.named(resolve_backbone(folder), device="cpu", pooling="mean")  # pooled states, no head
    pooled.head = []
    np.testing.assert_allclose(last[0], pooled.vectors(TEXTS, 512)[0], atol=TOL)
    assert not np.allclose(last[0], every[0], atol=1e-3)
    runs = {RunSpec("pretrained", "stsb", eval=EvalSpec(head_layers=h)).run_id for h in ("every", "last")}
    assert len(runs) == 2
    dense = st_folder(tmp_path / "dense", bert_dir, "mean", head=[("Dense", 48)])
    with pytest.raises(BenchError, match="changes the width"):
        Encoder.named(dense, device="cpu", head_layers="last")


def test_pooling_override_replaces_the_models_pooling_and_keeps_include_prompt(bert_dir, tmp_path):
    """--pooling max on a mean model that leaves its prompt out of pooling: served like the same model saved with
    max pooling (prompt still left out)."""
    kwargs = dict(include_prompt=False, head=[("Normalize",)], prompts={"sts": "a long prompt: "},
                  default_prompt_name="sts")
    folder = st_folder(tmp_path / "st", bert_dir, "mean", **kwargs)
    max_folder = st_folder(tmp_path / "max", bert_dir, "max", **kwargs)
    ours = Encoder.named(folder, device="cpu", pooling="max").vectors(TEXTS, 512)
    np.testing.assert_allclose(ours[-1], served_by_st(max_folder), atol=TOL)


def manual_last_token(folder: str, layers: int, prompt: str, eos_id: int | None) -> np.ndarray:
    """The decoder-embedder recipe by hand: prompt + text (+ EOS), left padded, the last position of the model
    loaded with `layers` blocks (its final norm applies to that last block's output)."""
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")  # the tokenizer the folder ships
    model = AutoModel.from_pretrained(folder, num_hidden_layers=layers).eval()
    ids = tok([prompt + t for t in TEXTS], truncation=True, max_length=511)["input_ids"]
    ids = [row + [eos_id] if eos_id is not None else row for row in ids]
    batch = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state[:, -1].numpy()


@pytest.mark.parametrize("kind", ["qwen3", "qwen2", "llama", "mistral", "gemma", "gemma3"])
def test_plain_decoders_pool_the_last_token_with_left_padding_and_eos(kind, tmp_path):
    """A plain decoder (no sentence-transformers config): last-token pooling, EOS appended where the tokenizer
    does not end texts with it, every layer through the final norm, equal to the model cut to k blocks."""
    folder = save_hf(tiny_decoder(kind), tmp_path / kind, tokenizer(eos_token="[unused0]"))
    encoder = Encoder.named(folder, device="cpu", pooling="lasttoken", prompts={"default": "Query: "})
    assert encoder.serving.append_eos and encoder.tokenizer.padding_side == "left"
    ours = encoder.vectors(TEXTS, 512, batch_size=4)
    eos = encoder.tokenizer.eos_token_id
    for layers in (1, 3):
        np.testing.assert_allclose(ours[layers - 1], manual_last_token(folder, layers, "Query: ", eos), atol=TOL)


def test_decoders_final_norm_applies_to_intermediate_layers(tmp_path):
    """Mean pooling of a plain Qwen3 at layer 2 equals the 2-block model's (whose last state is normed)."""
    folder = save_hf(tiny_decoder("qwen3"), tmp_path / "qwen3")
    ours = Encoder.named(folder, device="cpu", pooling="mean").vectors(TEXTS, 512)
    truncated = Encoder.named(folder, device="cpu", pooling="mean", num_layers=2).vectors(TEXTS, 512)
    np.testing.assert_allclose(ours[1], truncated[-1], atol=TOL)


def test_unknown_pooling_and_unknown_role_are_one_line():
    with pytest.raises(BenchError, match="unknown pooling 'maxx'"):
        EvalSpec(pooling="maxx")
    with pytest.raises(BenchError, match="unknown prompt role 'qeury'"):
        EvalSpec(prompts=(("qeury", "q: "),))
    with pytest.raises(BenchError, match="unknown text role"):
        Encoder.named("tiny-random-bert", device="cpu").prompt_for("passage")


def test_the_encoder_serves_the_resolved_spec_as_written():
    """Serving.of reads a resolved spec without looking anything up again: a prompt written "@@..." (a literal
    "@...", escaped so the spec is not read as naming one of the model's prompts) is served as "@...", and the
    written spec keeps the escaped form (its run_id)."""
    backbone = Backbone("tiny-random-bert")
    spec = resolve_eval(EvalSpec(prompts=(("query", "@@at: "),)), backbone)
    assert dict(spec.prompts) == {"default": "", "query": "@@at: ", "document": ""}
    assert resolve_eval(spec, backbone) == spec  # a written spec resolves to itself
    serving = Serving.of(backbone, spec)
    assert (serving.prompt_for("query"), serving.pooling, serving.sentence_transformers) == ("@at: ", "mean", False)
