"""Post-hoc heads (pca, matryoshka-adaptor, bebr) against independent oracles.

Oracles: the base model's own grid (an identity head must change nothing, bit for bit); sklearn's PCA on the same
fit set (the suite's training sentences, encoded here without the cache); the Matryoshka-Adaptor losses written
out term by term from the paper's formulas (methods/matryoshka_adaptor.py) in plain Python loops; sign binarization
for bebr with one level and an untrained (identity) binarization block; the symmetric distance of BEBR computed from
the codes by Hamming distances (scipy) for several levels; a different head per layer written out by hand on
the base model's vectors of that layer; and bench.train's data order for the head's loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import hamming
from sklearn.decomposition import PCA as SklearnPCA

from bench.data.beir import RetrievalSet
from bench.data.pairs import load_training_set
from bench.data.sts import STSPairs
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid
from bench.heads import LinearHead, ResidualBinaryHead, ResidualMLPHead, load_head, save_head
from bench.runner import make_specs
from bench.spec import Budget, EvalSpec
from bench.suites import smoke, with_overrides
from bench.tasks import TASKS
from bench.tasks.retrieval import make_searcher
from bench.tasks.sts import pair_similarity
from bench.loop import ExampleOrder, micro_batch
from bench.precisions import bytes_per_vector
from bench.transforms import BinaryCodes
from methods import METHODS, Checkpoint, RunContext
from methods._heads import ResidualMLP, fit_texts, train_head, unit_rows
from methods.bebr import RecurrentBinarizer, greedy_weights
from methods.matryoshka_adaptor import adaptor_losses, nearest_neighbours

WIDTH = 64  # the tiny random BERT's
TIMING = {"search_ms_per_query"}  # measured, so never equal between two runs


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder.named("tiny-random-bert", device="cpu")


def sts_slice() -> STSPairs:
    words = "a man is playing a guitar while the woman slices some onions on a wooden board".split()
    rng = np.random.default_rng(22)
    sentences = [" ".join(rng.choice(words, 6)) for _ in range(80)]
    return STSPairs(sentences[:40], sentences[40:], rng.uniform(0, 5, 40), 0.0, 5.0)


def retrieval_slice() -> RetrievalSet:
    return RetrievalSet(corpus_ids=[f"d{i}" for i in range(60)],
                        corpus_texts=[f"document {i} about topic {i % 7} and {i % 5}" for i in range(60)],
                        query_ids=[f"q{i}" for i in range(6)], query_texts=[f"topic {i}" for i in range(6)],
                        qrels={f"q{i}": {f"d{i}": 1, f"d{i + 7}": 1} for i in range(6)})


TASK_DATA = [("stsb", sts_slice), ("scifact", retrieval_slice)]
SPEC = EvalSpec(dims=(16, 32, 64), max_doc_len=32)


def cells(rows: list[dict]) -> list[dict]:
    """The scored cells' rows without what legitimately differs: the head id and measured search times."""
    return [{k: v for k, v in r.items() if k != "head"} for r in rows if r.get("dim", -1) > 0
            and r["metric"] not in TIMING]


def grid(encoder, task: str, data, head: str | None = None) -> tuple[list[dict], dict]:
    rows, examples = evaluate_grid(encoder, Checkpoint("tiny", "tiny", head=head), TASKS.get(task), data, SPEC)
    return cells(rows), examples


# ---- identity -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,data", TASK_DATA)
def test_identity_head_gives_exactly_the_base_models_grid(tiny, task, data, tmp_path):
    """A linear head with weight I and bias 0 at every layer: every cell, precision, metric and per-example value
    equals the base model's, exactly (the head is applied before truncation and changes no bit)."""
    eye, zero = np.eye(WIDTH, dtype=np.float32), np.zeros(WIDTH, dtype=np.float32)
    head = save_head(tmp_path / "identity.safetensors", LinearHead({1: eye, 2: eye}, {1: zero, 2: zero}))
    base_rows, base_examples = grid(tiny, task, data())
    rows, examples = grid(tiny, task, data(), str(head))
    assert rows == base_rows and len(rows) > 0
    assert examples.keys() == base_examples.keys()
    assert all(np.array_equal(examples[k], base_examples[k]) for k in examples)


# ---- distinct heads on distinct layers ------------------------------------------------------------------------------

def base_vectors(encoder, data: STSPairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The base model's vectors of every layer, of the task's distinct sentences (its order), and the pairs' rows."""
    (texts, max_len), = TASKS.get("stsb").texts(data, SPEC).values()
    index = {t: i for i, t in enumerate(texts)}
    return (encoder.vectors(texts, max_len), np.array([index[s] for s in data.sentences1]),
            np.array([index[s] for s in data.sentences2]))


def test_each_layer_goes_through_its_own_linear_head(tiny, tmp_path):
    """A different random linear head per layer: every fp32 cell's pair similarities are the cosines of that
    layer's vectors through that layer's head, written out here (x_l @ W_l + b_l, cut, normalized). Catches a
    head applied to the wrong layer, or one layer's head applied to all."""
    rng = np.random.default_rng(23)
    weights = {layer: rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) for layer in (1, 2)}
    biases = {layer: rng.standard_normal(WIDTH).astype(np.float32) for layer in (1, 2)}
    head = save_head(tmp_path / "distinct.safetensors", LinearHead(weights, biases))
    data = sts_slice()
    _, examples = grid(tiny, "stsb", data, str(head))
    vectors, left, right = base_vectors(tiny, data)
    for layer in (1, 2):
        headed = vectors[layer - 1] @ weights[layer] + biases[layer]
        for dim in SPEC.dims:
            cut = headed[:, :dim] / np.linalg.norm(headed[:, :dim], axis=1, keepdims=True)
            expected = np.einsum("nd,nd->n", cut[left], cut[right])
            np.testing.assert_allclose(examples[f"{layer}/{dim}/fp32/similarity"], expected, atol=1e-5)


def test_each_layer_is_coded_by_its_own_bebr_head(tiny, tmp_path):
    """A different trained two-level bebr binarizer per layer: every binary cell's pair similarities are the SDC
    cosines of the codes that layer's binarizer makes of that layer's vectors (bench/heads.codes by hand per layer,
    then the cosine of the reconstructions). Catches codes made with another layer's blocks or vectors."""
    fit = np.random.default_rng(24).standard_normal((100, WIDTH)).astype(np.float32)
    head = bebr_head({layer: binarizer(2, fit, trained=True, seed=layer) for layer in (1, 2)})
    path = save_head(tmp_path / "bebr-distinct.safetensors", head)
    data = sts_slice()
    _, examples = grid(tiny, "stsb", data, str(path))
    vectors, left, right = base_vectors(tiny, data)
    for layer in (1, 2):
        for dim in SPEC.dims:
            codes = head.codes(layer, vectors[layer - 1], dim).reconstruction(normalize=True)
            expected = np.einsum("nd,nd->n", codes[left], codes[right])
            np.testing.assert_allclose(examples[f"{layer}/{dim}/binary/similarity"], expected, atol=1e-5)
    assert not np.allclose(head.codes(1, vectors[1], 16).bits, head.codes(2, vectors[1], 16).bits)  # distinct


# ---- pca -------------------------------------------------------------------------------------------------------------

def correlated(n: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, width)) @ rng.standard_normal((width, width)) + 3.0).astype(np.float32)


def test_pca_head_is_sklearns_pca():
    """Components (sign convention included), mean and transform equal sklearn's PCA (full SVD, in float64 as
    ours); the d-dim cell is sklearn's PCA with n_components = d."""
    x = correlated(500, WIDTH)
    head, log = METHODS.get("pca")().fit(METHODS.get("pca").Params(), x[None], Budget(), 0)
    oracle = SklearnPCA(svd_solver="full").fit(x.astype(np.float64))
    np.testing.assert_allclose(head.weights[1].T, oracle.components_, atol=1e-6)
    np.testing.assert_allclose(head.apply(1, x), oracle.transform(x), rtol=1e-4, atol=1e-3)  # float32 products
    first_16 = SklearnPCA(16, svd_solver="full").fit_transform(x.astype(np.float64))
    np.testing.assert_allclose(head.apply(1, x)[:, :16], first_16, rtol=1e-4, atol=1e-3)
    assert log == []


def test_pca_is_fitted_on_the_suites_training_sentences(data_dir, tmp_path):
    """End to end on the smoke suite: the head of every layer equals sklearn's PCA fitted on the tiny BERT's vectors
    of the first `fit_sentences` distinct SNLI training texts (anchor, positive, negative in file order, less the
    triplets that share a text with an evaluation set), encoded here directly, without the cache."""
    spec = next(iter(make_specs(with_overrides(smoke(), tasks=("stsb",)), "pca")))
    (checkpoint,) = METHODS.get("pca")().checkpoints(spec, RunContext(data_dir, tmp_path, tmp_path / "cache", "cpu"))
    head = load_head(checkpoint.head)
    limit = dict(spec.params)["fit_sentences"]
    texts = list(dict.fromkeys(t for triplet in load_training_set(data_dir, "snli").texts for t in triplet))[:limit]
    vectors = Encoder.named("tiny-random-bert", device="cpu").vectors(texts, spec.budget.max_seq_len)
    for layer in (1, 2):
        oracle = SklearnPCA(svd_solver="full").fit(vectors[layer - 1].astype(np.float64))
        np.testing.assert_allclose(head.apply(layer, vectors[layer - 1]), oracle.transform(vectors[layer - 1]),
                                   atol=2e-3)


def test_fit_set_is_each_distinct_training_text_once_in_order_up_to_the_cap():
    examples = [("a", "b", "c"), ("a", "d", "b"), ("e", "f", "g")]
    assert fit_texts(examples, 100) == ["a", "b", "c", "d", "e", "f", "g"]
    assert fit_texts(examples, 4) == ["a", "b", "c", "d"]


# ---- matryoshka-adaptor -------------------------------------------------------------------------------------------

def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def paper_losses(e: np.ndarray, f: np.ndarray, k: int) -> dict[str, float]:
    """The paper's three terms as means, written out: every pair i != j and every prefix m = 1..H for L_pair;
    each i's k nearest other vectors by the original cosine for L_topk; the mean absolute coordinate for L_rec."""
    n, width = e.shape
    sim = [[cosine(e[i], e[j]) for j in range(n)] for i in range(n)]
    pair = [abs(sim[i][j] - cosine(f[i][:m], f[j][:m])) for i in range(n) for j in range(n) if i != j
            for m in range(1, width + 1)]
    topk = []
    for i in range(n):
        nearest = sorted((j for j in range(n) if j != i), key=lambda j: -sim[i][j])[:k]
        topk += [abs(sim[i][j] - cosine(f[i][:m], f[j][:m])) for j in nearest for m in range(1, width + 1)]
    rec = [abs(e[i][c] - f[i][c]) for i in range(n) for c in range(width)]
    return {"pair": sum(pair) / len(pair), "topk": sum(topk) / len(topk), "rec": sum(rec) / len(rec)}


def random_adaptor(width: int, seed: int = 0) -> ResidualMLP:
    torch.manual_seed(seed)
    adaptor = ResidualMLP(width, 8)
    torch.nn.init.normal_(adaptor.down.weight, std=0.3)  # off the identity start, so every term is non-zero
    return adaptor


def test_adaptor_losses_equal_the_papers_formulas_on_a_tiny_case():
    n, width, k = 6, 5, 2
    e = unit_rows(np.random.default_rng(1).standard_normal((n, width)))
    adaptor = random_adaptor(width)
    neighbours = torch.from_numpy(nearest_neighbours(e.numpy(), k))
    with torch.no_grad():
        ours = adaptor_losses(e, adaptor(e), e[neighbours], adaptor(e[neighbours]), tuple(range(1, width + 1)))
        oracle = paper_losses(e.double().numpy(), adaptor(e).double().numpy(), k)
    for term in ("pair", "topk", "rec"):
        assert ours[term].item() == pytest.approx(oracle[term], rel=1e-5), term
        assert oracle[term] > 0
    method = METHODS.get("matryoshka-adaptor")()
    params = method.Params(alpha=0.5, beta=2.0)
    total = method.objective(ours, params).item()
    assert total == pytest.approx(oracle["topk"] + 0.5 * oracle["pair"] + 2.0 * oracle["rec"], rel=1e-5)


def test_nearest_neighbours_are_the_most_cosine_similar_other_rows():
    unit = unit_rows(np.random.default_rng(2).standard_normal((300, 16))).numpy()
    ours = nearest_neighbours(unit, 5, block=64)  # several blocks
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(ours, np.argsort(-sims, axis=1, kind="stable")[:, :5])


def test_adaptor_head_computes_the_trained_module_in_numpy():
    x = correlated(40, WIDTH, seed=3)
    adaptor = random_adaptor(WIDTH)
    head = ResidualMLPHead({2: adaptor.block()})
    with torch.no_grad():
        expected = adaptor(unit_rows(x)).numpy()
    np.testing.assert_allclose(head.apply(2, x), expected, atol=1e-5)
    np.testing.assert_array_equal(head.apply(1, x), x)  # a layer without an adaptor passes through


# ---- bebr ------------------------------------------------------------------------------------------------------------

def binarizer(levels: int, x: np.ndarray, trained: bool, seed: int = 0) -> RecurrentBinarizer:
    """The method's own module for one layer: untrained (identity blocks, greedy weights) or randomly moved."""
    torch.manual_seed(seed)
    model = RecurrentBinarizer(WIDTH, WIDTH, greedy_weights(unit_rows(x), levels))
    if trained:
        for block in model.blocks:
            torch.nn.init.normal_(block.down.weight, std=0.2)
    return model


def bebr_head(model_per_layer: dict[int, RecurrentBinarizer]) -> ResidualBinaryHead:
    return ResidualBinaryHead({layer: [b.block() for b in m.blocks] for layer, m in model_per_layer.items()},
                              {layer: m.weights.detach().numpy().copy() for layer, m in model_per_layer.items()})


@pytest.mark.parametrize("task,data", TASK_DATA)
def test_bebr_with_one_bit_and_an_untrained_block_is_sign_binarization(tiny, task, data, tmp_path):
    """One level, identity binarization block: its codes are the sign bits of the vectors, so every binary and
    binary+rescore cell (scores, per-example values, bytes) equals the base model's; it has no float cells."""
    fit = np.random.default_rng(4).standard_normal((100, WIDTH)).astype(np.float32)
    head = save_head(tmp_path / "bebr.safetensors", bebr_head({1: binarizer(1, fit, False), 2: binarizer(1, fit,
                                                                                                         False)}))
    base_rows, base_examples = grid(tiny, task, data())
    rows, examples = grid(tiny, task, data(), str(head))
    binary = [r for r in base_rows if r["precision"].startswith("binary")]
    assert rows == binary and len(rows) > 0
    assert {r["precision"] for r in rows} == ({"binary"} if task == "stsb" else set(ResidualBinaryHead.PRECISIONS))
    assert all(np.array_equal(examples[k], base_examples[k]) for k in examples)


def test_bebr_numpy_codes_are_the_trained_modules_signs():
    x = correlated(50, WIDTH, seed=5)
    model = binarizer(3, x, trained=True)
    head = bebr_head({1: model})
    codes = head.codes(1, x, 32)
    residual, reconstruction, expected = unit_rows(x), 0, []
    with torch.no_grad():
        for block, weight in zip(model.blocks, model.weights):
            positive = block(residual) > 0
            expected.append(np.packbits(positive[:, :32].numpy(), axis=-1))
            reconstruction = reconstruction + weight * (2 * positive.float() - 1)
            residual = unit_rows(x) - reconstruction
        np.testing.assert_allclose(codes.reconstruction(normalize=False), model(unit_rows(x))[:, :32].numpy(),
                                   atol=1e-6)
    np.testing.assert_array_equal(codes.bits, np.concatenate(expected, axis=-1))
    assert head.bits_per_dim == 3 and codes.bits.shape == (50, 3 * 32 // 8)


def random_codes(n: int, dim: int, weights: tuple[float, ...], seed: int) -> BinaryCodes:
    bits = np.random.default_rng(seed).integers(0, 2, (n, len(weights) * dim)).astype(bool)
    return BinaryCodes(np.packbits(bits, axis=-1), dim, weights)


def sdc(a: BinaryCodes, b: BinaryCodes) -> np.ndarray:
    """BEBR's symmetric distance from the codes alone: sum_{t,s} w_t w_s (dim - 2 hamming(a_t, b_s))."""
    def level(codes, i, t):
        return np.unpackbits(codes.bits[i])[t * codes.dim:(t + 1) * codes.dim]
    out = np.zeros((len(a.bits), len(b.bits)))
    for i in range(len(a.bits)):
        for j in range(len(b.bits)):
            out[i, j] = sum(wt * ws * (a.dim - 2 * a.dim * hamming(level(a, i, t), level(b, j, s)))
                            for t, wt in enumerate(a.weights) for s, ws in enumerate(b.weights))
    return out


def test_sdc_is_the_inner_product_of_reconstructions_and_ranks_retrieval():
    weights = (0.6, 0.25, 0.1)
    corpus, queries = random_codes(80, 16, weights, 6), random_codes(7, 16, weights, 7)
    scores = sdc(queries, corpus)
    np.testing.assert_allclose(queries.reconstruction(False) @ corpus.reconstruction(False).T, scores, atol=1e-5)
    norms_q, norms_c = np.sqrt(np.diag(sdc(queries, queries))), np.sqrt(np.diag(sdc(corpus, corpus)))
    floats = np.zeros((80, 16), dtype=np.float32)  # the float vectors: binary+rescore would rescore with them
    for normalize, oracle in ((False, scores), (True, scores / norms_q[:, None] / norms_c[None])):
        searcher = make_searcher(floats, floats, "binary", EvalSpec(normalize=normalize), (corpus, queries))
        ranked = searcher.search(np.zeros((7, 16), dtype=np.float32), 10)
        best = np.take_along_axis(oracle, ranked, 1)
        np.testing.assert_allclose(best, -np.sort(-oracle, axis=1)[:, :10], atol=1e-5)  # the top 10 by SDC
        assert not searcher.timed  # a float emulation of the bitwise kernel: its time is not reported
    size = make_searcher(floats, floats, "binary", EvalSpec(), (corpus, queries)).index_bytes()
    assert 80 * 3 * 16 // 8 <= size < 80 * 3 * 16 // 8 + 2048  # the codes, 3 bits per dimension
    assert bytes_per_vector(16, "binary", bits_per_dim=3) == 6 and bytes_per_vector(16, "fp32", 3) == 64


def test_sts_binary_with_multi_bit_codes_is_the_sdc_cosine():
    codes = random_codes(20, 24, (0.5, 0.2), 8)
    left, right = np.arange(10), np.arange(10, 20)
    scores = sdc(codes, codes)
    norms = np.sqrt(np.diag(scores))
    expected = scores[left, right] / norms[left] / norms[right]
    np.testing.assert_allclose(pair_similarity(np.zeros((20, 24)), left, right, "binary", codes), expected, atol=1e-6)


def test_bebr_rows_store_bits_per_dimension(tiny, tmp_path):
    fit = np.random.default_rng(9).standard_normal((100, WIDTH)).astype(np.float32)
    head = save_head(tmp_path / "bebr2.safetensors", bebr_head({layer: binarizer(2, fit, True) for layer in (1, 2)}))
    rows, _ = evaluate_grid(tiny, Checkpoint("tiny", "tiny", head=str(head)), TASKS.get("scifact"), retrieval_slice(),
                            SPEC)
    scored = [r for r in rows if r.get("dim", -1) > 0]
    copy = {"binary": 0, "binary+rescore": 0, "binary+rescore-int8": 1, "binary+rescore-fp32": 4}  # bytes per dim
    assert {r["bytes_per_vector"] == r["dim"] * 2 // 8 + copy[r["precision"]] * r["dim"] for r in scored} == {True}
    assert not [r for r in scored if r["metric"] == "search_ms_per_query"]  # SDC cells: no measured search time
    assert {r["precision"] for r in scored} == set(copy)
    assert load_head(head).bits_per_dim == 2


# ---- the head's training loop ---------------------------------------------------------------------------------------

def test_head_training_reads_bench_trains_data_order_under_the_budget():
    """Step s, micro-batch m reads exactly the examples bench.train's loop would (same seeded order), for
    budget.steps steps of grad_accum micro-batches, one loss row per step."""
    budget = Budget(steps=5, batch_size=4, grad_accum=2, lr=1e-3)
    seen = []
    weight = torch.nn.Parameter(torch.ones(3, 3))
    module = torch.nn.Module()
    module.weight = weight

    def batch_loss(idx):
        seen.append(idx.tolist())
        return (weight.sum() - len(idx)) ** 2

    log = train_head(module, batch_loss, 30, budget, seed=7, tag={"layer": 3})
    order = ExampleOrder(30, 7)
    assert seen == [micro_batch(order, s, m, 0, 1, budget) for s in range(5) for m in range(2)]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5] and {row["layer"] for row in log} == {3}
    assert not torch.equal(weight.detach(), torch.ones(3, 3))


def test_head_files_round_trip(tmp_path):
    x = correlated(10, WIDTH, seed=10)
    heads = [ResidualMLPHead({1: random_adaptor(WIDTH).block()}),
             bebr_head({1: binarizer(2, x, trained=True), 2: binarizer(2, x, trained=True, seed=1)})]
    for head in heads:
        loaded = load_head(save_head(tmp_path / f"{head.KIND}.safetensors", head))
        assert type(loaded) is type(head)
        np.testing.assert_array_equal(loaded.apply(1, x), head.apply(1, x))
        if head.codes(2, x, 16) is not None:
            np.testing.assert_array_equal(loaded.codes(2, x, 16).bits, head.codes(2, x, 16).bits)
            assert loaded.codes(2, x, 16).weights == head.codes(2, x, 16).weights
