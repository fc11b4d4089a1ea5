"""Encode once per (checkpoint, task), then sweep the whole layer x dim x precision grid on the cached arrays."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.backbone import Encoder
from bench.spec import EvalSpec, SubModel, check_precision_dims, default_dims
from bench.transforms import bytes_per_vector

log = logging.getLogger("bench")


def grid(num_layers: int, hidden_size: int, spec: EvalSpec) -> list[SubModel]:
    """Every requested (layer, dim) cell, checked against the backbone. Default: every layer x default_dims."""
    layers = spec.layers or tuple(range(1, num_layers + 1))
    dims = spec.dims or default_dims(hidden_size)
    cells = [SubModel(layer, dim) for layer in layers for dim in dims]
    for cell in cells:
        cell.check_inside(num_layers, hidden_size)
    return cells


def texts_key(model_id: str, pooling: str, max_length: int, texts: list[str]) -> str:
    h = hashlib.sha256(f"{model_id}|{pooling}|{max_length}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode_cached(encoder: Encoder, model_id: str, name: str, texts: list[str], max_length: int,
                  batch_size: int, cache_dir: Path | None) -> np.ndarray:
    """(L, N, H) vectors of `texts`; with a cache dir they are streamed to a memmap there and reused by any later
    run of the same model on the same texts (model_id must identify the weights: backbone name or checkpoint key)."""
    if cache_dir is None:
        return encoder.encode(texts, max_length, batch_size, desc=f"encode {name}")
    path = Path(cache_dir) / f"{texts_key(model_id, encoder.pooling, max_length, texts)}.npy"
    shape = (encoder.num_layers, len(texts), encoder.hidden_size)
    cached = _cached_array(path, shape) if path.exists() else None
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    encoder.encode(texts, max_length, batch_size, out_path=tmp, desc=f"encode {name}")
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _cached_array(path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The cached float32 array of this shape, or None (with a warning) when the file is damaged: an unreadable
    header, another shape or dtype, or a size other than header + data (cut short, or bytes added). Values changed
    in place are not seen (that needs a checksum, i.e. a full read on every reuse)."""
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 - np.load refuses a bad header in many ways (ValueError, EOFError,
        # tokenize.TokenError, ...), and a cache that cannot be read is simply rebuilt
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    else:
        size = path.stat().st_size
        if array.shape == shape and array.dtype == np.float32 and size == array.offset + array.nbytes:
            return array
        problem = f"{array.dtype} {array.shape} in {size} bytes, expected float32 {shape}"
    log.warning("cached encoding %s is damaged (%s); encoding again", path, problem)
    return None


def evaluate_grid(encoder: Encoder, model_id: str, task, data, spec: EvalSpec, cells: list[SubModel] | None = None,
                  targets: tuple[SubModel, ...] = (), cache_dir: Path | None = None,
                  backbone_layers: int | None = None) -> tuple[list[dict], dict]:
    """Cell dicts (layer, dim, precision, metric, score, ...) plus run-level timing dicts (no layer), and the
    per-example values of every cell keyed "layer/dim/precision/name" (pair similarities, per-query metrics).
    `backbone_layers`: depth of the full backbone, for relative_encode_cost (default: the encoder's own depth,
    which is wrong for a checkpoint cut to fewer blocks)."""
    all_cells = grid(encoder.num_layers, encoder.hidden_size, spec)
    cells = all_cells if cells is None else cells
    for cell in cells:
        cell.check_inside(encoder.num_layers, encoder.hidden_size)
    check_precision_dims(spec.precisions, tuple(cell.dim for cell in cells))  # before the encode, not after
    t0 = time.perf_counter()
    texts = task.texts(data, spec)
    arrays = {name: encode_cached(encoder, model_id, f"{task.name}/{name}", t, max_len, spec.batch_size, cache_dir)
              for name, (t, max_len) in texts.items()}
    encode_s = time.perf_counter() - t0
    aux = task.prepare(data, texts)
    rows, examples = [], {}
    t1 = time.perf_counter()
    for cell in cells:
        for precision in spec.precisions:
            metrics, per_example = task.score_cell(data, arrays, aux, cell.layer, cell.dim, precision, spec)
            if not metrics:  # the precision does not apply to this task family (binary+rescore on STS)
                continue
            n = len(next(iter(per_example.values())))
            metrics["relative_encode_cost"] = cell.layer / (backbone_layers or encoder.num_layers)
            rows += [dict(layer=cell.layer, dim=cell.dim, precision=precision, metric=m, score=s, n_examples=n,
                          bytes_per_vector=bytes_per_vector(cell.dim, precision), is_target=cell in targets)
                     for m, s in metrics.items()]
            examples.update({f"{cell.layer}/{cell.dim}/{precision}/{k}": v for k, v in per_example.items()})
    rows.append(dict(metric="encode_seconds", score=encode_s))
    rows.append(dict(metric="grid_eval_seconds", score=time.perf_counter() - t1))
    return rows, examples
