// Exact voxel traversal (Amanatides-Woo) of one ray, marking every voxel it enters: the compiled twin of
// kernels/walk.py:ray_voxels_reference. Every operation is the reference's own float64 operation in the
// same order (no fused multiply-add: the sources build with contraction off), so the marked voxels are
// identical, ties between axes included (the first axis wins, as torch.argmin).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define WALK_HD __host__ __device__ __forceinline__
#else
#define WALK_HD inline
#endif

namespace walk {

struct Grid {
  double lo[3], hi[3], vs[3];
  int64_t n[3];
};

// Walks ray (o, d) from where it enters the grid until it leaves, passes t_max, or enters a voxel of
// `occupied` (that voxel included; occupied may be null). mark(linear voxel index) is called per voxel.
template <typename Mark>
WALK_HD void walk_ray(const Grid& g, const double o[3], const double d[3], double t_max, const uint8_t* occupied,
                      Mark mark) {
  const double inf = INFINITY;
  double t_in = -inf, t_out = inf;
  for (int a = 0; a < 3; ++a) {
    const bool inside = o[a] >= g.lo[a] && o[a] <= g.hi[a];
    double t0, t1;
    if (d[a] != 0) {
      const double inv = 1.0 / d[a];
      t0 = (g.lo[a] - o[a]) * inv;
      t1 = (g.hi[a] - o[a]) * inv;
    } else {
      t0 = inside ? -inf : inf;
      t1 = inside ? inf : -inf;
    }
    t_in = fmax(t_in, fmin(t0, t1));
    t_out = fmin(t_out, fmax(t0, t1));
  }
  t_in = fmax(t_in, 0.0);
  t_out = fmin(t_out, t_max);
  if (!(t_in < t_out)) return;
  int64_t idx[3], step[3], left[3], dlin[3];
  double t_next[3], t_delta[3];
  const int64_t strides[3] = {g.n[1] * g.n[2], g.n[2], 1};
  int64_t lin = 0;
  const double t_start = t_in + 1e-9;
  for (int a = 0; a < 3; ++a) {
    const double p = o[a] + t_start * d[a];
    int64_t i = static_cast<int64_t>(floor((p - g.lo[a]) / g.vs[a]));
    i = i < 0 ? 0 : i;
    i = i > g.n[a] - 1 ? g.n[a] - 1 : i;
    idx[a] = i;
    step[a] = d[a] > 0 ? 1 : (d[a] < 0 ? -1 : 0);
    const double plane = g.lo[a] + static_cast<double>(i + (step[a] > 0 ? 1 : 0)) * g.vs[a];
    t_next[a] = step[a] != 0 ? (plane - o[a]) / d[a] : inf;
    t_delta[a] = step[a] != 0 ? g.vs[a] / fabs(d[a]) : inf;
    left[a] = step[a] > 0 ? g.n[a] - 1 - i : (step[a] < 0 ? i : INT64_MAX);
    dlin[a] = step[a] * strides[a];
    lin += i * strides[a];
  }
  while (true) {
    mark(lin);
    int axis = 0;
    if (t_next[1] < t_next[axis]) axis = 1;
    if (t_next[2] < t_next[axis]) axis = 2;
    const double t_enter = t_next[axis];
    left[axis] -= 1;
    bool go = left[axis] >= 0 && t_enter < t_out;
    if (occupied != nullptr && occupied[lin]) go = false;
    if (!go) return;
    lin += dlin[axis];
    t_next[axis] += t_delta[axis];
  }
}

}  // namespace walk
