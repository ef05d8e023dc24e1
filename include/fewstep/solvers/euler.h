/// @file solvers/euler.h
/// @brief Explicit Euler on the probability-flow ODE in the schedule's own time t.
///
/// dx/dt = f(t) x − ½ g²(t) ∇log p_t(x) = f(t) x − σ_t λ̇_t ε̂(x, t)  (f = d log α/dt,
/// g² = −2σ² dλ/dt; Song et al. 2021 eq. (13)). x_t = x_s + (t − s) · dx/dt|_s. First order,
/// one evaluation per step. On VE/EDM (σ = t) it is Karras et al.'s Euler sampler.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// PF-ODE velocity dx/dt at (x, t) from the model's ε̂; shared by Euler and Heun.
at::Tensor probability_flow_velocity(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps,
                                     double t);

class EulerStepper final : public Stepper {
 public:
  explicit EulerStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
