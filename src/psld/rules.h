// Internal: the update rules every PSLD sampler is built from, in the β-clock of psld/sampler.h
// (b = ∫ β over the (sub)step, positive; per coordinate; s = (s_x, s_m) the score of z).
// The splitting pieces A, B, O and where the score terms go are derived in docs/psld.md
// (eqs. 5–9 there).
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

/// A — position (docs/psld.md eq. 6): Euler on dx = ½(−M⁻¹m + 2Γ s_x) dr, m frozen; without the
/// score term when `sx` is undefined (the position score then lives in O).
inline at::Tensor position_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m, const at::Tensor& sx,
                                  double b) {
  auto dx = m * (-p.mass_inverse());
  if (sx.defined()) dx = dx + sx * (2 * p.gamma());
  return x + dx * (0.5 * b);
}

/// B — momentum (docs/psld.md eq. 7): Euler on dm = ½(x + 2Mν s_m) dr, x frozen; without the
/// score term when `sm` is undefined (the momentum score then lives in O).
inline at::Tensor momentum_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m, const at::Tensor& sm,
                                  double b) {
  auto dm = x;
  if (sm.defined()) dm = dm + sm * (2 * p.mass() * p.nu());
  return m + dm * (0.5 * b);
}

/// Standard normal noise like `like` from the driver's sampler.
inline at::Tensor draw(const PsldStepContext& ctx, const at::Tensor& like, const char* sampler) {
  FEWSTEP_CHECK_VALUE(ctx.noise != nullptr, "psld sampler '", sampler,
                      "' is stochastic: PsldStepContext::noise is null; psld_sample provides one (set ctx.noise "
                      "when calling step() directly)");
  return ctx.noise->randn_like(like);
}

/// O — the friction and noise of each coordinate (docs/psld.md eq. 8), per coordinate u ∈ {x, m}
/// with rate c_u (Γ, ν) and noise scale d_u (Γ, Mν), plus that coordinate's score term when
/// `su` is defined:  du = ½(c_u u + 2 d_u s_u) dr + λ_u √d_u dW  (λ_x = λ_s, λ_m = 1).
/// Without the score it is a linear SDE, solved exactly:
///   u' = e^{c_u b/2} u + λ_u √(d_u (e^{c_u b} − 1)/c_u) η;
/// with the score it is one Euler–Maruyama step, so that the expansive ½c_u u and the contracting
/// score term (≈ −d_u (u − û)/σ²) meet in the same update (docs/psld.md eq. 10):
///   u' = u + (b/2)(c_u u + 2 d_u s_u) + λ_u √(d_u b) η.
/// Draws η_x, then η_m, from the driver's sampler.
inline std::pair<at::Tensor, at::Tensor> ou_update(const PsldProcess& p, const at::Tensor& x, const at::Tensor& m,
                                                   const at::Tensor& sx, const at::Tensor& sm, double b,
                                                   double lambda_s, const PsldStepContext& ctx, const char* sampler) {
  auto eta_x = draw(ctx, x, sampler);
  auto eta_m = draw(ctx, m, sampler);
  auto part = [b](const at::Tensor& u, const at::Tensor& su, const at::Tensor& eta, double rate, double scale,
                  double lambda) {
    if (su.defined()) return u + (u * rate + su * (2 * scale)) * (0.5 * b) + eta * (lambda * std::sqrt(scale * b));
    return u * std::exp(rate * b / 2) + eta * (lambda * std::sqrt(scale * std::expm1(rate * b) / rate));
  };
  return {part(x, sx, eta_x, p.gamma(), p.gamma(), lambda_s),
          part(m, sm, eta_m, p.nu(), p.mass() * p.nu(), 1.0)};
}

}  // namespace fewstep::psld_rules
