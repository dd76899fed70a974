// Host-side declarations of the CUDA launchers (defined in render_cuda.cuh, instantiated once per
// (density dtype, feature dtype, walker) in the render_cuda_*.cu files).
#pragma once

#include <ATen/core/Tensor.h>

#include "render_core.h"

namespace render_cuda {

template <typename T, typename F, typename Walker>
void launch_forward(const render::Grid<T>& g, const at::Tensor& density, const at::Tensor& features,
                    const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& batch_index,
                    const at::Tensor& near, const at::Tensor& far, double step, double thr, at::Tensor& depth,
                    at::Tensor& opacity, at::Tensor& feats, at::Tensor& trans, at::Tensor& flags);

template <typename T, typename F, typename Walker>
void launch_backward(const render::Grid<T>& g, const at::Tensor& density, const at::Tensor& features,
                     const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& batch_index,
                     const at::Tensor& near, const at::Tensor& far, double step, double thr, const at::Tensor& depth,
                     const at::Tensor& opacity, const at::Tensor& feats, const at::Tensor& trans,
                     const at::Tensor& g_depth, const at::Tensor& g_opacity, const at::Tensor& g_feats,
                     const at::Tensor& g_trans, at::Tensor& grad_density, at::Tensor& grad_features);

}  // namespace render_cuda
