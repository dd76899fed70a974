// CPU backend of the voxel walk: rays in parallel (at::parallel_for), marks as relaxed atomic byte stores.
// Only the headers the module uses, not torch/extension.h (the whole C++ frontend): a build took 43-47 s with it
// and 15 s without, on one core of the 2-core CPU (BENCHMARKS.md, "Building the C++ backends").
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

#include "walk_bindings.h"
#include "walk_core.h"

namespace {

void walk_cpu(const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& t_max, const at::Tensor& frame,
              const at::Tensor& occupied, at::Tensor& visited, const std::vector<double>& lo,
              const std::vector<double>& hi, const std::vector<double>& vs, const std::vector<int64_t>& n) {
  walk::check_inputs("walk (cpu)", at::kCPU, origins, dirs, t_max, frame, occupied, visited, n);
  const walk::Grid g = walk::make_grid(lo, hi, vs, n);
  const int64_t R = origins.size(0), N = n[0] * n[1] * n[2];
  const double* o = origins.data_ptr<double>();
  const double* d = dirs.data_ptr<double>();
  const double* tm = t_max.data_ptr<double>();
  const int64_t* fr = frame.data_ptr<int64_t>();
  const uint8_t* occ = occupied.numel() ? occupied.data_ptr<uint8_t>() : nullptr;
  uint8_t* out = visited.data_ptr<uint8_t>();
  at::parallel_for(0, R, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint8_t* v = out + fr[r] * N;
      walk::walk_ray(g, o + 3 * r, d + 3 * r, tm[r], occ ? occ + fr[r] * N : nullptr,
                     [v](int64_t lin) { __atomic_store_n(v + lin, uint8_t(1), __ATOMIC_RELAXED); });
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("walk", &walk_cpu, "mark the voxels rays enter (CPU)"); }
