/// @file solvers/dpm_adaptive.h
/// @brief `dpm_adaptive`: DPM-Solver's adaptive step-size solver (Lu et al. 2022, arXiv 2206.00927, §4) by name.
///
/// A stepper alias whose step is the embedded pair of option `order`: 2 → DPM-Solver-12
/// (solvers/dpm_solver_12.h), 3 (default, as the official code) → DPM-Solver-23 (solvers/dpm_solver_23.h).
/// Its traits (order, nfe_per_step) follow the chosen pair. Driven by a `PIDController` in λ
/// (sample_adaptive) it is the paper's algorithm: I control, θ = 0.9, h_init = 0.05; on a fixed grid it
/// is simply the pair's higher-order solver.
#pragma once

#include <memory>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmAdaptiveStepper final : public Stepper {
 public:
  explicit DpmAdaptiveStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  StepperTraits traits_;
  std::shared_ptr<const Stepper> pair_;
};

}  // namespace fewstep
