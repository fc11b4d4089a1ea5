"""The Backbone handle: the run's --trust-remote-code reaches every load, including the call sites that used to
drop it (starbucks' targets and its SMAE pre-training, a head method's config check). No oracle: the refusal is
our own rule (bench.hub.check_remote_code); transformers itself would refuse the folder without the permission."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tiny_models import needs_remote_code, save_hf, tiny_bert

import methods._heads as heads
import methods.starbucks as sb
from bench import BenchError
from bench.hub import Backbone, backbone_shape
from bench.runner import make_specs
from bench.suites import smoke, with_overrides
from methods import METHODS, RunContext
from methods._heads import head_checkpoints


class Reached(Exception):
    """Raised by a stub just past the load under test: the load went through."""


def _stop(*args, **kwargs):
    raise Reached


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("remote")
    return needs_remote_code(save_hf(tiny_bert(layers=2), folder / "hf"))


def _spec(method: str, backbone: str, **params):
    (spec,) = make_specs(with_overrides(smoke(), tasks=("stsb",)), method)[:1]
    return replace(spec, backbone=backbone, params=tuple(sorted({**dict(spec.params), **params}.items())))


def test_the_handle_carries_the_permission_and_the_pinned_revision(remote):
    with pytest.raises(BenchError, match="--trust-remote-code"):
        backbone_shape(Backbone(remote))
    assert backbone_shape(Backbone(remote, trust_remote_code=True)) == (2, 64)
    assert Backbone("nomic-embed-text-v1.5").revision is not None and Backbone(remote).revision is None


def test_a_head_method_checks_its_dims_against_a_trusted_remote_code_backbone(remote, tmp_path, monkeypatch):
    spec = _spec("matryoshka-adaptor", remote, dims=(16, 32))
    with pytest.raises(BenchError, match="--trust-remote-code"):
        METHODS.get("matryoshka-adaptor")().check_config(spec, Backbone(remote))
    METHODS.get("matryoshka-adaptor")().check_config(spec, Backbone(remote, trust_remote_code=True))
    with pytest.raises(BenchError, match="--trust-remote-code"):
        head_checkpoints(METHODS.get("matryoshka-adaptor")(), spec, RunContext(tmp_path, tmp_path, tmp_path))
    monkeypatch.setattr(heads, "head_dir", _stop)  # just past the config check: the fit is not under test
    with pytest.raises(Reached):
        head_checkpoints(METHODS.get("matryoshka-adaptor")(), spec,
                         RunContext(tmp_path, tmp_path, tmp_path, trust_remote_code=True))


def test_starbucks_loads_a_trusted_remote_code_backbone(remote, tmp_path, monkeypatch):
    """Its targets (backbone_shape) and its SMAE pre-training (load_model, the MLM head) both honour the run's
    permission: each stub below is reached only after the load before it went through."""
    spec = _spec("starbucks", remote)
    ctx = RunContext(tmp_path, tmp_path, tmp_path, "cpu", trust_remote_code=True)
    monkeypatch.setattr(sb, "pretrain", _stop)
    with pytest.raises(Reached):
        sb.Starbucks().checkpoints(spec, ctx)
    with pytest.raises(BenchError, match="--trust-remote-code"):
        sb.Starbucks().checkpoints(spec, replace(ctx, trust_remote_code=False))
    monkeypatch.setattr(sb, "corpus_texts", _stop)
    params = sb.Starbucks.Params(**dict(spec.params))
    with pytest.raises(Reached):
        sb._train_smae(spec, ctx, params, (), {}, tmp_path / "smae")
