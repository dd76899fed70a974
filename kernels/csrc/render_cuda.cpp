// Bindings of the CUDA render backend: checks, dtype / mode dispatch to the launchers compiled in
// the render_cuda_*.cu files, output allocation on the inputs' device and current stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "render_core.h"
#include "render_cuda_launch.h"

namespace {

using render::Grid;

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

void check_inputs(const at::Tensor& density, const at::Tensor& features, const at::Tensor& origins,
                  const at::Tensor& directions, const at::Tensor& batch_index, const at::Tensor& near,
                  const at::Tensor& far) {
  for (const at::Tensor* t : {&density, &features, &origins, &directions, &batch_index, &near, &far}) {
    TORCH_CHECK(t->is_cuda(), "render_cuda: every input must be a CUDA tensor");
    TORCH_CHECK(t->device() == density.device(), "render_cuda: every input must be on the density's device");
    TORCH_CHECK(t->is_contiguous(), "render_cuda: every input must be contiguous");
  }
  TORCH_CHECK(density.dim() == 4, "render_cuda: density must be (B, X, Y, Z)");
  TORCH_CHECK(features.dim() == 5 && features.sizes().slice(0, 4) == density.sizes(),
              "render_cuda: features must be (B, X, Y, Z, C) matching density");
  const auto st = density.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, "render_cuda: density must be float32 or float64");
  const auto ft = features.scalar_type();
  TORCH_CHECK(ft == st || (st == at::kFloat && (ft == at::kHalf || ft == at::kBFloat16)),
              "render_cuda: features must have the density's dtype, or be float16 / bfloat16 with float32 density");
  TORCH_CHECK(origins.scalar_type() == st && directions.scalar_type() == st && near.scalar_type() == st &&
                  far.scalar_type() == st,
              "render_cuda: rays must have the density's dtype");
  TORCH_CHECK(batch_index.scalar_type() == at::kLong, "render_cuda: batch_index must be int64");
  const int64_t R = origins.size(0);
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && directions.sizes() == origins.sizes(),
              "render_cuda: origins and directions must be (n_rays, 3)");
  TORCH_CHECK(batch_index.numel() == R && near.numel() == R && far.numel() == R,
              "render_cuda: batch_index, near and far must have n_rays elements");
  TORCH_CHECK(features.size(4) <= 256, "render_cuda: at most 256 feature channels");
}

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
  check_inputs(density, features, origins, directions, batch_index, near, far);
  const at::cuda::CUDAGuard guard(density.device());
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
  check_inputs(density, features, origins, directions, batch_index, near, far);
  for (const at::Tensor* t : {&depth, &opacity, &feats, &trans, &g_depth, &g_opacity, &g_feats, &g_trans}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == density.scalar_type(),
                "render_cuda backward: outputs and their gradients must be contiguous CUDA tensors of the density's dtype");
  }
  const at::cuda::CUDAGuard guard(density.device());
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
