/// @file psld/mixture.h
/// @brief The exact PSLD marginal of a Gaussian mixture: closed-form score and log-density of p_t(z).
///
/// For x_0 ~ Σ_k w_k N(μ_k, C_k) and m_0 ~ N(0, κ M I), z_t = Φ (x_0, m_0) + noise is again a mixture:
///   p_t(z) = Σ_k w_k N(z; (Φ₁₁ μ_k, Φ₂₁ μ_k), K_k),   K_k = φ φᵀ ⊗ C_k + Σ_t ⊗ I,
/// with φ = (Φ₁₁, Φ₂₁) the first column of Φ(B(t)) and Σ_t the 2×2 HSM kernel covariance of
/// psld/process.h. In the eigenbasis C_k = U diag(s) Uᵀ, K_k splits into one 2×2 block per
/// eigen-direction j, [[Φ₁₁² s_j + Σxx, Φ₁₁Φ₂₁ s_j + Σxm], [·, Φ₂₁² s_j + Σmm]], which is inverted
/// in closed form; an evaluation costs two matrix products per component. The score is
///   ∇ log p_t(z) = Σ_k r_k(z) (−K_k⁻¹ (z − μ_k(t))),   r_k ∝ w_k N(z; μ_k(t), K_k)
/// (the same construction as models/gaussian_mixture.h, with 2×2 blocks in place of scalars).
/// Arithmetic is float64 whatever the input dtype; results come back in z's dtype.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>

#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/psld/process.h"

namespace fewstep {

class PsldMixture {
 public:
  PsldMixture(std::shared_ptr<const GaussianMixture> data, PsldProcess process);

  const GaussianMixture& data() const { return *data_; }
  const std::shared_ptr<const GaussianMixture>& data_ptr() const { return data_; }
  const PsldProcess& process() const { return process_; }
  int64_t dim() const { return data_->dim(); }

  /// ∇_z log p_t(z) for z [B, 2D] at time t ∈ [t_min, t_max] (ValueError otherwise).
  at::Tensor score(const at::Tensor& z, double t) const;
  /// log p_t(z) [B].
  at::Tensor log_prob(const at::Tensor& z, double t) const;
  /// n exact samples of z_t [n, 2D] (float64): x_0 from the data, then the HSM kernel.
  at::Tensor sample(int64_t n, double t, std::optional<at::Generator> generator = std::nullopt) const;

 private:
  struct Blocks;
  Blocks blocks(const at::Tensor& z, double t) const;

  std::shared_ptr<const GaussianMixture> data_;
  PsldProcess process_;
  at::Tensor eigvals_;  // [K, D]
  at::Tensor eigvecs_;  // [K, D, D]
};

}  // namespace fewstep
