// CUDA kernels of the render op, included by one .cu file per (dtype, mode) so that the build runs
// in parallel. A group of G consecutive lanes renders one ray: every lane walks the same segments
// (render_core.h; the walk is cheap arithmetic), density reads are broadcasts, and lane l owns
// feature channels l, l + G, ... so feature reads and gradient scatters are coalesced across the
// group. Forward keeps the composited features in registers; backward walks the ray again (nothing
// per-sample is stored) and scatters gradients with atomics.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "render_core.h"
#include "render_cuda_launch.h"

#ifndef RENDER_LANES
#define RENDER_LANES 8  // lanes per ray; each lane owns ceil(C / RENDER_LANES) feature channels
#endif

namespace render_cuda {

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

// T: density, geometry and accumulation type (float or double); F: feature storage type.
template <typename T, typename F, int G, int SLOTS, typename Walker>
__global__ void __launch_bounds__(256) forward_kernel(
    const Grid<T> g, const T* __restrict__ density, const F* __restrict__ features, const T* __restrict__ origins,
    const T* __restrict__ directions, const int64_t* __restrict__ batch_index, const T* __restrict__ near,
    const T* __restrict__ far, int64_t R, int C, int64_t B, T step, T thr, T* __restrict__ out_depth,
    T* __restrict__ out_opacity, T* __restrict__ out_features, T* __restrict__ out_trans, int* __restrict__ flags) {
  constexpr int NT = Walker::kTaps;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  if (r >= R) return;  // whole groups leave together: G divides the block and the warp
  const int64_t V = int64_t(g.n[0]) * g.n[1] * g.n[2];
  T o[3] = {origins[3 * r], origins[3 * r + 1], origins[3 * r + 2]};
  T d[3] = {directions[3 * r], directions[3 * r + 1], directions[3 * r + 2]};
  const int bad = render::check_ray(o, d, near[r], far[r], batch_index[r], B);
  if (bad) {  // uniform across the group: every lane checked the same ray
    for (int c = lane; c < C; c += G) out_features[r * C + c] = T(0);
    if (lane == 0) {
      atomicOr(flags, bad);
      out_depth[r] = out_opacity[r] = T(0);
      out_trans[r] = T(1);
    }
    return;
  }
  const T* dens = density + batch_index[r] * V;
  const F* feat = features + batch_index[r] * V * C;
  bool bad_density = false;
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
    for (int k = 0; k < NT; ++k) {
      const T v = dens[seg.idx[k]];
      bad_density |= !(v >= T(0));
      sigma += seg.w[k] * v;
    }
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
    if (bad_density) atomicOr(flags, int(render::kBadDensity));
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


constexpr int kBlock = 256;

// Calls fn(G, SLOTS) with compile-time constants: G lanes per ray, SLOTS channels per lane.
template <typename Fn>
void dispatch_channels(int64_t C, Fn&& fn) {
  constexpr int G = RENDER_LANES;
  using std::integral_constant;
  if (C <= G) fn(integral_constant<int, G>{}, integral_constant<int, 1>{});
  else if (C <= 2 * G) fn(integral_constant<int, G>{}, integral_constant<int, 2>{});
  else if (C <= 3 * G) fn(integral_constant<int, G>{}, integral_constant<int, 3>{});
  else if (C <= 4 * G) fn(integral_constant<int, G>{}, integral_constant<int, 4>{});
  else if (C <= 6 * G) fn(integral_constant<int, G>{}, integral_constant<int, 6>{});
  else if (C <= 8 * G) fn(integral_constant<int, G>{}, integral_constant<int, 8>{});
  else fn(integral_constant<int, 32>{}, integral_constant<int, 8>{});  // up to 256 channels
}

template <typename T, typename F, typename Walker>
void launch_forward(const Grid<T>& g, const at::Tensor& density, const at::Tensor& features, const at::Tensor& origins,
                    const at::Tensor& directions, const at::Tensor& batch_index, const at::Tensor& near,
                    const at::Tensor& far, double step, double thr, at::Tensor& depth, at::Tensor& opacity,
                    at::Tensor& feats, at::Tensor& trans, at::Tensor& flags) {
  const int64_t R = origins.size(0), C = features.size(4);
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_channels(C, [&](auto G_, auto S_) {
    constexpr int G = decltype(G_)::value, S = decltype(S_)::value;
    const int64_t blocks = (R * G + kBlock - 1) / kBlock;
    forward_kernel<T, F, G, S, Walker><<<blocks, kBlock, 0, stream>>>(
        g, density.data_ptr<T>(), features.data_ptr<F>(), origins.data_ptr<T>(), directions.data_ptr<T>(),
        batch_index.data_ptr<int64_t>(), near.data_ptr<T>(), far.data_ptr<T>(), R, int(C), density.size(0), T(step),
        T(thr), depth.data_ptr<T>(), opacity.data_ptr<T>(), feats.data_ptr<T>(), trans.data_ptr<T>(),
        flags.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T, typename F, typename Walker>
void launch_backward(const Grid<T>& g, const at::Tensor& density, const at::Tensor& features, const at::Tensor& origins,
                     const at::Tensor& directions, const at::Tensor& batch_index, const at::Tensor& near,
                     const at::Tensor& far, double step, double thr, const at::Tensor& depth,
                     const at::Tensor& opacity, const at::Tensor& feats, const at::Tensor& trans,
                     const at::Tensor& g_depth, const at::Tensor& g_opacity, const at::Tensor& g_feats,
                     const at::Tensor& g_trans, at::Tensor& grad_density, at::Tensor& grad_features) {
  const int64_t R = origins.size(0), C = features.size(4);
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_channels(C, [&](auto G_, auto S_) {
    constexpr int G = decltype(G_)::value, S = decltype(S_)::value;
    const int64_t blocks = (R * G + kBlock - 1) / kBlock;
    backward_kernel<T, F, G, S, Walker><<<blocks, kBlock, 0, stream>>>(
        g, density.data_ptr<T>(), features.data_ptr<F>(), origins.data_ptr<T>(), directions.data_ptr<T>(),
        batch_index.data_ptr<int64_t>(), near.data_ptr<T>(), far.data_ptr<T>(), R, int(C), T(step), T(thr),
        depth.data_ptr<T>(), opacity.data_ptr<T>(), feats.data_ptr<T>(), trans.data_ptr<T>(),
        g_depth.data_ptr<T>(), g_opacity.data_ptr<T>(), g_feats.data_ptr<T>(), g_trans.data_ptr<T>(),
        grad_density.data_ptr<T>(), grad_features.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace render_cuda

// Explicit instantiation for one (T, F) pair and walker, used by the render_cuda_*.cu files.
#define RENDER_CUDA_INSTANTIATE(T, F, WALKER)                                                                   \
  template void render_cuda::launch_forward<T, F, WALKER<T>>(                                                  \
      const render::Grid<T>&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,      \
      const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, at::Tensor&, at::Tensor&,       \
      at::Tensor&, at::Tensor&, at::Tensor&);                                                                  \
  template void render_cuda::launch_backward<T, F, WALKER<T>>(                                                 \
      const render::Grid<T>&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,      \
      const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, const at::Tensor&,              \
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,           \
      const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
