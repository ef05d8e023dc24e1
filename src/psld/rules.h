// Internal: the update rules every PSLD sampler is built from, in the β-clock of psld/sampler.h
// (b = ∫ β over the (sub)step, positive; per coordinate; s = (s_x, s_m) the score of z).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

#include "fewstep/core/check.h"
#include "fewstep/psld/process.h"
#include "fewstep/psld/sampler.h"

namespace fewstep::psld_rules {

/// Reverse-time drift per unit of b: ½(Γx − M⁻¹m + kΓ s_x), ½(x + νm + kMν s_m); k = 2 for the
/// reverse SDE, k = 1 for the probability-flow ODE.
inline at::Tensor reverse_drift(const PsldProcess& p, const at::Tensor& z, const at::Tensor& score, double k) {
  auto [x, m] = split_state(z, "psld sampler");
  auto [sx, sm] = split_state(score, "psld sampler (score)");
  const double g = p.gamma(), n = p.nu(), mi = p.mass_inverse(), mass = p.mass();
  auto dx = (x * g - m * mi + sx * (k * g)) * 0.5;
  auto dm = (x + m * n + sm * (k * mass * n)) * 0.5;
  return at::cat({dx, dm}, 1);
}

/// A — position: Euler on dx = ½(−M⁻¹m + 2Γ s_x) dr (m frozen).
inline at::Tensor position_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m, const at::Tensor& sx,
                                  double b) {
  return x + (sx * (2 * p.gamma()) - m * p.mass_inverse()) * (0.5 * b);
}

/// B — momentum: Euler on dm = ½(x + 2Mν s_m) dr (x frozen).
inline at::Tensor momentum_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m, const at::Tensor& sm,
                                  double b) {
  return m + (x + sm * (2 * p.mass() * p.nu())) * (0.5 * b);
}

/// O — the linear, noisy part dx = ½Γx dr + λ_s √Γ dW_x, dm = ½ν m dr + √(Mν) dW_m, solved exactly:
/// x' = e^{Γb/2} x + λ_s √(e^{Γb} − 1) η_x,  m' = e^{νb/2} m + √(M (e^{νb} − 1)) η_m.
/// Draws η_x, then η_m, from the driver's sampler.
inline std::pair<at::Tensor, at::Tensor> ou_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m,
                                                   double b, double lambda_s, const PsldStepContext& ctx,
                                                   const char* sampler);

/// Standard normal noise like `like` from the driver's sampler.
inline at::Tensor draw(const PsldStepContext& ctx, const at::Tensor& like, const char* sampler) {
  FEWSTEP_CHECK_VALUE(ctx.noise != nullptr, "psld sampler '", sampler,
                      "' is stochastic: PsldStepContext::noise is null; psld_sample provides one (set ctx.noise "
                      "when calling step() directly)");
  return ctx.noise->randn_like(like);
}

inline std::pair<at::Tensor, at::Tensor> ou_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m,
                                                   double b, double lambda_s, const PsldStepContext& ctx,
                                                   const char* sampler) {
  auto eta_x = draw(ctx, x, sampler);
  auto eta_m = draw(ctx, m, sampler);
  const double gb = p.gamma() * b, nb = p.nu() * b;
  auto x1 = x * std::exp(gb / 2) + eta_x * (lambda_s * std::sqrt(std::expm1(gb)));
  auto m1 = m * std::exp(nb / 2) + eta_m * std::sqrt(p.mass() * std::expm1(nb));
  return {x1, m1};
}

}  // namespace fewstep::psld_rules
