/// @file models/gaussian_mixture.h
/// @brief Gaussian mixtures with exact denoisers under every linear forward process.
///
/// For x_0 ~ Σ_k w_k N(μ_k, C_k) and x_t = α x_0 + σ ε, x_t ~ Σ_k w_k N(α μ_k, α² C_k + σ² I),
/// and the posterior mean is E[x_0 | x_t] = Σ_k r_k(x_t) (μ_k + α C_k (α² C_k + σ² I)^{-1}(x_t − α μ_k))
/// with responsibilities r_k ∝ w_k N(x_t; α μ_k, α² C_k + σ² I). Each C_k = U_k diag(s_k) U_kᵀ is
/// eigendecomposed once, so an evaluation costs two matrix products per component and no
/// factorisation. Arithmetic is float64 whatever the input dtype; results come back in x's dtype.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "fewstep/models/denoiser.h"

namespace fewstep {

class GaussianMixture {
 public:
  /// weights [K] (positive, normalised here), means [K, D], covariances [K, D] (diagonal) or
  /// [K, D, D] (symmetric positive definite). ValueError naming the argument otherwise.
  GaussianMixture(const at::Tensor& weights, const at::Tensor& means, const at::Tensor& covariances);

  /// A reproducible random mixture: means ~ N(0, spread²) per coordinate, covariances with random
  /// orientation and eigenvalues in [min_var, max_var]; `diagonal` restricts to axis-aligned.
  static std::shared_ptr<GaussianMixture> random(int64_t dim, int64_t components, uint64_t seed,
                                                 bool diagonal = false, double spread = 1.0,
                                                 double min_var = 0.01, double max_var = 0.1);

  int64_t dim() const { return means_.size(1); }
  int64_t components() const { return means_.size(0); }
  bool diagonal() const { return diagonal_; }
  const at::Tensor& weights() const { return weights_; }
  const at::Tensor& means() const { return means_; }
  /// Full covariances [K, D, D] (built from the diagonal if diagonal).
  at::Tensor covariances() const;

  /// n data samples [n, D], float64, on the generator's device (CPU without a generator).
  at::Tensor sample(int64_t n, std::optional<at::Generator> generator = std::nullopt) const;
  /// Same, also returning each sample's component index.
  std::pair<at::Tensor, at::Tensor> sample_with_labels(int64_t n,
                                                      std::optional<at::Generator> generator = std::nullopt) const;

  /// Exact (x̂_0, ε̂) for x [..., D] at noise levels (α, σ).
  DenoiserOutput denoise(const at::Tensor& x, double alpha, double sigma) const;
  /// log p_t(x) of the noised mixture [...].
  at::Tensor log_prob(const at::Tensor& x, double alpha, double sigma) const;
  /// Posterior component probabilities r_k(x) [..., K].
  at::Tensor responsibilities(const at::Tensor& x, double alpha, double sigma) const;
  /// Overall mean [D] and covariance [D, D] of the data distribution.
  at::Tensor mean() const;
  at::Tensor covariance() const;

 private:
  at::Tensor weights_;      // [K] float64
  at::Tensor means_;        // [K, D]
  at::Tensor eigvals_;      // [K, D]
  at::Tensor eigvecs_;      // [K, D, D] (undefined if diagonal)
  bool diagonal_ = false;
};

}  // namespace fewstep
