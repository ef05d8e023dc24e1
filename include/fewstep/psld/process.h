/// @file psld/process.h
/// @brief Phase-space Langevin diffusion (PSLD, Pandey & Mandt 2023, arXiv 2303.01748): the
/// forward process on the augmented state z = (x, m), its exact perturbation kernel, prior and
/// the score from an ε-prediction.
///
/// Forward SDE, per data coordinate (PSLD eq. 6, the "complete recipe" with Γ, ν, M⁻¹):
///   dx = ½β(t) (M⁻¹ m − Γ x) dt + √(Γ β(t)) dw_x
///   dm = ½β(t) (−x − ν m) dt    + √(M ν β(t)) dw_m
/// i.e. dz = β(t) A z dt + √(β(t)) D^{1/2} dw with the 2×2 matrices (acting per coordinate)
///   A = ½ [[−Γ, M⁻¹], [−1, −ν]],   D = diag(Γ, M ν).
/// Its stationary law is N(0, Σ∞), Σ∞ = diag(1, M) (A Σ∞ + Σ∞ Aᵀ + D = 0), the prior. Critical
/// damping (a double eigenvalue of A) is M⁻¹ = (Γ − ν)²/4, the default. Defaults are the paper's
/// CIFAR-10 values: β ≡ 8, Γ = 0.01, ν = 4.01 (so M⁻¹ = 4), m_0 ~ N(0, κ M I) with κ = 0.04, t ∈ [1e-3, 1].
///
/// Time enters only through b = B(t) − B(s), B(t) = ∫_0^t β: the transition matrix is the 2×2
/// exponential Φ(b) = exp(A b) = e^{τ b} (C(b) I + S(b) N) with τ = tr A / 2, N = A − τ I,
/// N² = q I, C = cosh(√q b), S = sinh(√q b)/√q (cos/sin for q < 0, 1 and b at q = 0), and the
/// noise covariance of a step is Q(b) = ∫_0^b Φ(r) D Φ(r)ᵀ dr = Σ∞ − Φ(b) Σ∞ Φ(b)ᵀ.
/// Hybrid score matching (HSM, Dockhorn et al. 2022) conditions on x_0 only, m_0 ~ N(0, κM):
///   z_t | x_0 ~ N(μ_t, Σ_t),  μ_t = Φ(B(t)) (x_0, 0)ᵀ = (Φ₁₁ x_0, Φ₂₁ x_0),
///   Σ_t = Φ diag(0, κM) Φᵀ + Q(B(t)) = Σ∞ − Φ diag(1, M(1 − κ)) Φᵀ   (one 2×2 per coordinate),
/// so z_t = μ_t + L_t ε with L_t the lower Cholesky factor of Σ_t and ε ~ N(0, I_{2d}), and the
/// kernel's score is −Σ_t⁻¹ (z_t − μ_t) = −L_t⁻ᵀ ε. A network ε̂(z_t, t) therefore gives the score
/// s = −L_t⁻ᵀ ε̂ (PSLD eq. 9):  s_m = −ε̂_m / l₂₂,  s_x = −(ε̂_x − (l₂₁/l₂₂) ε̂_m) / l₁₁.
/// All coefficients are float64 on the host; tensors keep their dtype and device.
///
/// Layout: z = cat(x, m) along dim 1 (channels), so a state has twice the channels of x:
/// [B, 2D] for vectors, [B, 2C, H, W] for images.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fewstep {

struct PsldConfig {
  double beta_min = 8.0;  ///< β(t) = beta_min + t (beta_max − beta_min)
  double beta_max = 8.0;
  double gamma = 0.01;    ///< Γ: friction/noise in position space
  double nu = 4.01;       ///< ν: friction/noise in momentum space
  std::optional<double> mass_inverse;  ///< M⁻¹; unset: critical damping (Γ − ν)²/4
  double kappa = 0.04;    ///< m_0 ~ N(0, κ M I)
  double t_min = 1e-3;
  double t_max = 1.0;
  /// ValueError naming the field for a bad value.
  void validate() const;
  std::string repr() const;
};

/// A 2×2 matrix [[a11, a12], [a21, a22]].
struct Mat2 {
  double a11 = 0, a12 = 0, a21 = 0, a22 = 0;
};
/// A symmetric 2×2 covariance [[xx, xm], [xm, mm]].
struct Cov2 {
  double xx = 0, xm = 0, mm = 0;
};

/// Phase-space Langevin diffusion. Immutable; cheap to copy.
class PsldProcess {
 public:
  explicit PsldProcess(PsldConfig config = {});

  const PsldConfig& config() const { return config_; }
  double gamma() const { return config_.gamma; }
  double nu() const { return config_.nu; }
  double mass_inverse() const { return m_inv_; }
  double mass() const { return 1.0 / m_inv_; }
  double t_min() const { return config_.t_min; }
  double t_max() const { return config_.t_max; }

  double beta(double t) const;
  /// B(t) = ∫_0^t β(u) du.
  double beta_integral(double t) const;
  /// Φ(b) = exp(A b) for an integrated β of b (any sign).
  Mat2 transition(double b) const;
  /// Q(b) = Σ∞ − Φ(b) Σ∞ Φ(b)ᵀ: covariance added by the forward SDE over integrated β b ≥ 0.
  Cov2 noise_covariance(double b) const;
  /// Σ_t of the HSM kernel p(z_t | x_0) (ValueError if t is outside [0, t_max]).
  Cov2 kernel_covariance(double t) const;
  /// Its lower Cholesky factor L_t (l12 = 0). ValueError at t = 0 (Σ_0 is singular in x).
  Mat2 kernel_cholesky(double t) const;

  /// z_t = μ_t(x_0) + L_t ε for x0 [B, C, ...], eps [B, 2C, ...], per-sample times t [B] (float64,
  /// host) or one time for all. Result in x0's dtype.
  at::Tensor perturb(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t) const;
  at::Tensor perturb(const at::Tensor& x0, const at::Tensor& eps, double t) const;
  /// The kernel's score −L_t⁻ᵀ ε̂ of an ε-prediction [B, 2C, ...] at time t.
  at::Tensor score_from_eps(const at::Tensor& eps, double t) const;
  /// The inverse map: ε̂ = −L_tᵀ s.
  at::Tensor eps_from_score(const at::Tensor& score, double t) const;
  /// Tweedie's formula for the kernel: Φ₁₁ E[x_0 | z_t] = z_x + Σxx s_x + Σxm s_m, exact when s is
  /// the score of p_t (the x row of Φ·(E[x_0|z], 0) = z + Σ_t s). Returns x̂_0 [B, C, ...].
  at::Tensor denoise(const at::Tensor& z, const at::Tensor& score, double t) const;
  /// Prior samples N(0, diag(1, M)) with state shape [n, 2C, ...] for data shape [C, ...].
  at::Tensor prior_sample(int64_t n, at::IntArrayRef data_shape, std::optional<at::Generator> generator,
                          at::ScalarType dtype = at::kFloat) const;

 private:
  PsldConfig config_;
  double m_inv_;
};

/// Splits z [B, 2C, ...] into (x, m) (ValueError naming `who` if dim 1 is missing or odd).
std::pair<at::Tensor, at::Tensor> split_state(const at::Tensor& z, const char* who);

}  // namespace fewstep
