// Geometry and quadrature shared by the C++ (CPU) and CUDA backends of the render op.
// The semantics are defined by kernels/reference.py; every formula here mirrors it.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#ifdef __CUDACC__
#define RENDER_HD __host__ __device__ __forceinline__
#else
#define RENDER_HD inline
#endif

namespace render {

// float overloads on the host too (the C library's are double-only); CUDA declares them for devices
using std::exp;
using std::expm1;
using std::fabs;
using std::floor;
using std::isfinite;
using std::isnan;
using std::sqrt;

enum Mode : int { kVoxel = 0, kTrilinear = 1 };

// One segment of a ray: start, length, and the voxels its values are read from (NTAPS = 1 in voxel
// mode, weight 1; 8 trilinear corners otherwise). Linear indices are x-major, as an (X, Y, Z) array.
template <typename T, int NTAPS>
struct Segment {
  T t0, delta;
  int64_t idx[NTAPS];
  T w[NTAPS];
};

template <typename T>
struct Grid {
  T lo[3];
  T vs[3];
  T hi[3];
  int n[3];
};

// g(x) = (1 - e^-x (1 + x)) / x: a segment's depth moment over its length (reference: depth_moment).
template <typename T>
RENDER_HD T depth_moment(T x) {
  if (x < T(0.1)) {
    return x * (T(1) / 2 - x * (T(1) / 3 - x * (T(1) / 8 - x * (T(1) / 30 - x * (T(1) / 144 - x * (T(1) / 840 - x / 5760))))));
  }
  return (-expm1(-x) - x * exp(-x)) / x;
}

// g'(x) = (e^-x (1 + x + x^2) - 1) / x^2.
template <typename T>
RENDER_HD T depth_moment_grad(T x) {
  if (x < T(0.1)) {
    return T(1) / 2 - x * (T(2) / 3 - x * (T(3) / 8 - x * (T(2) / 15 - x * (T(5) / 144 - x * (T(1) / 140 - x * (T(7) / 5760 - x / 5670))))));
  }
  return (expm1(-x) + exp(-x) * (x + x * x)) / (x * x);
}

// Bad-input bits that the kernels report per call (the Python wrapper turns them into messages).
enum BadInput : int {
  kBadOrigin = 1,       // non-finite origin
  kBadDirection = 2,    // non-finite direction
  kNotUnit = 4,         // | |d| - 1 | > 1e-3
  kBadRange = 8,        // non-finite near, or NaN far
  kFarBeforeNear = 16,  // far < near
  kBadBatch = 32,       // batch index outside [0, B)
  kBadDensity = 64,     // a ray read a negative or NaN density
};

// Checks one ray's inputs; 0 when it may be rendered. A bad ray is not walked (its batch index or
// coordinates may point anywhere), its outputs are zeros and the call fails in Python.
template <typename T>
RENDER_HD int check_ray(const T o[3], const T d[3], T near, T far, int64_t b, int64_t batch) {
  int bad = 0;
  if (!(isfinite(o[0]) && isfinite(o[1]) && isfinite(o[2]))) bad |= kBadOrigin;
  if (!(isfinite(d[0]) && isfinite(d[1]) && isfinite(d[2]))) bad |= kBadDirection;
  else {
    const T n = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    if (!(fabs(n - T(1)) <= T(1e-3))) bad |= kNotUnit;
  }
  if (!isfinite(near) || isnan(far)) bad |= kBadRange;
  else if (far < near) bad |= kFarBeforeNear;
  if (b < 0 || b >= batch) bad |= kBadBatch;
  return bad;
}

// [t_start, t_end] of a ray inside both [near, far] and the grid box; t_end == t_start when empty.
template <typename T>
RENDER_HD void ray_interval(const Grid<T>& g, const T o[3], const T d[3], T near, T far, T& t_start, T& t_end) {
  const T inf = std::numeric_limits<T>::infinity();
  T t_in = -inf, t_out = inf;
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    T lo, hi;
    if (d[a] == T(0)) {
      const bool inside = o[a] >= g.lo[a] && o[a] <= g.hi[a];
      lo = inside ? -inf : inf;
      hi = inside ? inf : -inf;
    } else {
      const T inv = T(1) / d[a];
      const T t0 = (g.lo[a] - o[a]) * inv, t1 = (g.hi[a] - o[a]) * inv;
      lo = t0 < t1 ? t0 : t1;
      hi = t0 < t1 ? t1 : t0;
    }
    t_in = lo > t_in ? lo : t_in;
    t_out = hi < t_out ? hi : t_out;
  }
  if (!(t_in <= t_out)) {  // the ray misses the box
    t_start = t_end = near;
    return;
  }
  t_start = near > t_in ? near : t_in;
  T e = far < t_out ? far : t_out;
  t_end = e > t_start ? e : t_start;
}

// Exact traversal (Amanatides-Woo): one segment per voxel crossed. Each crossing distance is
// computed from its plane, (lo + k * vs - o) / d, as the reference does, never accumulated.
// Axes are indexed with compile-time constants only, so the walker's arrays live in registers.
template <typename T>
struct VoxelWalker {
  static constexpr int kTaps = 1;
  Grid<T> g;
  T o[3], d[3];
  T t, t_end;
  int idx[3];
  int step[3];
  T t_next[3];

  template <int A>
  RENDER_HD T plane_t() const {
    const int k = step[A] > 0 ? idx[A] + 1 : idx[A];
    return (g.lo[A] + T(k) * g.vs[A] - o[A]) / d[A];
  }

  template <int A>
  RENDER_HD void init_axis(T t_start) {
    const T p = (o[A] + t_start * d[A] - g.lo[A]) / g.vs[A];
    const int i = static_cast<int>(floor(p));
    idx[A] = i < 0 ? 0 : (i > g.n[A] - 1 ? g.n[A] - 1 : i);
    step[A] = d[A] > T(0) ? 1 : (d[A] < T(0) ? -1 : 0);
    t_next[A] = step[A] == 0 ? std::numeric_limits<T>::infinity() : plane_t<A>();
  }

  template <int A>
  RENDER_HD void advance() {
    idx[A] += step[A];
    t_next[A] = plane_t<A>();
  }

  RENDER_HD void init(const Grid<T>& grid, const T* o_, const T* d_, T t_start, T t_end_, T /*step*/) {
    g = grid;
    t = t_start;
    t_end = t_end_;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      o[a] = o_[a];
      d[a] = d_[a];
    }
    init_axis<0>(t_start);
    init_axis<1>(t_start);
    init_axis<2>(t_start);
  }

  RENDER_HD bool next(Segment<T, 1>& seg) {
    if (!(t < t_end)) return false;
    if (idx[0] < 0 || idx[0] >= g.n[0] || idx[1] < 0 || idx[1] >= g.n[1] || idx[2] < 0 || idx[2] >= g.n[2])
      return false;  // rounding let the walk leave the box a hair before t_end
    const int a = (t_next[0] <= t_next[1]) ? (t_next[0] <= t_next[2] ? 0 : 2) : (t_next[1] <= t_next[2] ? 1 : 2);
    const T tn = a == 0 ? t_next[0] : (a == 1 ? t_next[1] : t_next[2]);
    T t1 = tn < t_end ? tn : t_end;
    if (t1 < t) t1 = t;  // a crossing rounded to just before t: a zero-length segment
    seg.t0 = t;
    seg.delta = t1 - t;
    seg.idx[0] = (int64_t(idx[0]) * g.n[1] + idx[1]) * g.n[2] + idx[2];
    seg.w[0] = T(1);
    t = t1;
    if (tn <= t1) {  // reached the plane: step into the neighbour
      if (a == 0) advance<0>();
      else if (a == 1) advance<1>();
      else advance<2>();
    }
    return true;
  }
};

// Uniform steps from the entry point, the last cut at the exit; values trilinear at the midpoint
// between voxel centres, clamped at the border.
template <typename T>
struct TrilinearWalker {
  Grid<T> g;
  T o[3], d[3];
  T t_start, t_end, step_size;
  int64_t k, n;
  static constexpr int kTaps = 8;

  RENDER_HD void init(const Grid<T>& grid, const T* o_, const T* d_, T ts, T te, T step) {
    g = grid;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      o[a] = o_[a];
      d[a] = d_[a];
    }
    t_start = ts;
    t_end = te;
    step_size = step;
    k = 0;
    n = static_cast<int64_t>(ceil((te - ts) / step));
  }

  RENDER_HD bool next(Segment<T, 8>& seg) {
    if (k >= n) return false;
    const T t0 = t_start + T(k) * step_size;
    const T rest = t_end - t0;
    const T delta = rest < T(0) ? T(0) : (rest > step_size ? step_size : rest);
    seg.t0 = t0;
    seg.delta = delta;
    ++k;
    const T tm = t0 + T(0.5) * delta;
    int lo[3];
    T fr[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const T p = o[a] + tm * d[a];
      T c = (p - g.lo[a]) / g.vs[a] - T(0.5);
      const T top = T(g.n[a] - 1);
      c = c < T(0) ? T(0) : (c > top ? top : c);
      T i0 = floor(c);
      const T cap = T(g.n[a] > 1 ? g.n[a] - 2 : 0);
      i0 = i0 > cap ? cap : i0;
      lo[a] = static_cast<int>(i0);
      fr[a] = c - i0;
    }
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      int id[3];
      T w = T(1);
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const int up = (c >> a) & 1;
        w *= up ? fr[a] : T(1) - fr[a];
        const int i = lo[a] + up;
        id[a] = i > g.n[a] - 1 ? g.n[a] - 1 : i;
      }
      seg.w[c] = w;
      seg.idx[c] = (int64_t(id[0]) * g.n[1] + id[1]) * g.n[2] + id[2];
    }
    return true;
  }
};

}  // namespace render
