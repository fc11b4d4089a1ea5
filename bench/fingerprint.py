"""Code fingerprints: a hash of the source files that produce a checkpoint, an encoding or a result.

A spec says WHAT was run; the fingerprint says WITH WHICH CODE. Both join the keys of everything cached or
written (checkpoint folders, encoding files, result files), so an edit to a method, the training loop, a loss,
SMAE, the encoder, the evaluation or a task never lets an old artefact pass for a new one. The run_id stays the
hash of the spec alone: `bench reproduce` finds its references by it, so a code change shows up there as DRIFT
with the numbers, not as a missing reference.

A module's fingerprint covers its own file and, transitively, the files of the project modules its globals come
from within the given packages (methods/starbucks.py imports from methods/starbucks_srl.py, so editing the
latter changes both). Files are hashed as bytes: a comment edit counts too, which errs on the side of rerunning.
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

# What every training goes through (the loop, the losses, pooling and the orchestration of jobs); SMAE and the
# data loaders of training sets are reached from the methods that use them.
TRAINING_MODULES = ("bench.train", "bench.losses", "bench.hub", "bench.devices", "bench.pooling", "bench.serving",
                    "bench.data.pairs", "methods._jobs")
# tokenization, the forward pass, pooling and head of every layer, the registry's prompts and extra steps, and how
# encodings are chunked and which part is stored
ENCODING_MODULES = ("bench.hub", "bench.devices", "bench.pooling", "bench.serving", "bench.encoder", "bench.models",
                    "bench.storage")
# slicing, heads, quantization, and what each precision stores and compares
SCORING_MODULES = ("bench.evaluate", "bench.transforms", "bench.heads", "bench.precisions")
PROJECT_PACKAGES = ("bench", "methods")


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


def method_code(method_class: type, trains: bool) -> str:
    """What makes a method's checkpoints: its file and the method files it builds on, plus, when it trains, the
    training loop, the losses, the encoder and whatever project module those files use within bench.data,
    bench.smae and methods."""
    within = ("methods", "bench.smae", "bench.data", "bench.losses")
    roots = [method_class.__module__, *(TRAINING_MODULES if trains else ())]
    return source_hash(module_closure(roots, within))


def encoding_code() -> str:
    return source_hash(ENCODING_MODULES)


def task_code(task) -> str:
    """What scores a task: its family's file, the data loaders it reads, and the evaluation and transforms; plus,
    for a task scored by code outside the project (mteb tasks), the `external_code` it names (mteb's version, the
    bytes of a user's task file)."""
    code = source_hash(module_closure([type(task).__module__, *SCORING_MODULES], ("bench.tasks", "bench.data",
                                                                                 *SCORING_MODULES[1:])))
    external = getattr(task, "external_code", "")
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
