/// @file metrics/coupled_error.h
/// @brief Coupled error: how far samples are from a reference solve started at the same x_T.
///
/// A deterministic sampler maps its initial noise x_T to a sample; the exact probability-flow
/// ODE maps the same x_T to the "true" sample. Comparing the two sample by sample measures the
/// solver's own error, free of the sampling noise that distribution metrics (FD) carry. The
/// reference is a fine solve (e.g. 1000 steps, or sample/reference.h's adaptive float64 solve).
///
/// Per sample i (all dimensions but the first flattened, D values each):
///     e_i = sqrt( (1/D) Σ_j (x_ij − ref_ij)² )        (RMS over coordinates, in data units)
/// so for images in [−1, 1] it is a per-pixel error independent of the resolution. Summaries:
/// median and mean of e_i, rmse = sqrt(mean e_i²), and max e_i. Report the median beside the
/// RMSE: a few trajectories that cross a mode boundary dominate the mean and the RMSE.
/// Everything is computed in float64 (on the inputs' device, summaries on the host).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fewstep {

struct CoupledError {
  int64_t n = 0;         ///< number of samples
  double median = 0.0;   ///< median of e_i (mean of the two middle values for even n)
  double mean = 0.0;     ///< mean of e_i
  double rmse = 0.0;     ///< sqrt(mean of e_i²)
  double max = 0.0;      ///< largest e_i
  at::Tensor per_sample; ///< e_i, float64 [n], on the inputs' device
};

/// Per-sample RMS errors e_i of `x` against `reference` (same shape [N, ...], N >= 1, floating).
/// ValueError naming the argument for mismatched shapes, non-floating dtypes or an empty batch.
at::Tensor per_sample_rms(const at::Tensor& x, const at::Tensor& reference);

/// per_sample_rms and its summaries.
CoupledError coupled_error(const at::Tensor& x, const at::Tensor& reference);

}  // namespace fewstep
