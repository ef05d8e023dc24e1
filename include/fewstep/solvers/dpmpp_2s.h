/// @file solvers/dpmpp_2s.h
/// @brief DPM-Solver++(2S) (Lu et al. 2022, arXiv 2211.01095, Algorithm 1), singlestep, data prediction.
///
/// With h = λ_t − λ_s, s_1 = t_λ(λ_s + r h) (r = r1 = 1/2 by default) and x̂_s = x̂_0(x_s, s):
///   u   = (σ_{s_1}/σ_s) x_s − α_{s_1} (e^{−r h} − 1) x̂_s               (DPM-Solver++(1) to s_1)
///   D   = x̂_0(u, s_1) − x̂_s
///   x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂_s + c D, with
///     variant "dpmsolver" (Alg. 1, default): c = −α_t (e^{−h} − 1) / (2r), i.e. the update with
///       (1 − 1/(2r)) x̂_s + 1/(2r) x̂_0(u, s_1) in place of x̂_s;
///     variant "taylor": c = α_t ((e^{−h} − 1)/h + 1) / r (first-order Taylor expansion of x̂_0
///       in λ integrated exactly; the official code's 'taylor').
/// Second order; two evaluations per step.
#pragma once

#include "fewstep/solvers/dpm_solver_2s.h"

namespace fewstep {

class DpmSolverPP2SStepper final : public Stepper {
 public:
  explicit DpmSolverPP2SStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  DpmSolverVariant variant_;
  double r_;
};

}  // namespace fewstep
