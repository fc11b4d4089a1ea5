"""mteb tasks over the whole layer x dim x precision grid, from one encode per (checkpoint, task).

`mteb:NAME` is a task registered with mteb (its data comes from the hub, for users who are online);
`mteb:PATH.py:CLASS` is an mteb task class in a local file (how users add private tasks, and how the tests run
offline: examples/mteb_local_tasks.py). mteb loads the data and scores every cell with its own evaluators; this
file only serves it the vectors:

1. Discovery, at load time: mteb runs the task once against a stand-in encoder that records every text it asks for,
   with its prompt type, and answers with cheap random vectors seeded from each text. mteb's tasks draw their
   samples (training subsets, clustering resamples) from rngs seeded at construction, which are reset before
   every run (`_fresh_rngs`), so every later run asks for the same texts.
2. One encode: each role's distinct texts (query, document or text, see `encode_role`) are encoded once into the
   evaluated layers and dims by bench.evaluate, cached like our own tasks (the cache key covers the model, the
   texts and the role's prompt).
3. Each (layer, dim, precision) cell: mteb runs the task again (`AbsTask.evaluate`, rngs reset) against a
   `CellEncoder`, which looks each text up in its role's arrays and returns the cell's vector.

The vectors mteb scores are those a server holding the codes would reconstruct, and mteb's own similarity
functions and classifiers see them:
- fp32: the first `dim` coordinates of layer `layer`, re-normalized (EvalSpec.normalize), as every cell of ours.
- int8: those vectors quantized with per-dimension ranges from ALL the texts the task encodes, every role together
  (an mteb task has no single corpus side, so `int8_calibration` does not apply, as for STS), then decoded to
  each bucket's midpoint (bench.transforms.dequantize_int8, as faiss SQ8 and our retrieval and STS decode): 1 byte
  per dim stored, and every score mteb computes is between decoded vectors.
- binary: the sign bits as +-1, so that cosine = 1 - 2 hamming / dim, dot product = dim - 2 hamming and squared
  euclidean distance = 4 hamming: every score mteb computes is a function of the Hamming distance. A head that
  makes its own codes (bebr) serves their reconstruction sum_u w_u s_u instead, whose inner products are its
  symmetric distance (SDC), as our STS and retrieval score it.
- the binary+rescore precisions are search strategies of our retrieval: no rows.

Rows: every top-level number mteb reports, named and scaled as mteb reports it (0..1, not x100; bench report then
prints 3 decimals), the main score under its own name (TaskMeta.main_metric = mteb's main_score). With several
subsets (languages) each number is the mean over them, as mteb's TaskResult.get_score averages the main score.
The task record holds mteb's name (display), type (family), dataset path and revision, and the mteb version.
No per-example values: mteb's evaluators return aggregate scores only, so these tasks get no bootstrap intervals
or paired tests (TaskMeta.no_intervals says so, and the report prints it).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import math
import random
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import mteb
import numpy as np
from mteb.abstasks.abstask import AbsTask
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from bench import BenchError
from bench.catalog import TaskMeta
from bench.precisions import scored_by, supported
from bench.spec import EvalSpec, stable_hash
from bench.tasks import MTEB_PREFIX as PREFIX
from bench.tasks import Task
from bench.transforms import BinaryCodes, head_codes, truncate

PRECISIONS = supported("mteb")  # fp32, int8, binary (bench/precisions.py)
# mteb task types whose evaluation needs nothing but one dense vector per text (over text-only data).
SLICEABLE_TYPES = ("BitextMining", "Classification", "Clustering", "InstructionReranking", "InstructionRetrieval",
                   "MultilabelClassification", "PairClassification", "Regression", "Reranking", "Retrieval", "STS",
                   "Summarization")
NO_INTERVALS = ("mteb's evaluators return aggregate scores only, no per-example values, so there are no bootstrap "
                "intervals or paired tests for mteb tasks")
DISCOVERY_DIM = 16  # width of the stand-in vectors of the discovery run: cheap to score, never reported
ROLES = {PromptType.query: "query", PromptType.document: "document"}


def encode_role(prompt_type: PromptType | None) -> str:
    """The side of the task mteb asks to encode: "query", "document", or "text" for symmetric tasks (no prompt
    type). The one place a role is decided: it picks the model's query or document prompt (bench/serving.py)."""
    return ROLES.get(prompt_type, "text")  # PromptType is a str enum: "query" finds it too


def max_length(role: str, spec: EvalSpec) -> int:
    """Token budget per role: queries and documents as our retrieval cuts them, other texts as STS sentences."""
    return {"query": spec.max_query_len, "document": spec.max_doc_len}.get(role, spec.max_seq_len)


# ---- resolving a task name -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def mteb_task(name: str) -> "MtebTask":
    """`mteb:NAME` or `mteb:PATH.py:CLASS` -> its task, checked sliceable; one object per name and process, so the
    data is loaded and discovered once for every method that runs it."""
    target = name[len(PREFIX):]
    path, _, class_name = target.rpartition(":")
    if path.endswith(".py"):
        task, source_file = from_file(path, class_name), Path(path)
    else:
        task, source_file = _registered(target), None
    _check_sliceable(task, name)
    return MtebTask(name, task, source_file)


def _registered(task_name: str) -> AbsTask:
    try:
        return mteb.get_task(task_name)
    except KeyError as exc:  # mteb's message carries its "Did you mean" suggestion
        hint = str(exc.args[0] if exc.args else exc).removeprefix("KeyError: ")
        raise BenchError(f"unknown mteb task {task_name!r} ({hint}); give a name mteb registers, or "
                         "mteb:PATH.py:CLASS for a task class of your own") from None


def from_file(path: str, class_name: str) -> AbsTask:
    """Import the user's file and make its task class (its constructor only: data loads at run time)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BenchError(f"mteb task file {path} not found (relative to {Path.cwd()}); pass mteb:PATH.py:CLASS "
                         "with an existing file")
    module_name = f"bench_mteb_tasks_{stable_hash(str(file.resolve()))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error is one line naming the file
            raise BenchError(f"cannot import {path}: {type(exc).__name__}: {exc}") from None
        sys.modules[module_name] = module
    found = vars(module).get(class_name)  # a name the user gave, looked up in their file
    if not (isinstance(found, type) and issubclass(found, AbsTask)):
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, AbsTask)
                         and v.__module__ == module_name)
        close = difflib.get_close_matches(class_name, classes, n=1)
        problem = (f"{path} has no class {class_name!r}" if found is None else
                   f"{path}:{class_name} is not an mteb task class (a subclass of mteb's AbsTask)")
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BenchError(f"{problem}; {hint}its mteb task classes: {', '.join(classes) or 'none'}")
    try:
        return found()
    except Exception as exc:
        raise BenchError(f"cannot make {path}:{class_name}: {type(exc).__name__}: {exc}") from None


def _check_sliceable(task: AbsTask, name: str) -> None:
    md = task.metadata
    if task.is_aggregate:
        raise BenchError(f"{name} aggregates several mteb tasks; list them instead (mteb:A,mteb:B,...)")
    if md.type not in SLICEABLE_TYPES or any(m != "text" for m in md.modalities):
        raise BenchError(f"{name} is an mteb {md.type} task over {'+'.join(md.modalities)}, which cannot be sliced: "
                         "elastic-bench serves one text vector per cell; sliceable types: "
                         f"{', '.join(SLICEABLE_TYPES)}")


# ---- the encoders mteb calls -----------------------------------------------------------------------------------

def model_meta(name: str, dim: int | None) -> ModelMeta:
    return ModelMeta.create_empty({"name": f"elastic-bench/{name}", "revision": "cell", "embed_dim": dim,
                                   "similarity_fn_name": ScoringFunction.COSINE, "modalities": ["text"]})


class TextEncoder(AbsEncoder):
    """What mteb asks for, as (role, texts): every batch's texts, in order, with the role of its prompt type."""

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        return self.vectors(encode_role(prompt_type), texts)

    def vectors(self, role: str, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class _Recorder(TextEncoder):
    """The discovery run's stand-in: records each role's texts and answers with random unit vectors seeded from
    each text (deterministic, so mteb's run is too)."""

    def __init__(self):
        self.texts: dict[str, dict[str, None]] = defaultdict(dict)  # role -> texts in first-asked order
        self.mteb_model_meta = model_meta("discovery", DISCOVERY_DIM)

    def vectors(self, role: str, texts: list[str]) -> np.ndarray:
        self.texts[role].update(dict.fromkeys(texts))
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(DISCOVERY_DIM) for s in seeds]) if texts else \
            np.zeros((0, DISCOVERY_DIM))
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class CellEncoder(TextEncoder):
    """One cell's vectors, served to mteb: each text looked up in its role's rows."""

    def __init__(self, vectors: dict[str, np.ndarray], index: dict[str, dict[str, int]], name: str):
        self.served, self.index = vectors, index
        self.mteb_model_meta = model_meta(name, next(iter(vectors.values())).shape[1])

    def vectors(self, role: str, texts: list[str]) -> np.ndarray:
        rows = self.index.get(role, {})
        missing = [t for t in texts if t not in rows]
        if missing:
            raise BenchError(f"mteb asked for a {role} text its discovery run did not ({missing[0][:60]!r}): the task "
                             "draws different texts from run to run; seed its sampling from self.seed")
        return self.served[role][[rows[t] for t in texts]]


def served_vectors(vectors: dict[str, np.ndarray], precision: str,
                   codes: dict[str, BinaryCodes] | None = None) -> dict[str, np.ndarray]:
    """Each role's cell vectors as mteb gets them at `precision` (its record's form; see the module docstring);
    `codes`: a head's own binary codes of each role, where it makes them."""
    return scored_by(precision, "mteb").form.served(vectors, codes)


# ---- running mteb -----------------------------------------------------------------------------------------------

def _fresh_rngs(task: AbsTask) -> None:
    """Reset the rngs a task draws its samples from as its constructor seeded them (clustering consumes
    `rng_state` on every run): every cell, and the discovery run, sees the samples a freshly made task would."""
    random.seed(task.seed)
    np.random.seed(task.seed)
    task.rng_state, task.np_rng = random.Random(task.seed), np.random.default_rng(task.seed)


def run_mteb(task: AbsTask, encoder: AbsEncoder, split: str, batch_size: int) -> dict[str, float]:
    """mteb's own evaluation of the task with `encoder`: its numbers (see `mteb_metrics`)."""
    _fresh_rngs(task)
    return mteb_metrics(task.evaluate(encoder, split, encode_kwargs={"batch_size": batch_size}))


def mteb_metrics(scores: Mapping[str, Mapping]) -> dict[str, float]:
    """{subset: mteb's scores} -> each top-level finite number, averaged over subsets; `main_score` is dropped
    (mteb copies it from the metric it names, which stays)."""
    values: dict[str, list[float]] = defaultdict(list)
    for subset_scores in scores.values():
        for key, value in subset_scores.items():
            if key != "main_score" and isinstance(value, int | float | np.number) and not isinstance(value, bool) \
                    and math.isfinite(value):
                values[key].append(float(value))
    return {key: float(np.mean(v)) for key, v in sorted(values.items())}


def _split(task: AbsTask) -> str:
    """The split scored: test when mteb evaluates it, else mteb's first evaluation split."""
    splits = list(task.eval_splits)
    return "test" if "test" in splits else splits[0]


def _examples(task: AbsTask, split: str) -> int:
    """How many examples mteb scores: rows of the split (queries for retrieval), summed over subsets; -1 when the
    task's data has another shape."""
    total = 0
    try:
        for subset in task.hf_subsets:
            part = task.dataset[split] if subset not in task.dataset else task.dataset[subset][split]
            total += len(part["queries"] if isinstance(part, Mapping) and "queries" in part else part)
    except (KeyError, TypeError):
        return -1
    return total


class MtebData:
    """A loaded mteb task and the texts its discovery run asked for, per role (each once)."""

    def __init__(self, task: AbsTask, texts: dict[str, list[str]], n_examples: int):
        self.task, self.texts, self.n_examples = task, texts, n_examples


class MtebTask(Task):
    """The task contract (bench.tasks.Task) over one mteb task, scored by mteb's code (`external_code`)."""

    def __init__(self, name: str, task: AbsTask, source_file: Path | None):
        md = task.metadata
        self.task, self.split = task, _split(task)
        self.meta = TaskMeta(name, md.name, md.type, md.main_score, split=self.split,
                             source=md.dataset.get("path", ""), revision=md.dataset.get("revision"),
                             precisions=PRECISIONS, description=" ".join(md.description.split())[:200],
                             mteb_version=mteb.__version__, no_intervals=NO_INTERVALS)
        # what else decides the scores besides our code (bench.fingerprint.task_code): mteb, and the user's file
        file_hash = hashlib.sha256(source_file.read_bytes()).hexdigest() if source_file else ""
        self.external_code = stable_hash([mteb.__version__, name, file_hash])
        self._data_hint = (f"check the data {source_file.name}'s load_data reads (a class without a load_data of "
                           f"its own makes mteb read {self.meta.source} from the hub)" if source_file else
                           f"mteb reads {self.meta.source}@{self.meta.revision} from the Hugging Face hub: run once "
                           "with the hub reachable (HF_HUB_OFFLINE unset), or use a local task class "
                           "mteb:PATH.py:CLASS")
        self._data: MtebData | None = None

    def load(self, data_dir: Path, spec: EvalSpec) -> MtebData:
        """mteb loads the data (the hub for registered tasks, the class's own loader for a file), and the discovery
        run records what it encodes; both once per process. The data dir and the spec's slices do not apply."""
        if self._data is None:
            if not self.task.data_loaded:
                try:
                    self.task.load_data()
                except Exception as exc:  # datasets' hub errors, or the user's loader
                    raise BenchError(f"{self.name}: its data did not load ({type(exc).__name__}: "
                                     f"{(str(exc).splitlines() or [''])[0]}); {self._data_hint}") from None
            recorder = _Recorder()
            run_mteb(self.task, recorder, self.split, spec.batch_size)
            texts = {role: list(seen) for role, seen in sorted(recorder.texts.items())}
            self._data = MtebData(self.task, texts, _examples(self.task, self.split))
        return self._data

    def texts(self, data: MtebData, spec: EvalSpec) -> dict[str, tuple[list[str], int]]:
        """Each role's distinct texts, named by the role: the encode's cache key covers it."""
        return {role: (texts, max_length(role, spec)) for role, texts in data.texts.items()}

    def role(self, name: str) -> str | None:
        """The role a text set is encoded in, which picks the model's prompt (bench.evaluate): its name;
        symmetric texts get the model's default prompt (None), as `SentenceTransformer.encode` gives them."""
        return None if name == "text" else name

    def prepare(self, data: MtebData, texts: dict) -> dict:
        return {"index": {role: {t: i for i, t in enumerate(role_texts)} for role, (role_texts, _) in texts.items()}}

    def score_cell(self, data: MtebData, arrays: dict, aux: dict, layer: int, dim: int, precision: str,
                   spec: EvalSpec) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """mteb's scores of one cell, and no per-example values (mteb reports none)."""
        vectors = {role: truncate(arrays[role][layer - 1], dim, spec.normalize) for role in aux["index"]}
        takes_codes = scored_by(precision, "mteb").form.takes_head_codes
        codes = {role: head_codes(arrays[role], layer, dim) for role in aux["index"]} if takes_codes else {}
        codes = {role: c for role, c in codes.items() if c is not None}
        encoder = CellEncoder(served_vectors(vectors, precision, codes), aux["index"], f"l{layer}-d{dim}-{precision}")
        return run_mteb(data.task, encoder, self.split, spec.batch_size), {}

    def n_examples(self, data: MtebData) -> int:
        return data.n_examples

    def gold(self, data: MtebData) -> dict[str, np.ndarray]:
        return {}
