#!/usr/bin/env bash
# Sourced at the start of a device call (repo root): installs the carried wheels (.whl/, see
# docs/ARCHITECTURE.md "Benchmarks on the device"), sets the extension cache, builds the CUDA backend once.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD TORCH_EXTENSIONS_DIR=$PWD/.torch_extensions MAX_JOBS=16 PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
python3 -c "from kernels._build import load_backend; load_backend('cuda')" 2>&1 | tail -3
echo "CUDA backend ready in $(( $(date +%s) - start )) s"
