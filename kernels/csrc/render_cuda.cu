// CUDA backend of the render op. A group of G consecutive lanes renders one ray: every lane walks
// the same segments (render_core.h; the walk is cheap arithmetic), density reads are broadcasts,
// and lane l owns feature channels l, l + G, ... so feature reads and gradient scatters are
// coalesced across the group. Forward keeps the composited features in registers; backward walks
// the ray again (nothing per-sample is stored) and scatters gradients with atomics.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "render_core.h"

namespace {

using render::Grid;
using render::Segment;

template <int G>
__device__ __forceinline__ unsigned group_mask() {
  if constexpr (G == 32) {
    return 0xffffffffu;
  } else {
    return ((1u << G) - 1u) << ((threadIdx.x & 31) & ~(G - 1));
  }
}

template <int G, typename T>
__device__ __forceinline__ T group_sum(T v) {
  const unsigned mask = group_mask<G>();
#pragma unroll
  for (int off = G / 2; off > 0; off >>= 1) v += __shfl_xor_sync(mask, v, off, G);
  return v;
}

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

// T: density, geometry and accumulation type (float or double); F: feature storage type.
template <typename T, typename F, int G, int SLOTS, typename Walker>
__global__ void __launch_bounds__(256) forward_kernel(
    const Grid<T> g, const T* __restrict__ density, const F* __restrict__ features, const T* __restrict__ origins,
    const T* __restrict__ directions, const int64_t* __restrict__ batch_index, const T* __restrict__ near,
    const T* __restrict__ far, int64_t R, int C, T step, T thr, T* __restrict__ out_depth, T* __restrict__ out_opacity,
    T* __restrict__ out_features, T* __restrict__ out_trans) {
  constexpr int NT = Walker::kTaps;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  if (r >= R) return;  // whole groups leave together: G divides the block and the warp
  const int64_t V = int64_t(g.n[0]) * g.n[1] * g.n[2];
  const T* dens = density + batch_index[r] * V;
  const F* feat = features + batch_index[r] * V * C;
  T o[3] = {origins[3 * r], origins[3 * r + 1], origins[3 * r + 2]};
  T d[3] = {directions[3 * r], directions[3 * r + 1], directions[3 * r + 2]};
  T ts, te;
  render::ray_interval(g, o, d, near[r], far[r], ts, te);
  Walker walker;
  walker.init(g, o, d, ts, te, step);
  Segment<T, NT> seg;
  T acc[SLOTS];
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) acc[j] = T(0);
  T tau = 0, depth = 0, opacity = 0;
  while (walker.next(seg)) {
    const T Tc = exp(-tau);
    if (Tc < thr) break;
    T sigma = 0;
#pragma unroll
    for (int k = 0; k < NT; ++k) sigma += seg.w[k] * dens[seg.idx[k]];
    const T s = sigma * seg.delta;
    const T alpha = -expm1(-s);
    const T w = Tc * alpha;
    depth += Tc * (alpha * seg.t0 + seg.delta * render::depth_moment(s));
    opacity += w;
    if (w != T(0)) {  // empty space adds nothing: skip its feature reads
#pragma unroll
      for (int j = 0; j < SLOTS; ++j) {
        const int c = lane + j * G;
        if (c < C) {
          T fv = 0;
#pragma unroll
          for (int k = 0; k < NT; ++k) fv += seg.w[k] * T(static_cast<float>(feat[seg.idx[k] * C + c]));
          acc[j] += w * fv;
        }
      }
    }
    tau += s;
  }
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int c = lane + j * G;
    if (c < C) out_features[r * C + c] = acc[j];
  }
  if (lane == 0) {
    out_depth[r] = depth;
    out_opacity[r] = opacity;
    out_trans[r] = exp(-tau);
  }
}

template <typename T, typename F, int G, int SLOTS, typename Walker>
__global__ void __launch_bounds__(256) backward_kernel(
    const Grid<T> g, const T* __restrict__ density, const F* __restrict__ features, const T* __restrict__ origins,
    const T* __restrict__ directions, const int64_t* __restrict__ batch_index, const T* __restrict__ near,
    const T* __restrict__ far, int64_t R, int C, T step, T thr, const T* __restrict__ depth_out,
    const T* __restrict__ opacity_out, const T* __restrict__ feats_out, const T* __restrict__ trans_out,
    const T* __restrict__ g_depth, const T* __restrict__ g_opacity, const T* __restrict__ g_feats,
    const T* __restrict__ g_trans, T* __restrict__ grad_density, T* __restrict__ grad_features) {
  constexpr int NT = Walker::kTaps;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  if (r >= R) return;
  const int64_t V = int64_t(g.n[0]) * g.n[1] * g.n[2];
  const int64_t b = batch_index[r];
  const T* dens = density + b * V;
  const F* feat = features + b * V * C;
  T* gdens = grad_density + b * V;
  T* gfeat = grad_features + b * V * C;
  T gf[SLOTS];
  T partial = 0;
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int c = lane + j * G;
    gf[j] = c < C ? g_feats[r * C + c] : T(0);
    if (c < C) partial += gf[j] * feats_out[r * C + c];
  }
  const T gD = g_depth[r], gO = g_opacity[r], gT = g_trans[r], Tr = trans_out[r];
  // L = gD * depth + gO * opacity + gF . features: the total that later segments' T scales.
  const T total = gD * depth_out[r] + gO * opacity_out[r] + group_sum<G>(partial);
  T o[3] = {origins[3 * r], origins[3 * r + 1], origins[3 * r + 2]};
  T d[3] = {directions[3 * r], directions[3 * r + 1], directions[3 * r + 2]};
  T ts, te;
  render::ray_interval(g, o, d, near[r], far[r], ts, te);
  Walker walker;
  walker.init(g, o, d, ts, te, step);
  Segment<T, NT> seg;
  T tau = 0, prefix = 0;
  while (walker.next(seg)) {
    const T Tc = exp(-tau);
    if (Tc < thr) break;
    T sigma = 0;
#pragma unroll
    for (int k = 0; k < NT; ++k) sigma += seg.w[k] * dens[seg.idx[k]];
    const T delta = seg.delta;
    const T s = sigma * delta;
    const T e = exp(-s);
    const T alpha = -expm1(-s);
    T dot = 0;
#pragma unroll
    for (int j = 0; j < SLOTS; ++j) {
      const int c = lane + j * G;
      if (c < C) {
        T fv = 0;
#pragma unroll
        for (int k = 0; k < NT; ++k) fv += seg.w[k] * T(static_cast<float>(feat[seg.idx[k] * C + c]));
        dot += gf[j] * fv;
      }
    }
    const T gf_dot = group_sum<G>(dot);
    const T h = gD * (alpha * seg.t0 + delta * render::depth_moment(s)) + (gO + gf_dot) * alpha;
    prefix += Tc * h;
    const T dalpha = delta * e;
    const T dh = gD * (seg.t0 * dalpha + delta * delta * render::depth_moment_grad(s)) + (gO + gf_dot) * dalpha;
    const T g_sigma = Tc * dh - delta * (total - prefix) - gT * delta * Tr;
    const T w = Tc * alpha;
#pragma unroll
    for (int k = 0; k < NT; ++k) {
      if (seg.w[k] == T(0)) continue;
      if (lane == 0 && g_sigma != T(0)) atomicAdd(gdens + seg.idx[k], g_sigma * seg.w[k]);
      if (w != T(0)) {
        const T wk = w * seg.w[k];
#pragma unroll
        for (int j = 0; j < SLOTS; ++j) {
          const int c = lane + j * G;
          if (c < C) atomicAdd(gfeat + seg.idx[k] * C + c, wk * gf[j]);
        }
      }
    }
    tau += s;
  }
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

// Calls fn(G, SLOTS) as compile-time constants chosen from the channel count C.
template <typename Fn>
void dispatch_channels(int64_t C, Fn&& fn) {
  if (C <= 8) fn(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{});
  else if (C <= 16) fn(std::integral_constant<int, 8>{}, std::integral_constant<int, 2>{});
  else if (C <= 24) fn(std::integral_constant<int, 8>{}, std::integral_constant<int, 3>{});
  else if (C <= 32) fn(std::integral_constant<int, 8>{}, std::integral_constant<int, 4>{});
  else if (C <= 64) fn(std::integral_constant<int, 8>{}, std::integral_constant<int, 8>{});
  else fn(std::integral_constant<int, 32>{}, std::integral_constant<int, 8>{});
}

template <typename Fn>
void dispatch_types(const at::Tensor& density, const at::Tensor& features, Fn&& fn) {
  if (density.scalar_type() == at::kDouble) return fn(double{}, double{});
  switch (features.scalar_type()) {
    case at::kHalf: return fn(float{}, at::Half{});
    case at::kBFloat16: return fn(float{}, at::BFloat16{});
    default: return fn(float{}, float{});
  }
}

constexpr int kBlock = 256;

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
  if (R == 0) return {depth, opacity, feats, trans};
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_types(density, features, [&](auto t_tag, auto f_tag) {
    using T = decltype(t_tag);
    using F = decltype(f_tag);
    const auto g = make_grid<T>(lo, vs, hi, density);
    dispatch_channels(C, [&](auto G_, auto S_) {
      constexpr int G = decltype(G_)::value, S = decltype(S_)::value;
      const int64_t blocks = (R * G + kBlock - 1) / kBlock;
      auto launch = [&](auto walker_tag) {
        using W = decltype(walker_tag);
        forward_kernel<T, F, G, S, W><<<blocks, kBlock, 0, stream>>>(
            g, density.data_ptr<T>(), features.data_ptr<F>(), origins.data_ptr<T>(), directions.data_ptr<T>(),
            batch_index.data_ptr<int64_t>(), near.data_ptr<T>(), far.data_ptr<T>(), R, int(C), T(step), T(thr),
            depth.data_ptr<T>(), opacity.data_ptr<T>(), feats.data_ptr<T>(), trans.data_ptr<T>());
      };
      if (mode == render::kVoxel) launch(render::VoxelWalker<T>{});
      else launch(render::TrilinearWalker<T>{});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {depth, opacity, feats, trans};
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
  const int64_t R = origins.size(0), C = features.size(4);
  auto grad_density = at::zeros_like(density);
  // float32 (or float64) accumulation for every feature dtype; cast once at the end
  auto grad_features = at::zeros(features.sizes(), density.options());
  if (R > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    dispatch_types(density, features, [&](auto t_tag, auto f_tag) {
      using T = decltype(t_tag);
      using F = decltype(f_tag);
      const auto g = make_grid<T>(lo, vs, hi, density);
      dispatch_channels(C, [&](auto G_, auto S_) {
        constexpr int G = decltype(G_)::value, S = decltype(S_)::value;
        const int64_t blocks = (R * G + kBlock - 1) / kBlock;
        auto launch = [&](auto walker_tag) {
          using W = decltype(walker_tag);
          backward_kernel<T, F, G, S, W><<<blocks, kBlock, 0, stream>>>(
              g, density.data_ptr<T>(), features.data_ptr<F>(), origins.data_ptr<T>(), directions.data_ptr<T>(),
              batch_index.data_ptr<int64_t>(), near.data_ptr<T>(), far.data_ptr<T>(), R, int(C), T(step), T(thr),
              depth.data_ptr<T>(), opacity.data_ptr<T>(), feats.data_ptr<T>(), trans.data_ptr<T>(),
              g_depth.data_ptr<T>(), g_opacity.data_ptr<T>(), g_feats.data_ptr<T>(), g_trans.data_ptr<T>(),
              grad_density.data_ptr<T>(), grad_features.data_ptr<T>());
        };
        if (mode == render::kVoxel) launch(render::VoxelWalker<T>{});
        else launch(render::TrilinearWalker<T>{});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return {grad_density, grad_features.to(features.scalar_type())};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "render rays, forward (CUDA)");
  m.def("backward", &backward, "render rays, backward (CUDA)");
}
