/// @file solvers/dpm_solver_12.h
/// @brief DPM-Solver-12: DPM-Solver-1 embedded in DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927, §4 "adaptive
///        step size", Alg. 4 with r₁ = ½), noise prediction.
///
/// With h = λ_t − λ_s, s₁ = t(λ_s + h/2) and ε̂_s, ε̂_{s₁} the model's noise predictions:
///   x_low  = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂_s                         (DPM-Solver-1 = DDIM)
///   u      = (α_{s₁}/α_s) x_s − σ_{s₁} (e^{h/2} − 1) ε̂_s
///   x_high = x_low − σ_t/(2 r₁) (e^h − 1) (ε̂_{s₁}(u) − ε̂_s)              (DPM-Solver-2)
/// Returns x_high (order 2) with error = x_high − x_low, the local error of DPM-Solver-1 (O(h²)).
/// Two evaluations per step, shared by both solutions.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmSolver12Stepper final : public Stepper {
 public:
  explicit DpmSolver12Stepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
