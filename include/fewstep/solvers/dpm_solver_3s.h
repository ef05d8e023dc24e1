/// @file solvers/dpm_solver_3s.h
/// @brief Singlestep DPM-Solver-3 (Lu et al. 2022, arXiv 2206.00927, Algorithm 2), noise prediction.
///
/// With h = λ_t − λ_s, s_k = t_λ(λ_s + r_k h) (r_1 = 1/3, r_2 = 2/3 by default), ε̂_s = ε̂(x_s, s)
/// and φ_1(z) = e^z − 1, φ_2(z) = (e^z − 1)/z − 1, φ_3(z) = φ_2(z)/z − 1/2:
///   u_1 = (α_{s_1}/α_s) x_s − σ_{s_1} φ_1(r_1 h) ε̂_s,                         D_1 = ε̂(u_1, s_1) − ε̂_s
///   u_2 = (α_{s_2}/α_s) x_s − σ_{s_2} φ_1(r_2 h) ε̂_s − σ_{s_2} (r_2/r_1) φ_2(r_2 h) D_1,
///                                                                          D_2 = ε̂(u_2, s_2) − ε̂_s
///   variant "dpmsolver" (Alg. 2, default):
///     x_t = (α_t/α_s) x_s − σ_t φ_1(h) ε̂_s − σ_t φ_2(h) D_2 / r_2
///   variant "taylor" (first and second λ-derivatives of ε̂ from both differences, integrated
///   exactly; the official code's 'taylor'):
///     δ_1 = D_1/r_1, δ_2 = D_2/r_2, ε' = (r_2 δ_1 − r_1 δ_2)/(r_2 − r_1), ε'' = 2 (δ_2 − δ_1)/(r_2 − r_1),
///     x_t = (α_t/α_s) x_s − σ_t φ_1(h) ε̂_s − σ_t φ_2(h) ε' − σ_t φ_3(h) ε''
/// Third order; three evaluations per step. φ_2, φ_3 are the published closed forms (they
/// lose relative accuracy ~1e-16/h² only for h far below any useful step).
#pragma once

#include "fewstep/solvers/dpm_solver_2s.h"

namespace fewstep {

/// DPM-Solver-3 from s to t given the model output at (x, s); evaluates twice more (s_1, s_2).
SinglestepUpdate dpm_solver_3_update(ModelEvaluator& model, const at::Tensor& x, const DenoiserOutput& at_s, double s,
                                     double t, double r1, double r2, DpmSolverVariant variant);

class DpmSolver3SStepper final : public Stepper {
 public:
  explicit DpmSolver3SStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  DpmSolverVariant variant_;
  double r1_, r2_;
};

}  // namespace fewstep
