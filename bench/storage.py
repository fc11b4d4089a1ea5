"""What an encoding stores, and how several processes share one encode.

An encode runs by a `Plan`: texts per batch, what is stored (`Storage`), and the world (rank, size) of processes
that encode together; the texts themselves travel as one `bench.encoder.Texts` (with their role and token budget).

Storage. Evaluation keeps only what its cells read: the evaluated layers and their first `width` dims (the largest
evaluated dim, or the full width when a head maps each layer's whole vector), in float32 or float16
(EvalSpec.store_dtype). bert-base evaluated on 6 layers at dims <= 768 stores 6 x 768 numbers per text instead of
12 x 768; MiniLM evaluated at dims <= 128 stores 128 of its 384. A cell's score does not depend on what else is
stored: truncation reads the first `dim` coordinates and normalizes after, so the layers and dims left out are
never read (tests/test_storage.py checks the scores are identical). `StoredLayers` gives the tasks the
`arrays[name][layer - 1]` they read.

float16 rounds each coordinate to 11 significant bits (relative error <= 2^-11, about 4.9e-4); cells are then
computed in float32 from the rounded vectors. Its effect on all-MiniLM-L6-v2's scores is measured by
benchmarks/fp16_scores.py and quoted in README. Pooled values beyond float16's range (65504) would turn into inf: such
an encode stops with one error line.

Sharded encoding. The texts are cut, in their given order, into chunks of CHUNK_BATCHES batches; the encoder sorts
each chunk by length and batches it, so the batches (and the padding inside each) depend on the texts and the batch
size alone, never on how many processes encode. Under torchrun (world size W, C chunks) rank r encodes the
contiguous run of chunks [r*C // W, (r+1)*C // W) into its own rows of ONE memory-mapped .npy that rank 0 created;
a single process encodes every chunk in turn. Each text thus goes through the very same batch either way: with the
same kind of device, software and thread count, the sharded array is bitwise the single-process one (checked under
torchrun with gloo on CPU). GPUs of one model run the same kernels on the same shapes, so the same is expected
there; not checked (no GPU here). Sorting within 16 batches rather than over all texts adds little padding: at
batch 64, SciFact's documents at 256 tokens get 0.2% more padded tokens (none at 64), STS-B's sentences none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from bench import BenchError
from bench.dist import barrier, from_rank0, sum_across
from bench.encoder import Encoder, Texts
from bench.spec import SubModel

CHUNK_BATCHES = 16  # batches per chunk: the unit of work a rank takes, and the scope of the length sort


@dataclass(frozen=True)
class Storage:
    """What an encoding keeps: `layers` (1-based, ascending), the first `width` dims of each, in `dtype`."""

    layers: tuple[int, ...]
    width: int
    dtype: str = "float32"

    @classmethod
    def everything(cls, num_layers: int, width: int, dtype: str = "float32") -> "Storage":
        return cls(tuple(range(1, num_layers + 1)), width, dtype)

    @classmethod
    def for_cells(cls, cells: list[SubModel], dtype: str, full_width: int | None = None) -> "Storage":
        """The layers of the cells and their largest dim; `full_width` when something reads whole vectors (a head)."""
        return cls(tuple(sorted({c.layer for c in cells})), full_width or max(c.dim for c in cells), dtype)

    def shape(self, n_texts: int) -> tuple[int, int, int]:
        return len(self.layers), n_texts, self.width

    def bytes_per_text(self) -> int:
        return len(self.layers) * self.width * np.dtype(self.dtype).itemsize

    def key(self) -> str:
        """For the encoding's cache key: what is stored, and the chunking that fixes the batches."""
        return f"layers={','.join(map(str, self.layers))}|width={self.width}|dtype={self.dtype}|chunk={CHUNK_BATCHES}"


@dataclass(frozen=True)
class Plan:
    """How one encoding runs: texts per batch, what is stored (None: every layer at full width, float32), and the
    world (rank, size) of processes that encode it together (bench/storage.py's sharding)."""

    batch_size: int
    storage: Storage | None = None
    world: tuple[int, int] = (0, 1)

    def for_encoder(self, encoder: Encoder) -> "Plan":
        """This plan with its storage filled in for `encoder` when it names none."""
        if self.storage is not None:
            return self
        return replace(self, storage=Storage.everything(encoder.num_layers, encoder.width))


class StoredLayers:
    """`arrays[name][layer - 1]` as the tasks read it, from an encoding holding only `layers`."""

    def __init__(self, vectors: np.ndarray, layers: tuple[int, ...]):
        self.vectors, self.position = vectors, {layer: i for i, layer in enumerate(layers)}

    def __getitem__(self, index: int) -> np.ndarray:
        if index + 1 not in self.position:
            raise IndexError(f"layer {index + 1} is not stored (stored: {', '.join(map(str, self.position))})")
        return self.vectors[self.position[index + 1]]

    def __len__(self) -> int:
        return max(self.position)  # index layer - 1 for any stored layer is below this


def chunks(n_texts: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of CHUNK_BATCHES batches each, in the texts' order."""
    size = CHUNK_BATCHES * batch_size
    return [(start, min(start + size, n_texts)) for start in range(0, n_texts, size)]


def shard(n_texts: int, batch_size: int, rank: int, size: int) -> list[tuple[int, int]]:
    """The contiguous run of chunks rank `rank` of `size` encodes."""
    every = chunks(n_texts, batch_size)
    return every[rank * len(every) // size:(rank + 1) * len(every) // size]


def encode_chunks(encoder: Encoder, texts: Texts, plan: Plan, out: np.ndarray, spans: list[tuple[int, int]],
                  desc: str) -> np.ndarray:
    """Encode the rows of `spans` into `out`, one encoder call per chunk. Returns [seconds of layer 1..L summed
    over the chunks, number of chunks the model's blocks could not be timed in]."""
    seconds = np.zeros(encoder.num_layers + 1)
    for k, (start, stop) in enumerate(spans, 1):
        rows = out[:, start:stop]
        with np.errstate(over="ignore"):  # an overflowing float16 cast is refused just below, in one line
            _, timed = encoder.encode(texts.rows(start, stop), plan.batch_size, desc=f"{desc} {k}/{len(spans)}",
                                      layers=plan.storage.layers, max_dim=plan.storage.width, out=rows)
        if plan.storage.dtype == "float16" and not np.isfinite(rows).all():
            raise BenchError("the encoding does not fit float16 storage (values beyond +-65504, or not finite); "
                             "evaluate with store_dtype float32 (bench run --store-dtype float32)")
        if timed is None:
            seconds[-1] += 1
        else:
            seconds[:-1] += timed
    return seconds


def layer_seconds(summed: np.ndarray) -> list[float] | None:
    """The per-layer seconds of `encode_chunks` (summed over processes), or None where any chunk went untimed."""
    return None if summed[-1] else summed[:-1].tolist()


def encode_in_memory(encoder: Encoder, texts: Texts, plan: Plan, desc: str) -> tuple[np.ndarray, list[float] | None]:
    """One process, no file: the stored array and its per-layer encode seconds."""
    out = np.empty(plan.storage.shape(len(texts)), dtype=plan.storage.dtype)
    summed = encode_chunks(encoder, texts, plan, out, chunks(len(texts), plan.batch_size), desc)
    return out, layer_seconds(summed)


def encode_to_file(encoder: Encoder, texts: Texts, plan: Plan, path: Path, desc: str,
                   before_publish: Callable[[list[float] | None], None]) -> None:
    """Write the stored array of `texts` to `path` unless it exists: every rank of `plan.world` (rank, size)
    encodes its shard into one memory-mapped file under a temporary name; rank 0 created it, and once all ranks are
    done it calls `before_publish(per-layer seconds summed over ranks)` and renames the file to `path`. Collective:
    every rank calls it with the same arguments, and all return when `path` is there."""
    rank, size = plan.world
    device = encoder.device
    if not from_rank0(not path.exists(), size, device):
        return
    tmp = from_rank0(path.with_suffix(f".tmp{os.getpid()}.npy"), size, device)  # one name for all ranks
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(tmp, mode="w+", dtype=plan.storage.dtype,
                                  shape=plan.storage.shape(len(texts))).flush()
    barrier(size)
    out = np.load(tmp, mmap_mode="r+")
    summed = encode_chunks(encoder, texts, plan, out, shard(len(texts), plan.batch_size, rank, size), desc)
    out.flush()
    del out
    summed = sum_across(summed, size, device)
    barrier(size)  # every rank's rows are on disk
    if rank == 0:
        before_publish(layer_seconds(summed))
        os.replace(tmp, path)
    barrier(size)
