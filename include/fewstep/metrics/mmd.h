/// @file metrics/mmd.h
/// @brief Maximum mean discrepancy between two sample sets with a Gaussian kernel.
///
/// k(a, b) = exp(−‖a − b‖² / (2 h²)). The unbiased estimator (Gretton et al. 2012, eq. 3)
///   MMD²_u = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ_{i,j} k(x_i, y_j)
/// has mean zero when both sets come from the same law (so it can be slightly negative).
/// Computed in float64 in row blocks; samples are [n, ...] and flattened per row.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fewstep {

/// Unbiased MMD² with bandwidth h > 0 (ValueError naming the argument otherwise).
double mmd2_rbf(const at::Tensor& x, const at::Tensor& y, double bandwidth);

/// Median pairwise Euclidean distance among the first `max_n` rows of x (the usual bandwidth).
double median_pairwise_distance(const at::Tensor& x, int64_t max_n = 1000);

}  // namespace fewstep
