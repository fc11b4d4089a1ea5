"""Which project modules each code fingerprint covers (bench/fingerprint.py), pinned: an import that widens a key
(the training key reaching the encoder, say) fails here before it makes an evaluation-only edit retrain every
method. And the whole path: after an edit to the encoder's module, a finished smoke run of `full` retrains nothing
and re-evaluates only. No independent oracle exists for what a key should cover; the sets below are the design
(bench/fingerprint.py's roots and reaches, README "Layout")."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import bench.fingerprint as fp
import bench.models
from bench.encoder import Encoder
from bench.tasks import TASKS
from methods import METHODS

DATA = {"bench.data", "bench.data.beir", "bench.data.decontaminate", "bench.data.pairs", "bench.data.sts"}
# the loop and its collectives, training pooling, model loading, devices, and serving's "auto" pooling mode
TRAINING = DATA | {"bench.devices", "bench.dist", "bench.hub", "bench.loop", "bench.losses", "bench.pooling",
                   "bench.serving", "bench.train", "methods", "methods._jobs"}
ENCODING = {"bench.devices", "bench.encoder", "bench.hub", "bench.pooling", "bench.serving", "bench.storage"}
SCORING = {"bench.evaluate", "bench.heads", "bench.precisions", "bench.forms", "bench.compressions", "bench.search",
           "bench.tasks", "bench.transforms", "bench.data", "bench.variants"}


@pytest.mark.parametrize("method, modules", [
    ("full", TRAINING | {"methods.full"}),
    ("starbucks", TRAINING | {"methods.starbucks", "methods.starbucks_srl", "bench.smae", "bench.data.corpus"}),
    # a head is fitted on the frozen backbone's encodings: the encoder runs to make it (fp.ENCODES_TO_TRAIN)
    ("pca", TRAINING | ENCODING | {"methods.pca", "methods._heads"}),
    ("pretrained", {"methods", "methods.pretrained"}),  # trains nothing: its file and the package alone
])
def test_the_training_key_covers_the_training_code_only(method, modules):
    cls = METHODS.get(method)
    assert set(fp.training_modules(cls, cls.trains)) == modules


def test_the_encoding_key_covers_the_encoder_and_storage():
    assert set(fp.encoding_modules()) == ENCODING


@pytest.mark.parametrize("task, modules", [
    ("stsb", SCORING | {"bench.tasks.sts", "bench.data.sts"}),
    ("scifact", SCORING | {"bench.tasks.retrieval", "bench.tasks.ranking", "bench.data.beir"}),
])
def test_the_scoring_key_covers_evaluation_and_the_tasks_family(task, modules):
    assert set(fp.scoring_modules(TASKS.get(task))) == modules


def test_a_public_model_entry_moves_only_that_models_keys(monkeypatch):
    """Adding an entry to the table (an edit to bench/models.py) changes no key; changing an entry's content changes
    the encoding key, and the training key, of that model alone (a checkpoint of another revision is another)."""
    names = [entry.name for entry in bench.models.ENTRIES[:2]]
    before = ([fp.method_code(METHODS.get(m), True) for m in ("full", "pca")],
              [fp.encoding_code(b) for b in ("minilm", *names)])
    trained = [fp.method_code(METHODS.get("full"), True, b) for b in (*names[:1], "minilm", *names[1:])]
    real = fp._file_hash
    monkeypatch.setattr(fp, "_file_hash", lambda p: "edited" if p == bench.models.__file__ else real(p))
    assert ([fp.method_code(METHODS.get(m), True) for m in ("full", "pca")],
            [fp.encoding_code(b) for b in ("minilm", *names)]) == before
    entry = bench.models.PUBLIC_MODELS[names[0]]
    monkeypatch.setitem(bench.models.PUBLIC_MODELS, names[0], replace(entry, revision="another"))
    assert [fp.encoding_code(b) for b in ("minilm", *names)] != before[1]
    assert [fp.encoding_code(b) for b in ("minilm", *names[1:])] == [before[1][0], *before[1][2:]]
    assert fp.method_code(METHODS.get("full"), True, names[0]) != trained[0]
    assert [fp.method_code(METHODS.get("full"), True, b) for b in ("minilm", *names[1:])] == trained[1:]
    monkeypatch.setitem(bench.models.PUBLIC_MODELS, names[0], replace(entry, notes="another note"))
    assert fp.encoding_code(names[0]) == before[1][1]  # prose serves nothing


def _bench_run(src: Path, tmp: Path, data_dir: Path) -> str:
    """`bench run` of a finished-able smoke run of `full`, with the copy of the code at `src`."""
    env = {**os.environ, "PYTHONPATH": str(src), "BENCH_CACHE_DIR": str(tmp / "cache"), "BENCH_QUIET": "1",
           "HF_HUB_OFFLINE": "1"}
    args = ["run", "--suite", "smoke", "--methods", "full", "--tasks", "stsb", "--precisions", "fp32",
            "--data-dir", str(data_dir), "--results-dir", str(tmp / "results"), "--cache-dir", str(tmp / "cache"),
            "--compare-with", "none"]
    done = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=tmp, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_edit_to_the_encoder_module_re_evaluates_and_trains_nothing(data_dir, tmp_path):
    """The edit is made on a copy of bench/ and methods/ (never the real source), in whichever file defines the
    Encoder; the rerun must reuse the checkpoint folder (no new one) and write a second results file (the encoding
    and result keys did change)."""
    src = tmp_path / "src"
    code = Path(fp.__file__).resolve().parents[1]  # the code under test: the checkout, or tox's installed copy
    for package in ("bench", "methods"):
        shutil.copytree(code / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert "1 new result file(s)" in _bench_run(src, tmp_path, data_dir)
    checkpoints = sorted(p.name for p in (tmp_path / "cache" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    encoder_file = src / Path(inspect.getsourcefile(Encoder)).resolve().relative_to(code)
    with encoder_file.open("a") as f:
        f.write("\n# an edit that changes no behaviour\n")
    assert "1 new result file(s)" in _bench_run(src, tmp_path, data_dir)
    assert sorted(p.name for p in (tmp_path / "cache" / "checkpoints").iterdir()) == checkpoints
    assert len(list((tmp_path / "results").glob("*.csv.gz"))) == 2
