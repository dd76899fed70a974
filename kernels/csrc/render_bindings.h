// Host-side helpers shared by the C++ and CUDA bindings of the render op: the grid from Python values,
// and the input checks (device, contiguity, shapes, dtypes) with messages that name the backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "render_core.h"

namespace render {

template <typename T>
Grid<T> make_grid(const std::vector<double>& lo, const std::vector<double>& vs, const std::vector<double>& hi,
                  const at::Tensor& density) {
  Grid<T> g;
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = T(lo[a]);
    g.vs[a] = T(vs[a]);
    g.hi[a] = T(hi[a]);
    g.n[a] = static_cast<int>(density.size(a + 1));
  }
  return g;
}

// `who` names the backend in messages; half / bfloat16 features are allowed where `half_features`.
inline void check_inputs(const char* who, at::DeviceType device, bool half_features, const at::Tensor& density,
                         const at::Tensor& features, const at::Tensor& origins, const at::Tensor& directions,
                         const at::Tensor& batch_index, const at::Tensor& near, const at::Tensor& far) {
  for (const at::Tensor* t : {&density, &features, &origins, &directions, &batch_index, &near, &far}) {
    TORCH_CHECK(t->device().type() == device && t->device() == density.device(), who,
                ": every input must be on the density's device, of type ", device);
    TORCH_CHECK(t->is_contiguous(), who, ": every input must be contiguous");
  }
  TORCH_CHECK(density.dim() == 4, who, ": density must be (B, X, Y, Z)");
  TORCH_CHECK(features.dim() == 5 && features.sizes().slice(0, 4) == density.sizes(), who,
              ": features must be (B, X, Y, Z, C) matching density");
  const auto st = density.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, who, ": density must be float32 or float64");
  const auto ft = features.scalar_type();
  TORCH_CHECK(ft == st || (half_features && st == at::kFloat && (ft == at::kHalf || ft == at::kBFloat16)), who,
              half_features ? ": features must have the density's dtype, or be float16 / bfloat16 with float32 density"
                            : ": features and density must share a dtype");
  TORCH_CHECK(origins.scalar_type() == st && directions.scalar_type() == st && near.scalar_type() == st &&
                  far.scalar_type() == st,
              who, ": rays must have the density's dtype");
  TORCH_CHECK(batch_index.scalar_type() == at::kLong, who, ": batch_index must be int64");
  const int64_t R = origins.size(0);
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && directions.sizes() == origins.sizes(), who,
              ": origins and directions must be (n_rays, 3)");
  TORCH_CHECK(batch_index.numel() == R && near.numel() == R && far.numel() == R, who,
              ": batch_index, near and far must have n_rays elements");
}

// Backward's saved outputs and their gradients: contiguous, on the device, in the density's dtype.
inline void check_saved(const char* who, const at::Tensor& density, std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(t->device() == density.device() && t->is_contiguous() && t->scalar_type() == density.scalar_type(),
                who, " backward: outputs and their gradients must be contiguous tensors of the density's dtype and device");
  }
}

}  // namespace render
