/// @file solvers/heun_euler.h
/// @brief Heun–Euler embedded pair on the probability-flow ODE in t (HNW I §II.4; Karras et al. 2022, Alg. 1).
///
/// d_s = v(x_s, s); x_E = x_s + (t − s) d_s (Euler, order 1); d_t = v(x_E, t);
/// x_H = x_s + (t − s)(d_s + d_t)/2 (Heun, order 2). Returns x_H with error = x_H − x_E = (t − s)(d_t − d_s)/2,
/// the Euler step's local error estimate, O(h²). Two evaluations per step; on a fixed grid it is
/// exactly `heun`. With v the PF-ODE velocity of solvers/euler.h.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class HeunEulerStepper final : public Stepper {
 public:
  explicit HeunEulerStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
