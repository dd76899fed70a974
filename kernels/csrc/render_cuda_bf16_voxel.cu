// One (dtype, mode) slice of the CUDA render backend; see render_cuda.cuh.
#include "render_cuda.cuh"

RENDER_CUDA_INSTANTIATE(float, at::BFloat16, render::VoxelWalker)
