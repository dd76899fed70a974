// Bindings of the CUDA render backend: checks, dtype / mode dispatch to the launchers compiled in
// the render_cuda_*.cu files, output allocation on the inputs' device and current stream.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/utils/pybind.h>

#include <vector>

#include "render_bindings.h"
#include "render_core.h"
#include "render_cuda_launch.h"

namespace {

using render::Grid;
using render::make_grid;


template <typename Fn>
void dispatch(const at::Tensor& density, const at::Tensor& features, int64_t mode, Fn&& fn) {
  auto with_walker = [&](auto t_tag, auto f_tag) {
    using T = decltype(t_tag);
    if (mode == render::kVoxel) fn(t_tag, f_tag, render::VoxelWalker<T>{});
    else fn(t_tag, f_tag, render::TrilinearWalker<T>{});
  };
  if (density.scalar_type() == at::kDouble) return with_walker(double{}, double{});
  switch (features.scalar_type()) {
    case at::kHalf: return with_walker(float{}, at::Half{});
    case at::kBFloat16: return with_walker(float{}, at::BFloat16{});
    default: return with_walker(float{}, float{});
  }
}

std::vector<at::Tensor> forward(at::Tensor density, at::Tensor features, at::Tensor origins, at::Tensor directions,
                                at::Tensor batch_index, at::Tensor near, at::Tensor far, std::vector<double> lo,
                                std::vector<double> vs, std::vector<double> hi, int64_t mode, double step, double thr) {
  render::check_inputs("render_cuda", at::kCUDA, true, density, features, origins, directions, batch_index, near, far);
  TORCH_CHECK(features.size(4) <= 256, "render_cuda: at most 256 feature channels");
  const c10::cuda::CUDAGuard guard(density.device());
  const int64_t R = origins.size(0), C = features.size(4);
  auto depth = at::empty({R}, density.options());
  auto opacity = at::empty({R}, density.options());
  auto feats = at::empty({R, C}, density.options());  // accumulation dtype; the caller casts
  auto trans = at::empty({R}, density.options());
  auto flags = at::zeros({1}, density.options().dtype(at::kInt));  // BadInput bits
  if (R == 0) return {depth, opacity, feats, trans, flags};
  dispatch(density, features, mode, [&](auto t_tag, auto f_tag, auto w_tag) {
    using T = decltype(t_tag);
    render_cuda::launch_forward<T, decltype(f_tag), decltype(w_tag)>(
        make_grid<T>(lo, vs, hi, density), density, features, origins, directions, batch_index, near, far, step, thr,
        depth, opacity, feats, trans, flags);
  });
  return {depth, opacity, feats, trans, flags};
}

std::vector<at::Tensor> backward(at::Tensor density, at::Tensor features, at::Tensor origins, at::Tensor directions,
                                 at::Tensor batch_index, at::Tensor near, at::Tensor far, std::vector<double> lo,
                                 std::vector<double> vs, std::vector<double> hi, int64_t mode, double step, double thr,
                                 at::Tensor depth, at::Tensor opacity, at::Tensor feats, at::Tensor trans,
                                 at::Tensor g_depth, at::Tensor g_opacity, at::Tensor g_feats, at::Tensor g_trans) {
  render::check_inputs("render_cuda", at::kCUDA, true, density, features, origins, directions, batch_index, near, far);
  TORCH_CHECK(features.size(4) <= 256, "render_cuda: at most 256 feature channels");
  render::check_saved("render_cuda", density, {&depth, &opacity, &feats, &trans, &g_depth, &g_opacity, &g_feats, &g_trans});
  const c10::cuda::CUDAGuard guard(density.device());
  auto grad_density = at::zeros_like(density);
  // float32 (or float64) accumulation for every feature dtype; cast once at the end
  auto grad_features = at::zeros(features.sizes(), density.options());
  if (origins.size(0) > 0) {
    dispatch(density, features, mode, [&](auto t_tag, auto f_tag, auto w_tag) {
      using T = decltype(t_tag);
      render_cuda::launch_backward<T, decltype(f_tag), decltype(w_tag)>(
          make_grid<T>(lo, vs, hi, density), density, features, origins, directions, batch_index, near, far, step,
          thr, depth, opacity, feats, trans, g_depth, g_opacity, g_feats, g_trans, grad_density, grad_features);
    });
  }
  return {grad_density, grad_features.to(features.scalar_type())};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "render rays, forward (CUDA)");
  m.def("backward", &backward, "render rays, backward (CUDA)");
}
