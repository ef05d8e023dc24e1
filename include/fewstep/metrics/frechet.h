/// @file metrics/frechet.h
/// @brief Fréchet distance between Gaussians fitted to two sets of features (the "FD" of FID).
///
/// For N(μ_a, Σ_a) and N(μ_b, Σ_b) the squared 2-Wasserstein (Fréchet) distance is
///     FD = |μ_a − μ_b|² + tr Σ_a + tr Σ_b − 2 tr( (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2} )
/// (Dowson & Landau 1982; Heusel et al. 2017 use it on Inception features as FID).
/// fewstep computes it in float64 with two symmetric eigendecompositions, never a general
/// (non-symmetric) matrix square root:
///   1. Σ_a = U diag(a) Uᵀ, S = U diag(√max(a, 0)) Uᵀ = Σ_a^{1/2};
///   2. M = S Σ_b S (symmetrised), eigenvalues m_i clamped at 0;
///   3. tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2} = Σ √m_i.
/// Eigenvalues of positive semi-definite matrices that round-off made slightly negative are
/// clamped at 0, and a result in (−1e−12·scale, 0) from cancellation is returned as 0, so FD ≥ 0.
/// The value is the same as SciPy's sqrtm-based FID formula when both covariances are positive
/// definite, and stays finite and accurate when they are singular (N ≤ D features).
///
/// Fréchet distances between *samples* are biased upwards by sample size (the covariance
/// estimates are noisy): compare values only at equal N, and report a floor (the FD between
/// two samples of real data at the same N) beside them (metrics/fmnist_evaluator.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fewstep {

/// Mean and covariance of a set of feature vectors, float64 on the CPU.
struct GaussianStats {
  at::Tensor mean;    ///< [D], float64
  at::Tensor cov;     ///< [D, D], float64, unbiased (divides by N − 1; zero when N = 1)
  int64_t count = 0;  ///< N, the number of feature vectors
};

/// Statistics of `features` [N, D] (any floating dtype, any device; computed in float64 on the
/// CPU). ValueError naming `features` unless it is a 2-D floating tensor with N >= 1 and finite values.
GaussianStats gaussian_stats(const at::Tensor& features);

/// Fréchet distance between two Gaussians of the same dimension D (ValueError naming the
/// argument for mismatched or malformed statistics).
double frechet_distance(const GaussianStats& a, const GaussianStats& b);

/// frechet_distance(gaussian_stats(features_a), gaussian_stats(features_b)).
double frechet_distance(const at::Tensor& features_a, const at::Tensor& features_b);

}  // namespace fewstep
