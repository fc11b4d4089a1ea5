"""Memory and disk per 1,000 documents for each way of storing encodings, and a projection for MS MARCO.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/memory_scaling.py --data-dir ../shared/data [--docs 1000]

Bytes, not time. Each storage choice (bench/storage.py) encodes the first --docs SciFact documents (64 tokens, the
default suite's setting) with the backbone (default all-MiniLM-L6-v2) through bench.evaluate.encode_cached into a
fresh cache, and is measured there:
- disk: the size of the cached .npy (its header included);
- memory: the RAM that holds the whole stored encoding (np.load without mmap: the array's bytes; evaluation maps
  the file, so the page cache holds what it reads of it);
- beside them, once: the peak of numpy allocations (tracemalloc) while one cell is prepared for scoring (the float32
  copy of one stored layer at the cell's dim, normalized), which depends on the cell, not on the storage.
Choices: float32 every layer at full width (what every encode stored before); float16 the same; the evaluated layers
and dims only (--layers, --dims: default layers 2, 4, 6 at dims <= 128) in float32 and in float16.

The projection is the formula bytes = layers x dims x bytes per number x texts, which the measured disk per 1,000
documents is checked against (to the header): MS MARCO's 8,841,823 passages on bert-base (12 layers x 768) evaluated
at the Starbucks paper's six targets (2,32) (4,64) (6,128) (8,256) (10,512) (12,768), i.e. layers 2, 4, ..., 12 at
dims <= 768.
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

from bench.data import resolve_data_dir
from bench.data.beir import load_beir
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached
from bench.spec import SubModel
from bench.storage import Plan, Storage, StoredLayers
from bench.transforms import truncate

MSMARCO_PASSAGES = 8_841_823
BERT_BASE = (12, 768)
PAPER_TARGETS = (SubModel(2, 32), SubModel(4, 64), SubModel(6, 128), SubModel(8, 256), SubModel(10, 512),
                 SubModel(12, 768))
DOC_LEN = 64
BATCH_SIZE = 64


def choices(num_layers: int, width: int, selected: list[SubModel]) -> dict[str, Storage]:
    chosen = Storage.for_cells(selected, "float32")
    return {"float32, every layer, full width": Storage.everything(num_layers, width),
            "float16, every layer, full width": Storage.everything(num_layers, width, "float16"),
            "float32, evaluated layers and dims": chosen,
            "float16, evaluated layers and dims": Storage(chosen.layers, chosen.width, "float16")}


def shape_text(storage: Storage) -> str:
    return f"{len(storage.layers)} x {storage.width}"


def measure(encoder: Encoder, texts: list[str], storage: Storage, cache: Path) -> dict:
    """Disk and memory of one stored encoding of `texts`, and the cell-preparation peak of its largest cell."""
    vectors, _ = encode_cached(encoder, "memory-benchmark", "corpus", Texts(texts, DOC_LEN), Plan(BATCH_SIZE, storage),
                               cache)
    (path,) = cache.glob("*.npy")  # a fresh cache folder per choice
    layers = StoredLayers(vectors, storage.layers)
    tracemalloc.start()
    truncate(layers[storage.layers[-1] - 1], storage.width, normalize=True)
    cell_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"disk": path.stat().st_size, "memory": vectors.nbytes, "cell_peak": cell_peak}


def per_1k(value: float, n: int) -> str:
    return f"{value * 1000 / n / 2**20:10.2f} MiB"


def projection_gb(storage: Storage, texts: int) -> float:
    """Disk (and RAM to hold it) of `texts` stored this way, in GB (1e9 bytes)."""
    return storage.bytes_per_text() * texts / 1e9


def print_projection() -> None:
    layers, width = BERT_BASE
    print(f"\nprojection: MS MARCO ({MSMARCO_PASSAGES:,} passages), bert-base ({layers} x {width}), evaluated at the "
          f"paper's targets {' '.join(f'({t.layer},{t.dim})' for t in PAPER_TARGETS)} (layers x dims x bytes x "
          "passages):")
    for name, storage in choices(layers, width, list(PAPER_TARGETS)).items():
        print(f"  {name:36s} {shape_text(storage):>9s}  {storage.bytes_per_text():7,d} B per passage  "
              f"{projection_gb(storage, MSMARCO_PASSAGES):7.1f} GB on disk and to hold in RAM")
    ragged = sum(t.dim for t in PAPER_TARGETS) * 2 * MSMARCO_PASSAGES / 1e9
    cell = MSMARCO_PASSAGES * width * 4 / 1e9
    print(f"  (not implemented: each target layer at its own dim only, float16: {ragged:.1f} GB)")
    print(f"  scoring the largest cell (12, 768) holds its float32 copy, {cell:.1f} GB, whatever the storage, and a "
          "flat float32 index of the same size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents to encode (default 1000)")
    parser.add_argument("--layers", default="2,4,6", help="evaluated layers of the selected choice")
    parser.add_argument("--dims", default="32,64,128", help="evaluated dims of the selected choice")
    args = parser.parse_args()
    texts = load_beir(resolve_data_dir(args.data_dir), "scifact").corpus_texts[:args.docs]
    encoder = Encoder.named(args.backbone, device="cpu")
    selected = [SubModel(int(layer), int(dim)) for layer in args.layers.split(",") for dim in args.dims.split(",")]
    for cell in selected:
        cell.check_inside(encoder.num_layers, encoder.hidden_size)
    print(f"stored encodings of {len(texts)} SciFact documents ({DOC_LEN} tokens), {args.backbone} "
          f"({encoder.num_layers} x {encoder.hidden_size}); per 1,000 documents:")
    print(f"  {'storage':36s} {'stored':>9s} {'disk':>14s} {'memory':>14s}")
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="memory-scaling-") as tmp:
        for i, (name, storage) in enumerate(choices(encoder.num_layers, encoder.hidden_size, selected).items()):
            found = measure(encoder, texts, storage, Path(tmp) / str(i))
            header = found["disk"] - found["memory"]
            assert found["memory"] == storage.bytes_per_text() * len(texts), "the projection formula is off"
            assert 0 < header <= 4096, "the .npy is not a header plus the array"
            peaks[name] = found["cell_peak"], storage
            print(f"  {name:36s} {shape_text(storage):>9s} {per_1k(found['disk'], len(texts))} "
                  f"{per_1k(found['memory'], len(texts))}")
    print(f"  measured: disk = a {header} B header + layers x dims x bytes per number x documents; memory = the array")
    for name, (peak, storage) in peaks.items():
        print(f"  preparing cell ({storage.layers[-1]}, {storage.width}) for scoring, {name}: "
              f"{per_1k(peak, len(texts)).strip()} per 1,000 (numpy peak, tracemalloc)")
    print_projection()


if __name__ == "__main__":
    main()
