/// @file psld/sde_samplers.h
/// @brief Baseline PSLD samplers on the unsplit dynamics: Euler–Maruyama on the reverse SDE and
/// the probability-flow ODE with Euler and Heun.
///
/// In the β-clock of psld/sampler.h, a step from s to t covers b = B(s) − B(t) and the score is
/// evaluated at the step's start time s (PSLD's reference sampler does the same):
///  - `psld_em`        z' = z + b (−A z + D s(z, s)) + √(b D) η            (Euler–Maruyama, weak order 1)
///  - `psld_ode_euler` z' = z + b F(z, s),  F(z, t) = −A z + ½ D s(z, t)   (probability-flow ODE, order 1)
///  - `psld_ode_heun`  z̃ = z + b F(z, s),  z' = z + ½ b (F(z, s) + F(z̃, t)) (trapezoid, order 2, 2 NFE)
/// with, per coordinate, −A z + k D s = ½(Γx − M⁻¹m + kΓ s_x, x + νm + kMν s_m) (Song et al. 2021,
/// eqs. 6 and 13 for the PSLD SDE of psld/process.h).
#pragma once

#include "fewstep/psld/sampler.h"

namespace fewstep {

class PsldEulerMaruyama final : public PsldSampler {
 public:
  explicit PsldEulerMaruyama(const Options& options = {});
  const PsldSamplerTraits& traits() const override;
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
};

class PsldOdeEuler final : public PsldSampler {
 public:
  explicit PsldOdeEuler(const Options& options = {});
  const PsldSamplerTraits& traits() const override;
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
};

class PsldOdeHeun final : public PsldSampler {
 public:
  explicit PsldOdeHeun(const Options& options = {});
  const PsldSamplerTraits& traits() const override;
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
};

}  // namespace fewstep
