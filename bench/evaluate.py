"""Encode once per (checkpoint, task), then sweep the whole layer x dim x precision grid on the cached arrays.

Evaluation alone decides which cells are scored: the requested grid plus the checkpoint's targets, or only its
targets (`Checkpoint.only_targets`); precisions are checked against those dims once, before anything is encoded.
A checkpoint's head (bench/heads.py) is applied to each layer's pooled vectors before truncation; a head that makes
its own binary codes (bebr) is scored at the binary precisions only, through those codes, at `bits_per_dim` bits per
dimension. Encodings store only the evaluated layers and dims, in EvalSpec.store_dtype, and are encoded sharded under
torchrun (bench/storage.py): every rank encodes its part, rank 0 scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from bench import BenchError
from bench.encoder import Encoder, Texts
from bench.fingerprint import encoding_code
from bench.heads import Head, head_id, load_head
from bench.phases import timed
from bench.precisions import KNOWN, bytes_per_vector
from bench.spec import EvalSpec, SubModel, check_asymmetric_dims, check_precision_dims, default_dims
from bench.storage import Plan, Storage, StoredLayers, encode_in_memory, encode_to_file
from bench.tasks import Task
from bench.transforms import BinaryCodes, LayersWithHead
from bench.variants import RandomSubset, Variant, example_key, variant_cells

log = logging.getLogger("bench")


def grid(num_layers: int, width: int, spec: EvalSpec) -> list[SubModel]:
    """Every requested (layer, dim) cell, checked against the model. Default: every layer x default_dims(width)."""
    layers = spec.layers or tuple(range(1, num_layers + 1))
    dims = spec.dims or default_dims(width)
    cells = [SubModel(layer, dim) for layer in layers for dim in dims]
    for cell in cells:
        cell.check_inside(num_layers, width)
    return cells


def cells_to_score(num_layers: int, width: int, spec: EvalSpec, targets: tuple[SubModel, ...] = (),
                   only_targets: bool = False) -> list[SubModel]:
    """The grid plus the targets not on it (or the targets alone), each inside the model, and the precisions
    checked against their dims: a bad request fails here, before the encode."""
    cells = [] if only_targets else grid(num_layers, width, spec)
    cells += [t for t in targets if t not in cells]
    for cell in cells:
        cell.check_inside(num_layers, width)
    check_precision_dims(spec.precisions, tuple(cell.dim for cell in cells))
    return cells


def check_variants(spec: EvalSpec, cells: list[SubModel], variants: list) -> None:
    """Asymmetric dims on the grid, and the variant precisions storable at the variant cells' dims."""
    check_asymmetric_dims(spec.asymmetric_dims, [cell.dim for cell in cells])
    check_precision_dims(spec.variant_precisions, tuple(cell.dim for cell, _ in variants))


def texts_key(model_id: str, serving: str, max_length: int, texts: list[str], storage: Storage | None = None) -> str:
    """The encoding's cache key: the weights, how they are served (`Encoder.serving_tag`: pooling, prompt, head),
    the texts, what is stored, and the encoder's code."""
    stored = "" if storage is None else f"|{storage.key()}"
    h = hashlib.sha256(f"{model_id}|{serving}|{max_length}|{len(texts)}{stored}|{encoding_code()}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@timed("encode")
def encode_cached(encoder: Encoder, model_id: str, name: str, texts: Texts, plan: Plan,
                  cache_dir: Path | None) -> tuple[np.ndarray, dict | None]:
    """(layers, N, width) vectors of `texts` (in their role: query, document, or None: the model's default prompt)
    as `plan.storage` says (default: every layer, full width, float32), and the measured encode time per layer
    ({"device", "layer_seconds", "n_texts"}, or None). With a cache dir the vectors are streamed to a memmap there
    and reused by any later run of the same model on the same texts with the same prompt (model_id must identify
    the weights: backbone name or checkpoint key); a damaged cached file is encoded again, never trusted; the timing
    of the encode that made them is kept beside them. `plan.world` (rank, size) > 1 process: collective, each rank
    encodes its shard (bench/storage.py); the timing is then summed over the ranks (device-seconds)."""
    plan = plan.for_encoder(encoder)
    if cache_dir is None:
        if plan.world[1] > 1:
            raise BenchError("a sharded encode writes one shared file: pass a cache dir")
        vectors, seconds = encode_in_memory(encoder, texts, plan, f"encode {name}")
        return vectors, _timing(encoder, seconds, len(texts))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    key = texts_key(model_id, encoder.serving_tag(texts.role), texts.max_length, texts.items, plan.storage)
    path = Path(cache_dir) / f"{key}.npy"
    if plan.world[1] > 1:  # the ranks of one job encode together (bench/storage.py coordinates them): no lock
        return _encode_into(encoder, texts, plan, path, name)
    # Two processes (jobs, terminals) that reach the same encoding at once: the first encodes under a file lock
    # keyed like the file, the second waits for it and then reads the finished file instead of encoding again.
    with FileLock(str(path.with_suffix(".lock"))):
        return _encode_into(encoder, texts, plan, path, name)


def _encode_into(encoder: Encoder, texts: Texts, plan: Plan, path: Path, name: str) -> tuple[np.ndarray, dict | None]:
    timing_path = path.with_suffix(".timing.json")
    storage = plan.storage
    if plan.world[0] == 0 and path.exists() and _cached_array(path, storage.shape(len(texts)), storage.dtype) is None:
        path.unlink()  # rank 0 decides for every rank whether the file is there (bench/storage.encode_to_file)

    def write_timing(seconds: list[float] | None) -> None:
        timing = _timing(encoder, seconds, len(texts))
        if timing is not None:
            tmp_timing = timing_path.with_suffix(f".tmp{os.getpid()}")
            tmp_timing.write_text(json.dumps(timing))
            os.replace(tmp_timing, timing_path)

    encode_to_file(encoder, texts, plan, path, f"encode {name}", write_timing)
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else None
    return np.load(path, mmap_mode="r"), timing


def _cached_array(path: Path, shape: tuple[int, int, int], dtype: str) -> np.ndarray | None:
    """The cached array of this shape and dtype, or None (with a warning) when the file is damaged: an unreadable
    header, another shape or dtype, or a size other than header + data (cut short, or bytes added). Values changed
    in place are not seen (that needs a checksum, i.e. a full read on every reuse)."""
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 - np.load refuses a bad header in many ways (ValueError, EOFError,
        # tokenize.TokenError, ...), and a cache that cannot be read is simply rebuilt
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    else:
        size = path.stat().st_size
        if array.shape == shape and array.dtype == np.dtype(dtype) and size == array.offset + array.nbytes:
            return array
        problem = f"{array.dtype} {array.shape} in {size} bytes, expected {dtype} {shape}"
    log.warning("cached encoding %s is damaged (%s); encoding again", path, problem)
    return None


def _timing(encoder: Encoder, seconds: list[float] | None, n_texts: int) -> dict | None:
    if seconds is None:
        return None
    return {"device": str(encoder.device), "layer_seconds": seconds, "n_texts": n_texts}


def encode_time_rows(timings: list[dict | None], device: str) -> list[dict]:
    """`encode_ms_per_1k_texts` per layer over all of a task's texts: measured on this run's device only (a
    cached encode made elsewhere gives no row rather than another machine's time)."""
    if not timings or any(t is None or t["device"] != device for t in timings):
        return []
    seconds = np.sum([t["layer_seconds"] for t in timings], axis=0)
    n = sum(t["n_texts"] for t in timings)
    return [dict(layer=layer, metric="encode_ms_per_1k_texts", score=1e6 * s / n)
            for layer, s in enumerate(seconds, 1)]


class HeadedLayers(LayersWithHead):
    """arrays[name][layer - 1] as the tasks read it, with the checkpoint's head applied to that layer (the last
    layer asked for is kept: cells are scored layer by layer); `codes(layer, dim)` the head's own binary codes of
    a cell, or None where it makes none (bench/transforms.head_codes)."""

    def __init__(self, vectors: StoredLayers, head: Head):
        self.vectors, self.head, self._last = vectors, head, (None, None)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._last[0] != index:
            self._last = (index, self.head.apply(index + 1, self.vectors[index]))
        return self._last[1]

    def __len__(self) -> int:
        return len(self.vectors)

    def codes(self, layer: int, dim: int) -> BinaryCodes | None:
        return self.head.codes(layer, self.vectors[layer - 1], dim)


class _CellScorer:
    """Scores cells of one checkpoint on one task into rows and per-example values."""

    def __init__(self, task: Task, data, arrays: dict, aux: dict, spec: EvalSpec, checkpoint, head: Head | None,
                 backbone_layers: int):
        self.task, self.data, self.arrays, self.aux, self.spec = task, data, arrays, aux, spec
        self.targets, self.head_name = checkpoint.targets, head_id(checkpoint.head)
        self.backbone_layers = backbone_layers
        self.bits_per_dim = 1 if head is None else head.bits_per_dim
        self.rows, self.examples = [], {}

    def score(self, cell: SubModel, precision: str, store_examples: bool, variant: Variant | None = None,
              width: int = 0, roles: dict | None = None) -> None:
        arrays = self.arrays if variant is None else variant.view(self.arrays, roles, cell, width)
        metrics, per_example = self.task.score_cell(self.data, arrays, self.aux, cell.layer, cell.dim, precision,
                                                    self.spec)
        # a task that stores no per-example values (mteb's) says how many examples it scored
        n = len(next(iter(per_example.values()))) if per_example else self.task.n_examples(self.data)
        encode_layer = cell.layer if variant is None else variant.encode_layer(cell)
        metrics["relative_encode_cost"] = encode_layer / self.backbone_layers
        size = bytes_per_vector(cell.dim, precision, self.bits_per_dim)
        name = "" if variant is None else variant.name
        extra = {} if variant is None else {"variant": name}
        self.rows += [dict(layer=cell.layer, dim=cell.dim, precision=precision, metric=m, score=s, n_examples=n,
                           bytes_per_vector=size, is_target=variant is None and cell in self.targets,
                           head=self.head_name, **extra) for m, s in metrics.items()]
        if store_examples:
            self.examples.update({example_key(cell.layer, cell.dim, precision, k, name): v
                                  for k, v in per_example.items()})


@timed("score")
def evaluate_grid(encoder: Encoder, checkpoint, task: Task, data, spec: EvalSpec, cache_dir: Path | None = None,
                  backbone_layers: int | None = None, world: tuple[int, int] = (0, 1)) -> tuple[list[dict], dict]:
    """Cell dicts (layer, dim, precision, metric, score, ...), per-layer encode-time dicts (layer, no dim) and
    run-level timing dicts (no layer), and the per-example values of every cell keyed "layer/dim/precision/name"
    (pair similarities, per-query metrics). `backbone_layers`: depth of the full backbone, for
    relative_encode_cost (default: the encoder's own depth, which is wrong for a checkpoint cut to fewer blocks).
    `world` (rank, size): under torchrun every rank calls this and encodes its shard; rank 0 alone scores, the
    others get ([], {})."""
    head = load_head(checkpoint.head) if checkpoint.head else None
    width = (head.out_dim if head is not None and head.out_dim else encoder.width)
    cells = cells_to_score(encoder.num_layers, width, spec, checkpoint.targets, checkpoint.only_targets)
    served = KNOWN if head is None else head.PRECISIONS  # a head of binary codes has no float cells of its own
    # a task scores the precisions its family can (STS has no search: no binary+rescore); unknown names raised above
    precisions = [p for p in spec.precisions if p in task.meta.precisions and p in served]
    t0 = time.perf_counter()
    texts = task.texts(data, spec)
    roles = {name: task.role(name) for name in texts}
    variants = variant_cells(cells, spec, width, roles, head is not None and head.PRECISIONS != KNOWN)
    check_variants(spec, cells, variants)
    # a head reads whole vectors, and random subsets draw from every coordinate
    whole = head is not None or any(isinstance(v, RandomSubset) for _, v in variants)
    storage = Storage.for_cells(cells, spec.store_dtype, encoder.width if whole else None)
    plan = Plan(spec.batch_size, storage, world)
    encoded = {name: encode_cached(encoder, checkpoint.model_id, f"{task.name}/{name}",
                                   Texts(t, max_len, task.role(name)), plan, cache_dir)
               for name, (t, max_len) in texts.items()}
    encode_s = time.perf_counter() - t0
    if world[0] != 0:
        return [], {}
    stored = {name: StoredLayers(v, storage.layers) for name, (v, _) in encoded.items()}
    arrays = {name: v if head is None else HeadedLayers(v, head) for name, v in stored.items()}
    scorer = _CellScorer(task, data, arrays, task.prepare(data, texts), spec, checkpoint, head,
                         backbone_layers or encoder.num_layers)
    t1 = time.perf_counter()
    for cell in sorted(cells):
        for precision in precisions:
            scorer.score(cell, precision, store_examples=spec.example_cells is None
                         or (cell.layer, cell.dim) in spec.example_cells)
    # every variant cell keeps its per-example values: they are what its statistics are made of
    for cell, variant in sorted(variants, key=lambda cv: cv[0]):
        for precision in [p for p in spec.variant_precisions if p in precisions]:
            scorer.score(cell, precision, True, variant, width, roles)
    rows, examples = scorer.rows, scorer.examples
    rows += encode_time_rows([timing for _, timing in encoded.values()], str(encoder.device))
    rows.append(dict(metric="encode_seconds", score=encode_s))
    rows.append(dict(metric="grid_eval_seconds", score=time.perf_counter() - t1))
    return rows, examples
