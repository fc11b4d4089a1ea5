"""Bad input, fuzzed (hypothesis): every data loader, the results files, the per-example files, cached encodings and
checkpoints, fed random bytes, truncations, a line replaced by junk, or one byte changed.

The property: a loader either reads the file (a cut or changed file can still be a valid one) or raises one
BenchError whose message is one line naming the damaged file and the fix; never another exception, never a
traceback. A damaged cache or checkpoint is never used: it is rebuilt (the encoding) or trained again / resumed
from an earlier valid state (the checkpoint), to the same numbers as an undamaged run.

Not claimed, as no format here carries a checksum or row count: a text file cut exactly at a line boundary is a
shorter valid file (the results test checks that its rows are then exactly the original's first ones), and values
changed in place (a digit of a score, a byte of a cached float) read as valid values.

Runs: a fixed derandomized profile (no example database, no deadline), so CI sees the same examples every time;
max_examples is small enough that the whole file takes well under a minute on one core.
"""

from __future__ import annotations

import gzip
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from bench import BenchError
from bench.data.beir import load_beir
from bench.data.pairs import load_mrpc, load_training_set, load_triplets
from bench.data.sts import load_sickr, load_sts_year, load_stsb
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached
from bench.hub import Backbone, load_model
from bench.losses import base_loss
from bench.results import examples_path, load_results, make_row, read_examples, read_run_file, run_fields, write_run
from bench.spec import Budget, RunSpec
from bench.storage import Plan
from bench.train import TextCollate, train
from methods import METHODS

FUZZ = settings(max_examples=30, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
DATA_FIX = re.compile(r"re-download it with `bench data fetch [\w-]+ --data-dir \S+`|replace it with a good copy")
RESULTS_FIX = re.compile(r"delete (it|the run|or move)|rerun")


# ---- damage ------------------------------------------------------------------------------------------------------

JUNK_TEXT = st.text(alphabet=st.sampled_from('\t\n\r{}[]":,0123456789.-+eEnaifNI _\\\x00é\ufeff'), max_size=40)
JUNK_LINE = st.one_of(st.binary(max_size=40), JUNK_TEXT.map(str.encode))


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes; the file cut at any byte; one line replaced by junk bytes or junk text; one byte changed."""
    lines = valid.splitlines(keepends=True)

    def replace_line(args):
        i, junk = args
        return b"".join(lines[:i] + [junk] + lines[i + 1:])

    def set_byte(args):
        i, value = args
        return valid[:i] + bytes([value]) + valid[i + 1:]

    return st.one_of(st.binary(max_size=200),
                     st.integers(0, len(valid) - 1).map(lambda k: valid[:k]),
                     st.tuples(st.integers(0, len(lines) - 1), JUNK_LINE).map(replace_line),
                     st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(set_byte))


def damaged_gzip(valid_text: bytes) -> st.SearchStrategy[bytes]:
    """The compressed stream damaged, or a damaged text compressed properly."""
    return st.one_of(damaged(gzip.compress(valid_text, mtime=0)), damaged(valid_text).map(gzip.compress))


def assert_one_clear_line(exc: BenchError, path: Path, fix: re.Pattern) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, f"the message does not name {path}: {message}"
    assert fix.search(message), f"the message gives no fix: {message}"


# ---- data loaders --------------------------------------------------------------------------------------------------

STSB = ('main-captions\tMSRvid\t2012test\t0001\t5.000\tA girl is "styling" her hair.\tA girl is brushing her hair.\n'
        "main-news\theadlines\t2013\t0002\t1.5\tCafé prices rise ½ point\tPrices fall\n")
SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
SICK = SICK_HEADER + "1\tA boy runs\tA kid runs\t4.5\tENTAILMENT\n2\tA dog\tA cat\t1.2\tNEUTRAL\n"
STS_YEAR = "dataset\tscore\tsentence1\tsentence2\nMSRpar\t3.2\tThe cat sat.\tA cat sat.\nOnWN\t0.0\ta\tb\n"
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"
QUERIES = '{"_id": "q1", "text": "what is a cat"}\n{"_id": "q2", "text": "dogs"}\n'
CORPUS = '{"_id": "d1", "title": "Cats", "text": "A cat is an animal."}\n{"_id": "d2", "title": "", "text": "Dogs."}\n'
SNLI = "split\tpremise\tentailment\tcontradiction\ntrain\tA man sleeps.\tA person rests.\tA man runs.\n" \
       "train\tTwo dogs.\tAnimals.\tNo dogs.\n"
XNLI = "anchor\tpositive\tnegative\nA man sleeps.\tA person rests.\tA man runs.\nTwo dogs.\tAnimals.\tNo dogs.\n"
MRPC = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\tHe said so.\tHe told us.\n0\t13\t14\tYes\tNo\n"


@dataclass(frozen=True)
class Case:
    """A loader, the valid files it reads (relative path -> text), and which of them gets damaged."""

    name: str
    load: Callable[[Path], object]
    files: dict[str, str]
    target: str

    @property
    def gzipped(self) -> bool:
        return self.target.endswith(".gz")


SICK_FILES = {f"sick/senteval_semeval2014_tokenized/{n}": SICK
              for n in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt")}
BEIR = {"mine/qrels/test.tsv": QRELS, "mine/queries.jsonl": QUERIES, "mine/corpus.jsonl": CORPUS}
BEIR_GZ = {"mine/qrels/test.tsv": QRELS, "mine/queries.jsonl": QUERIES, "mine/corpus.jsonl.gz": CORPUS}
CASES = [
    Case("stsb", lambda d: load_stsb(d, "test"), {"stsbenchmark/sts-test.csv": STSB}, "stsbenchmark/sts-test.csv"),
    Case("stsb-train-pairs", lambda d: load_training_set(d, "stsb"), {"stsbenchmark/sts-train.csv": STSB},
         "stsbenchmark/sts-train.csv"),
    Case("sickr", load_sickr, SICK_FILES, "sick/senteval_semeval2014_tokenized/SICK_trial.txt"),
    Case("sts13", lambda d: load_sts_year(d, 13), {"sts12-16/normalized/sts13.tsv": STS_YEAR},
         "sts12-16/normalized/sts13.tsv"),
    Case("beir-qrels", lambda d: load_beir(d, "mine"), BEIR, "mine/qrels/test.tsv"),
    Case("beir-queries", lambda d: load_beir(d, "mine"), BEIR, "mine/queries.jsonl"),
    Case("beir-corpus", lambda d: load_beir(d, "mine"), BEIR, "mine/corpus.jsonl"),
    Case("beir-corpus-gz", lambda d: load_beir(d, "mine"), BEIR_GZ, "mine/corpus.jsonl.gz"),
    Case("snli-triplets", lambda d: load_triplets(d, "snli"), {"snli_senteval/snli_triplets.tsv": SNLI},
         "snli_senteval/snli_triplets.tsv"),
    Case("xnli-triplets", lambda d: load_training_set(d, "xnli-en"), {"xnli_en_test/triplets.tsv": XNLI},
         "xnli_en_test/triplets.tsv"),
    Case("mrpc", lambda d: load_mrpc(d, "test"), {"mrpc/msr_paraphrase_test.txt": MRPC},
         "mrpc/msr_paraphrase_test.txt"),
]


def write_files(root: Path, case: Case, target_bytes: bytes | None = None) -> Path:
    for rel, text in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data, mtime=0) if rel.endswith(".gz") else data)
    if target_bytes is not None:
        (root / case.target).write_bytes(target_bytes)
    return root / case.target


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_valid_samples_load(case, tmp_path):
    """The undamaged samples are valid: what the fuzzing below damages is a file the loader accepts."""
    write_files(tmp_path, case)
    assert case.load(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_damaged_data_files_give_one_clear_line(case):
    valid = case.files[case.target].encode("utf-8")

    @FUZZ
    @given(data=damaged_gzip(valid) if case.gzipped else damaged(valid))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_files(Path(tmp), case, data)
            try:
                case.load(Path(tmp))
            except BenchError as exc:
                assert_one_clear_line(exc, path, DATA_FIX)

    check()


def test_random_bytes_in_stsb_test_are_one_line_not_a_decode_traceback(tmp_path):
    """The reported case: STS-B's sts-test.csv full of random bytes gave a UnicodeDecodeError traceback."""
    path = write_files(tmp_path, CASES[0], bytes(range(256)) * 3)
    with pytest.raises(BenchError) as err:
        load_stsb(tmp_path, "test")
    assert_one_clear_line(err.value, path, DATA_FIX)
    assert "not utf-8 text" in str(err.value)


# ---- results and per-example files --------------------------------------------------------------------------------

def a_run(folder: Path) -> tuple[Path, bytes, bytes]:
    spec = RunSpec(method="pretrained", task="stsb")
    shared = run_fields(spec, "c0de")
    rows = [make_row(shared, metric="spearman", score=0.1 * layer + 1 / 3, layer=layer, dim=16, n_examples=5)
            for layer in (1, 2, 3)]
    path = write_run(folder, spec, "c0de", rows, {"1/16/fp32/similarity": np.linspace(0, 1, 40),
                                                  "gold": np.arange(40.0)})
    return path, gzip.decompress(path.read_bytes()), examples_path(path).read_bytes()  # the CSV text inside


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    return a_run(tmp_path_factory.mktemp("valid-run"))


@FUZZ
@given(data=st.data())
def test_damaged_results_files_give_one_clear_line(valid_run, data):
    """read_run_file and load_results; a file cut exactly at a row boundary is a valid (shorter) file: the rows
    read are then exactly the first rows of the original, nothing invented."""
    _, csv_bytes, _ = valid_run
    damage = data.draw(damaged(csv_bytes))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pretrained__stsb__x.csv.gz"
        path.write_bytes(gzip.compress(damage, mtime=0))  # damaged text in an intact gzip (a cut gzip: test_results)
        for read in (lambda: read_run_file(path), lambda: load_results(Path(tmp))):
            try:
                frame = read()
            except BenchError as exc:
                assert_one_clear_line(exc, path, RESULTS_FIX)
            else:
                assert len(frame) <= 3
        if csv_bytes.startswith(damage):  # a truncation: whatever is read is a prefix of the original rows
            try:
                frame = read_run_file(path)
            except BenchError:
                return
            original = read_run_file(valid_run[0])
            assert frame.equals(original.head(len(frame)))


@FUZZ
@given(data=st.data())
def test_damaged_per_example_files_give_one_clear_line_or_the_original_arrays(valid_run, data):
    run_csv, _, npz_bytes = valid_run
    damage = data.draw(damaged(npz_bytes))
    original = read_examples(examples_path(run_csv))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.examples.npz"
        path.write_bytes(damage)
        try:
            arrays = read_examples(path)
        except BenchError as exc:
            assert_one_clear_line(exc, path, RESULTS_FIX)
        else:  # a change the zip format does not look at (a comment, a time stamp): the arrays are intact
            assert arrays.keys() == original.keys()
            assert all(np.array_equal(arrays[k], original[k]) for k in arrays)


# ---- cached encodings ---------------------------------------------------------------------------------------------

TEXTS = ["A man plays a flute.", "Two dogs run.", "Stocks fell sharply today after the report."]


@pytest.fixture(scope="module")
def tiny_encoder() -> Encoder:
    return Encoder.named("tiny-random-bert", device="cpu")


@pytest.fixture(scope="module")
def good_cache(tiny_encoder, tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("encodings")
    vectors = np.array(encode_cached(tiny_encoder, "tiny", "t", Texts(TEXTS, 32), Plan(8), folder)[0])
    (path,) = folder.glob("*.npy")
    return path, vectors


@FUZZ
@given(data=st.data())
def test_a_damaged_cached_encoding_is_rebuilt_never_trusted(tiny_encoder, good_cache, data):
    """A cut or garbled .npy (or one of another shape or dtype) is encoded again; the vectors are the true ones."""
    path, vectors = good_cache
    valid = path.read_bytes()
    other_shape = io.BytesIO()
    np.save(other_shape, np.zeros((2, 4, 64), np.float32))
    damage = data.draw(st.one_of(damaged(valid), st.just(other_shape.getvalue()), st.just(b"")))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / path.name).write_bytes(damage)
        again, _ = encode_cached(tiny_encoder, "tiny", "t", Texts(TEXTS, 32), Plan(8), Path(tmp))
        assert again.shape == vectors.shape
        if not np.array_equal(again, vectors):  # it kept a changed file: only values changed in place (no checksum)
            header = np.load(path, mmap_mode="r").offset
            assert len(damage) == len(valid) and damage[:header] == valid[:header]


# ---- checkpoints --------------------------------------------------------------------------------------------------

def train_tiny(data_dir: Path, out: Path, steps_run: list | None = None, die_at: int | None = None):
    from bench.train import EncoderTraining

    model, tokenizer = load_model(Backbone("tiny-random-bert"))
    srl = METHODS.get("starbucks-srl")()
    objective = srl.jobs(srl.Params(), 2, 64, base_loss("triplets"), "mean")[0].objective
    examples = [(t, None) for t in load_training_set(data_dir, "snli").texts[:64]]
    real_step = EncoderTraining.compute_gradients

    def counted(*args):
        if die_at is not None and len(steps_run) + 1 == die_at:
            raise KeyboardInterrupt
        steps_run.append(1)
        return real_step(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EncoderTraining, "compute_gradients", counted)
        return train(model, tokenizer, examples, TextCollate(tokenizer, 32), objective,
                     Budget(steps=4, batch_size=8, lr=1e-4, checkpoint_every=2), 0, out)


def weights(result) -> dict[str, torch.Tensor]:
    return load_file(result.model_dir / "model.safetensors")


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    return train_tiny(data_dir, tmp_path_factory.mktemp("uninterrupted"), [])


def test_a_damaged_final_checkpoint_is_trained_again(data_dir, tmp_path, uninterrupted):
    steps: list = []
    first = train_tiny(data_dir, tmp_path, steps)
    cut(first.model_dir / "model.safetensors")
    steps.clear()
    again = train_tiny(data_dir, tmp_path, steps)
    assert len(steps) == 4  # trained again, all of it: nothing earlier was left
    reference = weights(uninterrupted)
    assert all(torch.equal(weights(again)[k], reference[k]) for k in reference)


@pytest.mark.parametrize("damage", ["model.safetensors", "trainer_state.pt"])
def test_a_damaged_step_checkpoint_is_not_resumed_from(data_dir, tmp_path, uninterrupted, damage):
    """Killed after the step-2 checkpoint, which is then cut short: the rerun does not load it but starts from the
    earliest valid state (here the start, as only the newest checkpoint is kept) and ends with the same weights."""
    steps: list = []
    with pytest.raises(KeyboardInterrupt):
        train_tiny(data_dir, tmp_path, steps, die_at=3)
    (checkpoint,) = tmp_path.glob("step-*")
    cut(checkpoint / damage)
    steps.clear()
    resumed = train_tiny(data_dir, tmp_path, steps)
    assert len(steps) == 4
    reference = weights(uninterrupted)
    assert all(torch.equal(weights(resumed)[k], reference[k]) for k in reference)
