// CUDA backend of the voxel walk: one thread per ray; marks are plain byte stores (every writer stores 1).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "walk_bindings.h"
#include "walk_core.h"

#include <torch/csrc/utils/pybind.h>  // last: pybind11 after the CUDA headers

namespace {

__global__ void walk_kernel(walk::Grid g, int64_t R, int64_t N, const double* __restrict__ o, const double* __restrict__ d,
                            const double* __restrict__ tm, const int64_t* __restrict__ fr,
                            const uint8_t* __restrict__ occ, uint8_t* __restrict__ out) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= R) return;
  uint8_t* v = out + fr[r] * N;
  walk::walk_ray(g, o + 3 * r, d + 3 * r, tm[r], occ ? occ + fr[r] * N : nullptr, [v](int64_t lin) { v[lin] = 1; });
}

void walk_cuda(const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& t_max, const at::Tensor& frame,
               const at::Tensor& occupied, at::Tensor& visited, const std::vector<double>& lo,
               const std::vector<double>& hi, const std::vector<double>& vs, const std::vector<int64_t>& n) {
  walk::check_inputs("walk (cuda)", at::kCUDA, origins, dirs, t_max, frame, occupied, visited, n);
  const c10::cuda::CUDAGuard guard(origins.device());
  const walk::Grid g = walk::make_grid(lo, hi, vs, n);
  const int64_t R = origins.size(0), N = n[0] * n[1] * n[2];
  if (R == 0) return;
  const int threads = 128;
  walk_kernel<<<(R + threads - 1) / threads, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      g, R, N, origins.data_ptr<double>(), dirs.data_ptr<double>(), t_max.data_ptr<double>(),
      frame.data_ptr<int64_t>(), occupied.numel() ? occupied.data_ptr<uint8_t>() : nullptr,
      visited.data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("walk", &walk_cuda, "mark the voxels rays enter (CUDA)"); }
