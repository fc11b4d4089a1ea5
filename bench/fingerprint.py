"""Code fingerprints: a hash of the source files that produce a checkpoint, an encoding or a result.

A spec says WHAT was run; the fingerprint says WITH WHICH CODE. Both join the keys of everything cached or
written (checkpoint folders, encoding files, result files), so an edit to a method, the training loop, a loss,
SMAE, the encoder, the evaluation or a task never lets an old artefact pass for a new one. The run_id stays the
hash of the spec alone: `bench reproduce` finds its references by it, so a code change shows up there as DRIFT
with the numbers, not as a missing reference.

Three keys, each over the code that runs for it and nothing else (see the tuples below): TRAINING (a checkpoint:
the method, the loop, the losses, training pooling, serving's pooling mode, the training data, and the backbone's
registry entry by content; never the encoder, storage, evaluation, tasks or the whole public-model table, so an
evaluation-only edit retrains nothing), ENCODING (the encoder, serving, pooling, storage, and the served model's
registry entry by content, so adding a model renames no result) and SCORING (evaluation, transforms, heads,
precisions, searches, the task's family). A result's code joins all three.

A key covers its root modules' files and, transitively, the files of the project modules their globals come from
within its reach (methods/starbucks.py imports from methods/starbucks_srl.py, so editing the latter changes both).
Files are hashed as bytes: a comment edit counts too, which errs on the side of rerunning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

# ---- what each key covers -----------------------------------------------------------------------------------
# A key covers its ROOTS and every project module their globals come from (functions, classes and modules alike),
# followed only into its REACH: the areas of the code that run for it. The reach is the boundary: a training key
# never follows an import into the encoder, serving, storage, evaluation, tasks or the public-model table, however a
# training module imports them. A name in a reach that does not exist (yet) matches nothing. tests/
# test_fingerprint_keys.py pins the modules each key covers, so an import that widens a key fails there.

# Training: what makes a checkpoint (methods/_jobs.training_key, methods/starbucks.pretrain_spec).
TRAINING_ROOTS = (
    "bench.train",  # the one loop every trained model goes through (devices, reductions and the loop from it)
    "bench.losses",  # the base losses and terms every objective is built from (training pooling from it)
    "bench.data.pairs",  # the training sets: methods/_jobs.py imports their loader inside functions, no global
    "methods._jobs",  # a spec -> jobs -> checkpoint folders; loads the model that trains
)
TRAINING_REACH = (
    "methods",  # the method's file and the method files it builds on (never a sibling it does not import)
    "bench.train", "bench.loop", "bench.dist", "bench.losses",  # the loop, its collectives, the objectives
    "bench.smae",  # starbucks' pre-training
    "bench.data",  # the training sets and the sentence corpus, with the decontamination that filters them
    "bench.pooling", "bench.hub", "bench.devices",  # training pooling, model loading, devices
    "bench.serving",  # the training pooling mode ("auto": the model's own, methods/_jobs.method_jobs)
)  # bench/encoder.py is out of reach: training never runs the encoder (a head method's key adds it, below)

# A method that encodes to train (a head fitted on the frozen backbone's vectors: methods/_heads.fit_vectors) runs
# the encoder to make its checkpoint, so its training key covers the encoding code too (a head refits in seconds).
ENCODES_TO_TRAIN = ("methods._heads",)

# Encoding: what makes an encoding (evaluate.texts_key) and the vectors of every result. The served model's public
# entry joins by content (encoding_code(backbone)), never the whole table: adding a model changes no key.
ENCODING_ROOTS = (
    "bench.encoder",  # tokenization, the forward pass and the head of every layer, the extra steps
    "bench.serving",  # how the model is served: pooling, prompts by role, head layers, max length, EOS
    "bench.pooling",  # pooling and the final-norm rule the encoder applies
    "bench.storage",  # how encodings are chunked and which part (layers, dims, dtype) is stored
)
ENCODING_REACH = ("bench.encoder", "bench.serving", "bench.pooling", "bench.hub", "bench.devices", "bench.storage")

# Scoring: what turns encodings into a task's scores (task_code), beside the task's family file and its loaders.
SCORING_ROOTS = (
    "bench.evaluate",  # the grid, the cells to score and how a checkpoint's head is applied
    "bench.transforms",  # truncation, normalization, quantizers
    "bench.heads",  # the heads' forward passes
    "bench.precisions",  # what each precision stores and compares (its forms: bench.forms, bench.compressions)
    "bench.search",  # the faiss searches a precision builds, rescoring and the seeded tie order
    "bench.variants",  # the cells beyond the prefix: which coordinates a random subset draws, the query layer
)
SCORING_REACH = ("bench.tasks", "bench.data", "bench.transforms", "bench.heads", "bench.precisions", "bench.forms",
                 "bench.compressions", "bench.search", "bench.variants")
PROJECT_PACKAGES = ("bench", "methods")
# Descriptive fields of a public model's entry: prose and provenance, which serve nothing
ENTRY_PROSE = ("sources", "unverified", "description", "notes", "license")


def _module(name_or_module) -> ModuleType:
    if isinstance(name_or_module, ModuleType):
        return name_or_module
    return sys.modules.get(name_or_module) or importlib.import_module(name_or_module)


def _project_deps(module: ModuleType, within: tuple[str, ...]) -> set[str]:
    """Project modules (inside `within`) that this module's globals come from: imported modules, functions and
    classes alike."""
    deps = set()
    for value in vars(module).values():
        if isinstance(value, ModuleType) and value.__name__.startswith(module.__name__ + "."):
            continue  # a package's own submodules are set on it by the import system, not imported by its code
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name != module.__name__ and name.split(".")[0] in PROJECT_PACKAGES \
                and any(name == p or name.startswith(p + ".") for p in within):
            deps.add(name)
    return deps


def module_closure(roots, within: tuple[str, ...]) -> list[str]:
    """The roots and every project module reachable from them through their globals, within the packages."""
    seen, todo = set(), [_module(r).__name__ for r in roots]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_project_deps(_module(name), within) - seen)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_hash(module_names) -> str:
    """12 hex digits over the named modules' source files (name and content, in name order)."""
    h = hashlib.sha256()
    for name in sorted(set(module_names)):
        h.update(f"{name}\0{_file_hash(inspect.getsourcefile(_module(name)))}\0".encode())
    return h.hexdigest()[:12]


def training_modules(method_class: type, trains: bool) -> list[str]:
    """The project modules a method's checkpoints come from: its file and the method files it builds on, plus, when
    it trains, the training roots; all followed within TRAINING_REACH (and the encoding's, for a head)."""
    modules = module_closure([method_class.__module__, *(TRAINING_ROOTS if trains else ())], TRAINING_REACH)
    if set(ENCODES_TO_TRAIN) & set(modules):
        modules = sorted({*modules, *encoding_modules()})
    return modules


def method_code(method_class: type, trains: bool, backbone: str | None = None) -> str:
    """The training code's fingerprint; with a backbone, joined with its public entry's content: a checkpoint trained
    from another pinned revision (or shape, pooling...) of the same model name is another checkpoint."""
    return _with_entry(source_hash(training_modules(method_class, trains)), backbone)


def encoding_modules() -> list[str]:
    return module_closure(ENCODING_ROOTS, ENCODING_REACH)


def encoding_code(backbone: str | None = None) -> str:
    """The encoding code's fingerprint; with a backbone, joined with its public entry's content (none: a folder or
    a hub id the table does not know)."""
    return _with_entry(source_hash(encoding_modules()), backbone)


def _with_entry(code: str, backbone: str | None) -> str:
    entry = _entry_content(backbone) if backbone else ""
    return hashlib.sha256(f"{code}|{entry}".encode()).hexdigest()[:12] if entry else code


def _entry_content(backbone: str) -> str:
    """What a public model's entry says about serving it (hub id, revision, shape, pooling, modules, prompts, extra
    steps, trained cells), its prose left out."""
    from dataclasses import asdict

    from bench.models import public_model

    entry = public_model(backbone)
    if entry is None:
        return ""
    return repr(sorted((k, v) for k, v in asdict(entry).items() if k not in ENTRY_PROSE))


def scoring_modules(task) -> list[str]:
    """A task's family file, the data loaders it reads, and the scoring roots, followed within SCORING_REACH."""
    return module_closure([type(task).__module__, *SCORING_ROOTS], SCORING_REACH)


def task_code(task) -> str:
    """What scores a task (scoring_modules); plus, for a task scored by code outside the project (mteb tasks), the
    `external_code` it names (mteb's version, the bytes of a user's task file)."""
    code = source_hash(scoring_modules(task))
    external = task.external_code
    return hashlib.sha256(f"{code}|{external}".encode()).hexdigest()[:12] if external else code


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool]:
    """(short HEAD sha, whether the project's code differs from it); ("unknown", False) outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=root,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench", "methods"], capture_output=True,
                               text=True, cwd=root, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return (sha or "unknown"), bool(sha and dirty)
