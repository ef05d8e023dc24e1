/// @file solvers/heun.h
/// @brief Heun's method (explicit trapezoid) on the probability-flow ODE in t.
///
/// d_s = v(x_s, s); x̃ = x_s + (t − s) d_s; d_t = v(x̃, t); x_t = x_s + (t − s)(d_s + d_t)/2,
/// with v the PF-ODE velocity of solvers/euler.h. Second order, two evaluations per step
/// (Karras et al. 2022, Algorithm 1, on VE/EDM; the same update in t for other schedules).
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// One Heun step from s to t with its embedded Euler error estimate x_Heun − x_Euler
/// (shared by `heun` and the `heun_euler` pair); with_error = false skips the estimate (`heun`, and
/// `heun_euler` when nothing reads it). The step itself does not depend on the flag.
StepResult heun_step_with_error(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                 bool with_error = true);

class HeunStepper final : public Stepper {
 public:
  explicit HeunStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
