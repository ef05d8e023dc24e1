/// @file solvers/dpm_solver_23.h
/// @brief DPM-Solver-23: DPM-Solver-2 embedded in DPM-Solver-3 (Lu et al. 2022, arXiv 2206.00927, §4 "adaptive
///        step size", Alg. 4 with r₁ = ⅓ and Alg. 5 with r₁ = ⅓, r₂ = ⅔), noise prediction.
///
/// With h = λ_t − λ_s, s_i = t(λ_s + r_i h), φ(z) = e^z − 1 and D₁ = ε̂_{s₁} − ε̂_s, D₂ = ε̂_{s₂} − ε̂_s:
///   u₁     = (α_{s₁}/α_s) x_s − σ_{s₁} φ(r₁h) ε̂_s
///   x_low  = (α_t/α_s) x_s − σ_t φ(h) ε̂_s − σ_t/(2 r₁) φ(h) D₁                    (DPM-Solver-2, r₁ = ⅓)
///   u₂     = (α_{s₂}/α_s) x_s − σ_{s₂} φ(r₂h) ε̂_s − (r₂/r₁) σ_{s₂} (φ(r₂h)/(r₂h) − 1) D₁
///   x_high = (α_t/α_s) x_s − σ_t φ(h) ε̂_s − σ_t/r₂ (φ(h)/h − 1) D₂                 (DPM-Solver-3)
/// Returns x_high (order 3) with error = x_high − x_low, the local error of DPM-Solver-2 (O(h³)).
/// Three evaluations per step (s, s₁, s₂), shared by both solutions.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmSolver23Stepper final : public Stepper {
 public:
  explicit DpmSolver23Stepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
