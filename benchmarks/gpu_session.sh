#!/usr/bin/env bash
# One device call: build the CUDA backend, run the CUDA tests, profile, run the render benchmark.
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_session.sh [render.py args]
set -uo pipefail
export TORCH_EXTENSIONS_DIR="$PWD/.torch_extensions" PYTHONUNBUFFERED=1 MAX_JOBS=16
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
start=$(date +%s)
python3 -c "from kernels._build import load_backend; load_backend('cuda'); load_backend('cpu')" 2>&1 | tail -20
echo "build: $(( $(date +%s) - start )) s"
for lanes in ${LANES:-}; do  # optional lane-count experiment, e.g. LANES="4 16"
  AUTOLABEL_RENDER_LANES=$lanes python3 -c "from kernels._build import load_backend; load_backend('cuda')" 2>&1 | tail -5
  echo "lanes=$lanes"; AUTOLABEL_RENDER_LANES=$lanes python3 benchmarks/profile_render.py 2>&1 | tail -5
done
python3 -m pytest -q tests/test_render.py 2>&1 | tail -15 | tee "$OUT/pytest_render.txt"
python3 benchmarks/profile_render.py 2>&1 | tee "$OUT/profile.txt" | tail -40
python3 benchmarks/render.py --json "$OUT/render.json" "$@" 2>&1 | tee "$OUT/render.txt"
