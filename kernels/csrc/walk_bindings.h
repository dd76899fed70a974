// Host-side checks and grid set-up shared by the CPU and CUDA bindings of the voxel walk.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "walk_core.h"

namespace walk {

inline Grid make_grid(const std::vector<double>& lo, const std::vector<double>& hi, const std::vector<double>& vs,
                      const std::vector<int64_t>& n) {
  Grid g;
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = lo[a];
    g.hi[a] = hi[a];
    g.vs[a] = vs[a];
    g.n[a] = n[a];
  }
  return g;
}

// origins / dirs (R, 3) float64, t_max (R,) float64, frame (R,) int64, occupied (B, N) uint8 or empty,
// visited (B, N) uint8; all contiguous on one device. Frame indices are checked in Python.
inline void check_inputs(const char* who, at::DeviceType device, const at::Tensor& origins, const at::Tensor& dirs,
                         const at::Tensor& t_max, const at::Tensor& frame, const at::Tensor& occupied,
                         const at::Tensor& visited, const std::vector<int64_t>& n) {
  for (const at::Tensor* t : {&origins, &dirs, &t_max, &frame, &occupied, &visited}) {
    TORCH_CHECK(t->device().type() == device && t->device() == origins.device(), who,
                ": every input must be on one device of type ", device);
    TORCH_CHECK(t->is_contiguous(), who, ": every input must be contiguous");
  }
  TORCH_CHECK(n.size() == 3, who, ": the grid needs 3 sizes");
  const int64_t R = origins.size(0), N = n[0] * n[1] * n[2];
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && dirs.sizes() == origins.sizes(), who,
              ": origins and dirs must be (R, 3)");
  TORCH_CHECK(origins.scalar_type() == at::kDouble && dirs.scalar_type() == at::kDouble &&
                  t_max.scalar_type() == at::kDouble, who, ": origins, dirs and t_max must be float64");
  TORCH_CHECK(t_max.numel() == R && frame.numel() == R && frame.scalar_type() == at::kLong, who,
              ": t_max (float64) and frame (int64) need one value per ray");
  TORCH_CHECK(visited.scalar_type() == at::kByte && visited.dim() == 2 && visited.size(1) == N, who,
              ": visited must be (B, X*Y*Z) uint8");
  TORCH_CHECK(occupied.numel() == 0 || (occupied.scalar_type() == at::kByte && occupied.sizes() == visited.sizes()),
              who, ": occupied must be empty or (B, X*Y*Z) uint8 like visited");
}

}  // namespace walk
