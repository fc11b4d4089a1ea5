"""The registry of public elastic models, and bringing any model to `bench run`.

Every entry is validated offline (pooling, prompt roles, trained cells inside the model, each fact sourced or
marked unverified), and its loading path runs on a local folder laid out like it: the same architecture family,
the same sentence-transformers modules (Dense widths scaled down), the same prompts; the entry's hub id is pointed
at that folder. Oracle for the vectors: SentenceTransformer.encode with the entry's prompt (and, for nomic, the
layer norm the model card applies after it). The CLI runs end to end on tiny folders; bad input is one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from tiny_models import needs_remote_code, save_hf, st_folder, tiny_bert, tiny_decoder, tokenizer

import bench.models
from bench import BenchError
from bench.cli import main
from bench.data.sts import load_stsb
from bench.encoder import Encoder
from bench.hub import Backbone
from bench.models import PUBLIC_MODELS, validate
from bench.results import examples_path, load_results
from bench.runner import make_specs
from bench.serving import resolve_eval
from bench.spec import EvalSpec, RunSpec, SubModel, default_dims
from bench.suites import default, get_suite, with_overrides
from methods import METHODS, RunContext

TEXTS = ["A man is playing a guitar.", "hello", "What is the capital of France?", "Two dogs run in a field."]
# The architecture family each entry's layout folder is built from (nomic's NomicBert is custom code over BERT).
FAMILY = {"nomic-embed-text-v1.5": "bert", "mxbai-embed-2d-large-v1": "bert", "Qwen3-Embedding-0.6B": "qwen3",
          "EmbeddingGemma-300m": "gemma3", "Starbucks_STS": "bert", "mdbr-leaf-ir": "bert"}
# The prompts the layout's config_sentence_transformers.json holds, where the real one's were seen.
SHIPPED_PROMPTS = {"Qwen3-Embedding-0.6B": dict(PUBLIC_MODELS["Qwen3-Embedding-0.6B"].prompts),
                   "EmbeddingGemma-300m": {**dict(PUBLIC_MODELS["EmbeddingGemma-300m"].prompts),
                                           "STS": "task: sentence similarity | query: "}}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_entry_is_valid_and_the_six_models_are_there():
    assert set(PUBLIC_MODELS) == set(FAMILY)
    for entry in PUBLIC_MODELS.values():
        validate(entry)
        assert entry.cells() and all(SubModel(*cell) for cell in entry.cells())
    assert len({e.hub_id for e in PUBLIC_MODELS.values()}) == len(PUBLIC_MODELS)
    assert PUBLIC_MODELS["Starbucks_STS"].cells() == ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
    assert PUBLIC_MODELS["nomic-embed-text-v1.5"].needs_remote_code


@pytest.mark.parametrize("change, message", [
    (dict(pooling="maxx"), "unknown pooling 'maxx'"),
    (dict(trained_dims=(64, 1024)), "trained cell (12, 1024) is outside the model (12 layers x 768)"),
    (dict(prompts=(("passage", "p: "),)), "unknown prompt role 'passage'"),
    (dict(revision="main"), "revision 'main' is not a 40-digit commit"),
    (dict(sources=()), "fact 'revision' has no source and is not marked unverified"),
    (dict(modules=("Dense",)), "must be Pooling followed by"),
    (dict(extra=("rescale",)), "unknown extra step 'rescale'"),
])
def test_a_bad_entry_fails_validation_with_one_line(change, message):
    with pytest.raises(BenchError, match=re.escape(message)) as err:
        validate(replace(PUBLIC_MODELS["nomic-embed-text-v1.5"], **change))
    assert "\n" not in str(err.value)


def layout_like(entry, folder) -> str:
    """A local folder laid out like `entry`: its architecture family, Pooling, modules after pooling (each Dense
    doubling then restoring the width, as EmbeddingGemma's 768 -> 3072 -> 768, or widening, as mdbr's 384 -> 768)
    and the prompts its configuration ships."""
    family = FAMILY[entry.name]
    model = tiny_bert() if family == "bert" else tiny_decoder(family)
    padding = "left" if entry.pooling == "lasttoken" else "right"
    hf = save_hf(model, folder / "hf", tokenizer(padding_side=padding))
    head, dense = [], [m for m in entry.modules if m == "Dense"]
    widths = [128, 64] if len(dense) == 2 else [96]
    for module in entry.modules[1:]:
        head.append(("Dense", widths.pop(0), torch.nn.Identity()) if module == "Dense" else (module,))
    st = st_folder(folder / "st", hf, entry.pooling, head=head, prompts=SHIPPED_PROMPTS.get(entry.name))
    return needs_remote_code(st) if entry.needs_remote_code else st


@pytest.fixture
def registered(monkeypatch, tmp_path):
    """Point an entry's hub id at a local layout folder of it; returns (entry, folder)."""
    def register(name: str, **changes):
        entry = PUBLIC_MODELS[name]
        folder = layout_like(entry, tmp_path / name)
        local = replace(entry, hub_id=folder, **changes)
        monkeypatch.setitem(PUBLIC_MODELS, name, local)
        return local, folder
    return register


@pytest.mark.parametrize("name", list(FAMILY))
def test_entry_loading_path_on_a_local_folder_laid_out_like_it(name, registered, tmp_path):
    entry, folder = registered(name)
    trust = entry.needs_remote_code
    encoder = Encoder.named(name, device="cpu", trust_remote_code=trust)
    assert encoder.pooling == entry.pooling and encoder.serving.revision == entry.revision
    assert [type(m).__name__ for m in encoder.head] == list(entry.modules[1:])
    assert encoder.prompts == entry.role_prompts() and encoder.serving.extra == entry.extra
    st = SentenceTransformer(folder, device="cpu", trust_remote_code=trust)
    for role in ("default", "query", "document"):
        theirs = torch.tensor(st.encode(TEXTS, prompt=entry.role_prompts()[role]))
        if "layer_norm" in entry.extra:  # what the model card (and mteb) do after encode
            theirs = torch.nn.functional.layer_norm(theirs, (theirs.shape[1],))
        ours = encoder.vectors(TEXTS, 512, role=None if role == "default" else role)[-1]
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)

    spec = resolve_eval(EvalSpec(), Backbone(name, trust))
    assert spec.pooling == entry.pooling and dict(spec.prompts) == entry.role_prompts()
    assert set(default_dims(entry.width)) | {d for _, d in entry.cells()} == set(spec.dims)
    run = RunSpec("pretrained", "stsb", backbone=name, eval=spec)
    (checkpoint,) = METHODS.get("pretrained")().checkpoints(run, RunContext(tmp_path, tmp_path, tmp_path))
    assert checkpoint.targets == tuple(SubModel(*cell) for cell in entry.cells())


def test_an_entrys_extra_step_applies_to_every_layer(registered):
    """nomic's layer norm before slicing, at a middle layer: layer 1 of the 3-block layout equals the oracle's
    SentenceTransformer cut to 1 block (its head still applies), then the layer norm, as the model card does."""
    entry, folder = registered("nomic-embed-text-v1.5")
    assert entry.extra == ("layer_norm",)
    ours = Encoder.named(entry.name, device="cpu", trust_remote_code=True).vectors(TEXTS, 512, role="query")
    cut = SentenceTransformer(folder, device="cpu", trust_remote_code=True, config_kwargs={"num_hidden_layers": 1})
    theirs = torch.tensor(cut.encode(TEXTS, prompt=entry.role_prompts()["query"]))
    np.testing.assert_allclose(ours[0], torch.nn.functional.layer_norm(theirs, (theirs.shape[1],)).numpy(),
                               atol=1e-5)
    assert len(ours) == 3 and not np.allclose(ours[0], theirs.numpy(), atol=1e-2)  # the step is not a no-op here


def test_an_entry_whose_model_serves_another_pooling_fails_loudly(registered):
    registered("Starbucks_STS", pooling="cls")  # the folder serves mean
    with pytest.raises(BenchError, match="registry entry 'Starbucks_STS' says cls pooling but .* serves mean"):
        Encoder.named("Starbucks_STS", device="cpu")


def test_bench_ls_lists_the_registered_models(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name, entry in PUBLIC_MODELS.items():
        assert f"model {name}: {entry.hub_id}@" in out
    assert "suite public-models" in out and "needs --trust-remote-code" in out


def test_public_models_suite_is_pretrained_only_on_sts_and_retrieval():
    suite = get_suite("public-models")
    assert suite.methods == "pretrained" and set(suite.backbones) == set(PUBLIC_MODELS)
    assert {"stsb", "scifact"} <= set(suite.tasks)
    one = with_overrides(suite, backbone="minilm")
    assert one.backbones == () and one.backbone == "minilm"


def test_run_with_a_registered_model_marks_its_trained_cells(registered, data_dir, tmp_path):
    """`bench run --backbone Starbucks_STS`, on a 3-layer x 64 layout with a scaled diagonal: the trained cells
    are the rows marked is_target (what the heatmaps box), and the grid's dims include them."""
    registered("Starbucks_STS", num_layers=3, width=64, trained_cells=((1, 16), (2, 32), (3, 64)))
    args = ["run", "--methods", "pretrained", "--backbone", "Starbucks_STS", "--tasks", "stsb", "--precisions",
            "fp32", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results")]
    assert main(args) == 0
    frame = load_results(tmp_path / "results")
    quality = frame[frame.metric == "spearman"]
    assert sorted(set(quality.dim)) == [16, 32, 64]
    assert sorted(zip(quality.loc[quality.is_target, "layer"], quality.loc[quality.is_target, "dim"])) == [
        (1, 16), (2, 32), (3, 64)]


def test_bench_run_on_a_sentence_transformers_folder_equals_its_encode(data_dir, tmp_path):
    """`bench run --methods pretrained --backbone FOLDER --tasks stsb`: the full cell's pair similarities equal the
    cosines of SentenceTransformer.encode on the same sentences, and so does its Spearman (to 0.1 here: this random
    model's cosines crowd near 1, where float32 noise of 1e-7 swaps near-tied pairs; on MiniLM the two agree to
    1e-4, see the README). Its dims follow the width the model serves (a 64 -> 48 Dense: 24, 48)."""
    folder = st_folder(tmp_path / "st", save_hf(tiny_bert(), tmp_path / "hf"), "mean",
                       head=[("Dense", 48), ("Normalize",)])
    results = tmp_path / "results"
    assert main(["run", "--methods", "pretrained", "--backbone", folder, "--tasks", "stsb", "--data-dir",
                 str(data_dir), "--results-dir", str(results)]) == 0
    frame = load_results(results)
    quality = frame[(frame.metric == "spearman") & (frame.precision == "fp32")]
    assert sorted(set(quality.dim)) == [24, 48] and sorted(set(quality.layer)) == [1, 2, 3]
    ours = float(quality[(quality.layer == 3) & (quality.dim == 48)].score.iloc[0])
    pairs = load_stsb(data_dir, "test")
    st = SentenceTransformer(folder, device="cpu")
    left, right = st.encode(pairs.sentences1, batch_size=64), st.encode(pairs.sentences2, batch_size=64)
    cosines = np.einsum("nd,nd->n", left, right)
    with np.load(examples_path(next(results.glob("*.csv.gz")))) as examples:
        np.testing.assert_allclose(examples["3/48/fp32/similarity"], cosines, atol=1e-5)
    assert ours == pytest.approx(100 * spearmanr(cosines, pairs.scores).statistic, abs=0.1)
    assert json.loads(frame["eval"].iloc[0])["pooling"] == "mean"  # the served pooling is recorded


def test_default_suite_dims_follow_a_given_backbone(tmp_path):
    """--backbone without --dims: the default rule on the width the model serves, full width included (a
    64-wide model is not refused for the suite's dim 128 any more)."""
    suite = with_overrides(default(), backbone="tiny-random-bert")
    assert suite.eval.dims is None
    assert {s.eval.dims for s in make_specs(suite, "pretrained")} == {None}
    assert with_overrides(default(), backbone="tiny-random-bert", dims=(16, 32)).eval.dims == (16, 32)
    assert default().eval.dims == (16, 32, 64, 128, 256, 384)  # the default suite keeps MiniLM's dims
    assert default_dims(768)[-1] == 768


SMOKE = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--precisions", "fp32"]


@pytest.mark.parametrize("extra, message", [
    (["--pooling", "maxx"], "unknown pooling 'maxx'"),
    (["--prompts", "default=@STS"], "has no prompt named 'STS'"),
    (["--prompts", "qeury=q: "], "unknown prompt role 'qeury'"),
    (["--prompts", "search_query: "], "expected --prompts ROLE=TEXT"),
    (["--head-layers", "some"], "unknown head_layers 'some'"),
])
def test_bad_model_input_is_one_clear_line(extra, message, tmp_path, data_dir, capsys):
    args = SMOKE + ["--data-dir", str(data_dir), "--results-dir", str(tmp_path)] + extra
    assert main(args) == 2
    assert message in error_line(capsys)
    assert not list(tmp_path.glob("*.csv.gz"))


def test_a_model_needing_remote_code_is_refused_unless_trusted(tmp_path, data_dir, capsys):
    folder = needs_remote_code(st_folder(tmp_path / "st", save_hf(tiny_bert(layers=2), tmp_path / "hf"), "mean"))
    args = SMOKE + ["--backbone", folder, "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r")]
    assert main(args) == 2
    assert "--trust-remote-code" in error_line(capsys)
    assert main(args + ["--trust-remote-code"]) == 0
    assert not load_results(tmp_path / "r").empty


def test_registered_remote_code_model_is_refused_before_any_download(capsys, tmp_path):
    with pytest.raises(BenchError, match="--trust-remote-code"):
        make_specs(with_overrides(default(), backbone="nomic-embed-text-v1.5"), "pretrained")
    assert bench.models.public_model("nomic-ai/nomic-embed-text-v1.5") is None  # a hub id is not an entry


def test_prompts_flag_parses_roles_commas_and_newlines():
    from bench.cli import _prompts

    parsed = _prompts('query=Instruct: find it, then rank it\\nQuery:,document=,default=@STS')
    assert parsed == (("default", "@STS"), ("document", ""), ("query", "Instruct: find it, then rank it\nQuery:"))
    assert _prompts(None) is None


def test_a_default_prompt_name_the_model_lacks_is_one_line(tmp_path):
    folder = st_folder(tmp_path / "st", save_hf(tiny_bert(layers=1), tmp_path / "hf"), "mean",
                       prompts={"query": "q: "})
    config = tmp_path / "st" / "config_sentence_transformers.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "default_prompt_name": "sts"}))
    with pytest.raises(BenchError, match="names default prompt 'sts', which is not one of its prompts"):
        Encoder.named(folder, device="cpu")
