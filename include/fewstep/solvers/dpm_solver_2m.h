/// @file solvers/dpm_solver_2m.h
/// @brief Multistep DPM-Solver-2, noise prediction (Lu et al. 2022, arXiv 2206.00927; the multistep
/// form is Lu et al. 2022, arXiv 2211.01095, §3.2 and Alg. 2 applied to the noise form), non-uniform steps.
///
/// Noise form of the variation-of-constants formula (docs/design.md §1) from s = t_{i−1} to t = t_i,
/// h = λ_t − λ_s, φ_1 = e^h − 1, with ε̂_0, ε̂_1, ε̂_2 the noise predictions at t_{i−1}, t_{i−2}, t_{i−3},
/// h_0 = λ_{t_{i−1}} − λ_{t_{i−2}}, r_0 = h_0/h:
///   order 1 (DPM-Solver-1 = DDIM):  x_t = (α_t/α_s) x_s − σ_t φ_1 ε̂_0,
///   order 2:  D_1 = (ε̂_0 − ε̂_1)/r_0 (≈ h ε̂'(λ_s)) and x_t = order-1 update − c D_1, with
///     variant "dpmsolver" (default): c = σ_t φ_1 / 2 (the paper's DPM-Solver-2 form, eq. 3.6 with
///       the difference taken backwards),
///     variant "taylor": c = σ_t (φ_1/h − 1), the exact integral of the linear interpolant of ε̂ in λ
///       (the same step as `deis` with variable "lambda" and order 2).
/// These are the two `solver_type`s of the authors' multistep code. The first step is DPM-Solver-1
/// (no history yet). Options:
///  - variant: "dpmsolver" (default) | "taylor", as above;
///  - lower_order_final (default true) with lower_order_final_steps (default 10): on grids of fewer
///    steps, step i of N uses order min(order, N − i), so the last step is first order, as
///    `dpmpp_2m` and `dpmpp_3m` do.
/// `dpm_solver_3m` (solvers/dpm_solver_3m.h) shares `dpm_solver_multistep_update`.
#pragma once

#include <vector>

#include "fewstep/solvers/dpm_solver_2s.h"
#include "fewstep/solvers/lower_order_final.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// Multistep DPM-Solver update of `order` (1–3) from s to t in noise form. `eps` holds ε̂ at
/// `times` (times[0] = s, most recent first; at least `order` of them). `d2_weight` multiplies the
/// second-derivative term of order 3 (solvers/dpm_solver_3m.h: 2 is the Taylor expansion, 1 the
/// authors' code).
at::Tensor dpm_solver_multistep_update(const NoiseSchedule& schedule, const at::Tensor& x,
                                       const std::vector<double>& times, const std::vector<at::Tensor>& eps,
                                       double t, int64_t order, DpmSolverVariant variant, double d2_weight);

class DpmSolver2MStepper final : public Stepper {
 public:
  explicit DpmSolver2MStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  DpmSolverVariant variant_;
  LowerOrderFinal lower_order_final_;
};

}  // namespace fewstep
