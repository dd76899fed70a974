#!/usr/bin/env bash
# Sourced at the start of a device call (repo root): installs the carried wheels, sets the extension cache,
# builds the CUDA backends (render op, voxel walk) once. .whl/ (git-ignored, carried with the call) holds
# the dependencies missing from the device image's pip list, cp312 manylinux wheels fetched here with
# `pip download --no-deps`: zarr, numcodecs, donfig, google-crc32c, isal, nuscenes-devkit, pyquaternion,
# descartes, cachetools, shapely (about 13 MB; never numpy: the image's packages are built against its own).
# zarr==3.1.5, the release the CI machine resolves: zarr 3.4 also needs msgspec, which the image lacks.
[ -d /tmp/site/zarr ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD TORCH_EXTENSIONS_DIR=$PWD/.torch_extensions MAX_JOBS=16 PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
# the render op and the voxel walk build side by side (separate extensions, separate locks)
for ext in cuda walk_cuda; do
  python3 -c "from kernels._build import load_backend; load_backend('$ext')" 2>&1 | tail -3 &
done
wait
echo "CUDA backends (render, walk) ready in $(( $(date +%s) - start )) s"
