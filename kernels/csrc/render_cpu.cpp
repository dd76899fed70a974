// C++ CPU backend of the render op: one ray per loop iteration, rays spread over threads with
// at::parallel_for. Forward and backward walk the same segments (render_core.h); backward
// recomputes along the ray instead of storing per-sample values.
// Only the headers the module uses, not torch/extension.h (the whole C++ frontend): a build took 46-49 s with it
// and 23-27 s without, on one core of the 2-core CPU (BENCHMARKS.md, "Building the C++ backends").
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "render_bindings.h"
#include "render_core.h"

namespace {

using render::Grid;
using render::make_grid;
using render::Segment;

// Lock-free float / double add: grids are shared by many rays, so gradient scatters race.
template <typename T>
inline void atomic_add(T* addr, T value) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* bits = reinterpret_cast<Bits*>(addr);
  Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
  while (true) {
    T current;
    std::memcpy(&current, &expected, sizeof(T));
    const T updated = current + value;
    Bits desired;
    std::memcpy(&desired, &updated, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &expected, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  }
}


template <typename T, typename Walker>
void forward_rays(const Grid<T>& g, const T* density, const T* features, const T* origins, const T* directions,
                  const int64_t* batch_index, const T* near, const T* far, int64_t R, int64_t C, int64_t B, T step,
                  T thr, T* out_depth, T* out_opacity, T* out_features, T* out_trans, int32_t* flags) {
  constexpr int NT = Walker::kTaps;
  const int64_t V = int64_t(g.n[0]) * g.n[1] * g.n[2];
  at::parallel_for(0, R, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> f(C);
    for (int64_t r = begin; r < end; ++r) {
      T* fo = out_features + r * C;
      std::fill(fo, fo + C, T(0));
      const int bad = render::check_ray(origins + 3 * r, directions + 3 * r, near[r], far[r], batch_index[r], B);
      if (bad) {
        __atomic_fetch_or(flags, bad, __ATOMIC_RELAXED);
        out_depth[r] = out_opacity[r] = T(0);
        out_trans[r] = T(1);
        continue;
      }
      const T* dens = density + batch_index[r] * V;
      const T* feat = features + batch_index[r] * V * C;
      bool bad_density = false;
      T ts, te;
      render::ray_interval(g, origins + 3 * r, directions + 3 * r, near[r], far[r], ts, te);
      Walker walker;
      walker.init(g, origins + 3 * r, directions + 3 * r, ts, te, step);
      Segment<T, NT> seg;
      T tau = 0, depth = 0, opacity = 0;
      while (walker.next(seg)) {
        const T Tc = std::exp(-tau);
        if (Tc < thr) break;
        T sigma = 0;
        for (int k = 0; k < NT; ++k) {
          const T v = dens[seg.idx[k]];
          bad_density |= !(v >= T(0));
          sigma += seg.w[k] * v;
        }
        const T s = sigma * seg.delta;
        const T alpha = -std::expm1(-s);
        const T w = Tc * alpha;
        depth += Tc * (alpha * seg.t0 + seg.delta * render::depth_moment(s));
        opacity += w;
        if (w != T(0)) {  // empty space adds nothing: skip its feature reads
          std::fill(f.begin(), f.end(), T(0));
          for (int k = 0; k < NT; ++k) {
            const T* fk = feat + seg.idx[k] * C;
            for (int64_t c = 0; c < C; ++c) f[c] += seg.w[k] * fk[c];
          }
          for (int64_t c = 0; c < C; ++c) fo[c] += w * f[c];
        }
        tau += s;
      }
      if (bad_density) __atomic_fetch_or(flags, int(render::kBadDensity), __ATOMIC_RELAXED);
      out_depth[r] = depth;
      out_opacity[r] = opacity;
      out_trans[r] = std::exp(-tau);
    }
  });
}

// Gradient scatter: atomics when threads share one gradient buffer, plain adds into a private one.
template <bool kAtomic, typename T>
inline void scatter_add(T* addr, T value) {
  if constexpr (kAtomic) atomic_add(addr, value);
  else *addr += value;
}

template <typename T, typename Walker, bool kAtomic>
void backward_rays(const Grid<T>& g, const T* density, const T* features, const T* origins, const T* directions,
                   const int64_t* batch_index, const T* near, const T* far, int64_t R, int64_t C, T step, T thr,
                   const T* depth, const T* opacity, const T* feats, const T* trans, const T* g_depth,
                   const T* g_opacity, const T* g_feats, const T* g_trans, T* grad_density, T* grad_features,
                   int64_t thread_stride_density, int64_t thread_stride_features) {
  constexpr int NT = Walker::kTaps;
  const int64_t V = int64_t(g.n[0]) * g.n[1] * g.n[2];
  at::parallel_for(0, R, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> f(C);
    // private buffers (strides > 0): this thread's slice; shared ones (strides 0): atomics
    const int tid = at::get_thread_num();
    T* grad_density_t = grad_density + tid * thread_stride_density;
    T* grad_features_t = grad_features + tid * thread_stride_features;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = batch_index[r];
      const T* dens = density + b * V;
      const T* feat = features + b * V * C;
      T* gdens = grad_density_t + b * V;
      T* gfeat = grad_features_t + b * V * C;
      const T* gF = g_feats + r * C;
      const T gD = g_depth[r], gO = g_opacity[r], gT = g_trans[r], Tr = trans[r];
      // L = gD * depth + gO * opacity + gF . features: the total that later segments' T scales.
      T total = gD * depth[r] + gO * opacity[r];
      for (int64_t c = 0; c < C; ++c) total += gF[c] * feats[r * C + c];
      T ts, te;
      render::ray_interval(g, origins + 3 * r, directions + 3 * r, near[r], far[r], ts, te);
      Walker walker;
      walker.init(g, origins + 3 * r, directions + 3 * r, ts, te, step);
      Segment<T, NT> seg;
      T tau = 0, prefix = 0;
      while (walker.next(seg)) {
        const T Tc = std::exp(-tau);
        if (Tc < thr) break;
        T sigma = 0;
        for (int k = 0; k < NT; ++k) sigma += seg.w[k] * dens[seg.idx[k]];
        const T delta = seg.delta;
        const T s = sigma * delta;
        const T e = std::exp(-s);
        const T alpha = -std::expm1(-s);
        std::fill(f.begin(), f.end(), T(0));
        for (int k = 0; k < NT; ++k) {
          const T* fk = feat + seg.idx[k] * C;
          for (int64_t c = 0; c < C; ++c) f[c] += seg.w[k] * fk[c];
        }
        T gf_dot = 0;
        for (int64_t c = 0; c < C; ++c) gf_dot += gF[c] * f[c];
        const T h = gD * (alpha * seg.t0 + delta * render::depth_moment(s)) + (gO + gf_dot) * alpha;
        prefix += Tc * h;
        const T dalpha = delta * e;
        const T dh = gD * (seg.t0 * dalpha + delta * delta * render::depth_moment_grad(s)) + (gO + gf_dot) * dalpha;
        const T g_sigma = Tc * dh - delta * (total - prefix) - gT * delta * Tr;
        const T w = Tc * alpha;
        for (int k = 0; k < NT; ++k) {
          if (seg.w[k] == T(0)) continue;
          scatter_add<kAtomic>(gdens + seg.idx[k], g_sigma * seg.w[k]);
          if (w != T(0)) {
            T* gk = gfeat + seg.idx[k] * C;
            const T wk = w * seg.w[k];
            for (int64_t c = 0; c < C; ++c) scatter_add<kAtomic>(gk + c, wk * gF[c]);
          }
        }
        tau += s;
      }
    }
  });
}

std::vector<at::Tensor> forward(at::Tensor density, at::Tensor features, at::Tensor origins, at::Tensor directions,
                                at::Tensor batch_index, at::Tensor near, at::Tensor far, std::vector<double> lo,
                                std::vector<double> vs, std::vector<double> hi, int64_t mode, double step, double thr) {
  render::check_inputs("render_cpu", at::kCPU, false, density, features, origins, directions, batch_index, near, far);
  const int64_t R = origins.size(0), C = features.size(4);
  auto depth = at::empty({R}, density.options());
  auto opacity = at::empty({R}, density.options());
  auto feats = at::empty({R, C}, density.options());
  auto trans = at::empty({R}, density.options());
  auto flags = at::zeros({1}, density.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "render_cpu_forward", [&] {
    const auto g = make_grid<scalar_t>(lo, vs, hi, density);
    auto run = [&](auto walker_tag) {
      using Walker = decltype(walker_tag);
      forward_rays<scalar_t, Walker>(g, density.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(),
                                     origins.data_ptr<scalar_t>(), directions.data_ptr<scalar_t>(),
                                     batch_index.data_ptr<int64_t>(), near.data_ptr<scalar_t>(), far.data_ptr<scalar_t>(),
                                     R, C, density.size(0), scalar_t(step), scalar_t(thr), depth.data_ptr<scalar_t>(),
                                     opacity.data_ptr<scalar_t>(), feats.data_ptr<scalar_t>(), trans.data_ptr<scalar_t>(),
                                     flags.data_ptr<int32_t>());
    };
    if (mode == render::kVoxel) run(render::VoxelWalker<scalar_t>{});
    else run(render::TrilinearWalker<scalar_t>{});
  });
  return {depth, opacity, feats, trans, flags};
}

std::vector<at::Tensor> backward(at::Tensor density, at::Tensor features, at::Tensor origins, at::Tensor directions,
                                 at::Tensor batch_index, at::Tensor near, at::Tensor far, std::vector<double> lo,
                                 std::vector<double> vs, std::vector<double> hi, int64_t mode, double step, double thr,
                                 at::Tensor depth, at::Tensor opacity, at::Tensor feats, at::Tensor trans,
                                 at::Tensor g_depth, at::Tensor g_opacity, at::Tensor g_feats, at::Tensor g_trans) {
  render::check_inputs("render_cpu", at::kCPU, false, density, features, origins, directions, batch_index, near, far);
  render::check_saved("render_cpu", density, {&depth, &opacity, &feats, &trans, &g_depth, &g_opacity, &g_feats, &g_trans});
  const int64_t R = origins.size(0), C = features.size(4);
  // Per-thread private gradient buffers (summed at the end) avoid compare-and-swap atomics, which
  // dominate the backward otherwise; used while they stay small, as for the CPU-sized grids.
  const int64_t threads = at::get_num_threads();
  const bool private_buffers = threads > 1 && threads * features.numel() * features.element_size() <= (64 << 20);
  const int64_t copies = private_buffers ? threads : 1;
  auto grad_density_buf = at::zeros({copies, density.numel()}, density.options());
  auto grad_features_buf = at::zeros({copies, features.numel()}, features.options());
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "render_cpu_backward", [&] {
    const auto g = make_grid<scalar_t>(lo, vs, hi, density);
    auto run = [&](auto walker_tag, auto atomic_tag) {
      using Walker = decltype(walker_tag);
      backward_rays<scalar_t, Walker, decltype(atomic_tag)::value>(
          g, density.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(), origins.data_ptr<scalar_t>(),
          directions.data_ptr<scalar_t>(), batch_index.data_ptr<int64_t>(), near.data_ptr<scalar_t>(),
          far.data_ptr<scalar_t>(), R, C, scalar_t(step), scalar_t(thr), depth.data_ptr<scalar_t>(),
          opacity.data_ptr<scalar_t>(), feats.data_ptr<scalar_t>(), trans.data_ptr<scalar_t>(),
          g_depth.data_ptr<scalar_t>(), g_opacity.data_ptr<scalar_t>(), g_feats.data_ptr<scalar_t>(),
          g_trans.data_ptr<scalar_t>(), grad_density_buf.data_ptr<scalar_t>(), grad_features_buf.data_ptr<scalar_t>(),
          private_buffers ? density.numel() : 0, private_buffers ? features.numel() : 0);
    };
    auto run_mode = [&](auto atomic_tag) {
      if (mode == render::kVoxel) run(render::VoxelWalker<scalar_t>{}, atomic_tag);
      else run(render::TrilinearWalker<scalar_t>{}, atomic_tag);
    };
    if (private_buffers) run_mode(std::false_type{});
    else run_mode(std::true_type{});
  });
  auto grad_density = grad_density_buf.sum(0).view(density.sizes());
  auto grad_features = grad_features_buf.sum(0).view(features.sizes());
  return {grad_density, grad_features};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "render rays, forward (CPU)");
  m.def("backward", &backward, "render rays, backward (CPU)");
}
