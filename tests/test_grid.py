"""MUST: encode once, slice many. A cell of the one-pass grid equals a truly truncated model.

Oracle: a model loaded with only its first `layer` blocks (transformers' num_hidden_layers=layer, so the
blocks above are never built), pooled at its last layer, first `dim` coordinates kept, scored by the same task.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import BenchError
from bench.data.sts import load_stsb
from bench.encoder import Encoder, Texts
from bench.evaluate import evaluate_grid, grid
from bench.spec import EvalSpec, SubModel, default_dims
from bench.tasks import TASKS
from bench.transforms import truncate
from methods import Checkpoint


@pytest.mark.parametrize("backbone, cell", [("tiny-random-bert", SubModel(1, 32)), ("minilm", SubModel(3, 96)),
                                            ("minilm", SubModel(6, 384))])
def test_grid_cell_equals_truly_truncated_model(backbone, cell, data_dir):
    pairs = load_stsb(data_dir, "test").head(300)
    spec = EvalSpec(max_seq_len=64, dims=(cell.dim,), precisions=("fp32",))
    task = TASKS.get("stsb")
    full = Encoder.named(backbone, device="cpu")
    rows, _ = evaluate_grid(full, Checkpoint(backbone, backbone), task, pairs, spec)
    one_pass = {(r["layer"], r["dim"], r["metric"]): r["score"] for r in rows if r.get("dim", -1) > 0}

    truncated = Encoder.named(backbone, device="cpu", num_layers=cell.layer)
    assert truncated.num_layers == cell.layer  # the blocks above were never loaded
    texts = task.texts(pairs, spec)["sentences"][0]
    arrays = {"sentences": truncated.vectors(texts, 64)[-1:].repeat(cell.layer, axis=0)}
    metrics, _ = task.score_cell(pairs, arrays, task.prepare(pairs, {"sentences": (texts, 64)}), cell.layer,
                                 cell.dim, "fp32", spec)
    for metric, score in metrics.items():
        assert one_pass[(cell.layer, cell.dim, metric)] == pytest.approx(score, abs=1e-4)

    # and the vectors themselves agree
    vec_full = truncate(full.vectors(texts[:20], 64)[cell.layer - 1], cell.dim, True)
    vec_trunc = truncate(truncated.vectors(texts[:20], 64)[-1], cell.dim, True)
    np.testing.assert_allclose(vec_full, vec_trunc, atol=1e-5)


def test_default_grid_is_every_layer_times_halving_dims():
    assert default_dims(384) == (24, 48, 96, 192, 384)
    cells = grid(6, 384, EvalSpec())
    assert len(cells) == 30 and cells[-1] == SubModel(6, 384)


@pytest.mark.parametrize("layers, dims, message", [((7,), None, "layer 7 is outside"),
                                                   (None, (385,), "dim 385 is outside"),
                                                   ((0,), None, "layer 0 is outside")])
def test_cells_outside_the_backbone_are_refused(layers, dims, message):
    with pytest.raises(BenchError, match=message):
        grid(6, 384, EvalSpec(layers=layers, dims=dims, precisions=("fp32",)))


def test_encoder_is_length_sorted_but_order_preserving():
    enc = Encoder.named("tiny-random-bert", device="cpu")
    texts = ["a", "a much longer sentence with many more words in it", "mid length text"]
    together = enc.vectors(texts, 32, batch_size=2)
    alone = np.stack([enc.vectors([t], 32)[:, 0] for t in texts], axis=1)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_encoder_streams_to_a_memmap(tmp_path):
    enc = Encoder.named("tiny-random-bert", device="cpu")
    out = enc.vectors(["one", "two", "three"], 16, out_path=tmp_path / "x.npy")
    assert isinstance(out, np.memmap) and out.shape == (2, 3, 64)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), out)


def test_encode_returns_the_time_to_each_layer_and_keeps_none():
    """`encode` hands back its per-layer times (time from a batch's start to the end of block l: non-decreasing in
    l) with the vectors; nothing of the last encode stays on the encoder for another caller to read."""
    enc = Encoder.named("tiny-random-bert", device="cpu")
    vectors, seconds = enc.encode(Texts(["one", "two", "three"], 16), batch_size=2)
    assert vectors.shape == (2, 3, 64) and len(seconds) == enc.num_layers
    assert 0 < seconds[0] <= seconds[1]
    assert not hasattr(enc, "layer_seconds")


def test_loading_a_truncated_model_restores_the_transformers_log_level():
    """load_model silences the expected "unused weights" report of a truncated load, then restores the caller's
    level, also when the load fails."""
    import transformers

    from bench.hub import Backbone, load_model

    before = transformers.logging.get_verbosity()
    try:
        transformers.logging.set_verbosity_info()
        load_model(Backbone("tiny-random-bert"), num_layers=1)
        assert transformers.logging.get_verbosity() == transformers.logging.INFO
        with pytest.raises(BenchError, match="cannot load backbone"):
            load_model(Backbone("/nonexistent/model"), num_layers=1)
        assert transformers.logging.get_verbosity() == transformers.logging.INFO
    finally:
        transformers.logging.set_verbosity(before)
