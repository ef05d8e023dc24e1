/// @file solvers/euler_maruyama.h
/// @brief Euler–Maruyama on the reverse-time SDE in the schedule's own time t (Song et al. 2021, arXiv 2011.13456,
///        eq. (6)).
///
/// Reverse SDE: dx = [f(t) x − g²(t) ∇log p_t(x)] dt + g(t) dw̄, with f = d log α/dt, g² = dσ²/dt − 2 f σ²
/// = −2σ² λ̇ and ∇log p_t = −ε̂/σ, so the drift is f x − 2 σ λ̇ ε̂ (twice the PF-ODE's score term). From s to
/// t < s:  x_t = x_s + (t − s)(f_s x_s − 2 σ_s λ̇_s ε̂) + g_s √(s − t) z,  g_s = σ_s √(−2 λ̇_s),  z ~ N(0, I).
/// Weak order 1 (strong order ½ in general, 1 for this additive noise); one evaluation and one draw per step.
/// On VE/EDM (σ = t) it is the reverse-diffusion predictor's Euler counterpart with g² = 2t.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class EulerMaruyamaStepper final : public Stepper {
 public:
  explicit EulerMaruyamaStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
