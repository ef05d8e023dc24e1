/// @file solvers/deis.h
/// @brief DEIS (Zhang & Chen 2022, arXiv 2204.13902): exponential integrator with the linear part exact and
///        ε̂ extrapolated by a polynomial (tAB-DEIS in t, ρAB-DEIS in ρ = σ/α, or in λ), Sec. 4.
///
/// From s to t (noise form of the variation-of-constants formula, docs/design.md §1):
///   x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂ dλ   ≈   L(s, t) x_s + Σ_j c_j ε̂_j,
/// with ε̂ replaced by its Lagrange interpolant through the last p evaluations (times s = s_0 > s_1 > ...)
/// in the chosen variable v. Then c_j = −α_t e^{−λ_s} ∫_0^{h} e^{−u} ℓ_j(v(λ_s + u)) du, h = λ_t − λ_s:
///  - v = λ: closed form through φ functions (this is multistep DPM-Solver in noise form);
///  - v = ρ = e^{−λ}: closed form, ∫ of a polynomial in ρ (the paper's ρAB-DEIS);
///  - v = t: no closed form; composite 10-point Gauss–Legendre in λ with panels of width ≤ 0.5
///    (error far below 1e-14 relative for analytic schedules; schedules interpolated piecewise,
///    e.g. VPDiscrete, limit it to the quadrature error across their kinks).
/// The c_j are host scalars computed once per step from the grid; the tensor work is p + 1 axpys.
/// Order p = 1 is DDIM. The split into `deis_linear_factor` and `deis_nonlinear_term` is the seam
/// where micro-distillation replaces the extrapolated integral by a learned network.
///
/// Options: order (1–3, default 3), variable ("t" | "lambda" | "rho", default "t"; "logrho" is
/// "lambda" under the name of diffusers' DEISMultistepScheduler(solver_type="logrho"), which it
/// reproduces: log ρ = −λ),
/// lower_order_final (default true) with lower_order_final_steps (default 10): on grids with fewer
/// steps, step i of N uses order min(order, N − i), as dpmpp_2m does. Declared order = `order`.
#pragma once

#include <vector>

#include "fewstep/solvers/lower_order_final.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

enum class DeisVariable { T, Lambda, Rho };
/// "t", "lambda" (alias "logrho"), "rho" (ValueError otherwise).
DeisVariable parse_deis_variable(const std::string& name);

/// Exact linear factor α_t/α_s of the step from s to t.
double deis_linear_factor(const NoiseSchedule& schedule, double s, double t);

/// Coefficients c_j of the nonlinear term Σ_j c_j ε̂_j of the step from times[0] = s to t, for ε̂
/// interpolated through (times[j], ε̂_j), j < times.size() ≤ 4, times distinct and decreasing from s.
std::vector<double> deis_coefficients(const NoiseSchedule& schedule, const std::vector<double>& times, double t,
                                      DeisVariable variable);

/// The nonlinear term Σ_j c_j eps[j] (eps[j] is ε̂ at times[j]; times[0] = s, most recent first).
at::Tensor deis_nonlinear_term(const NoiseSchedule& schedule, const std::vector<double>& times,
                               const std::vector<at::Tensor>& eps, double t, DeisVariable variable);

class DeisStepper final : public Stepper {
 public:
  explicit DeisStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  int64_t order_;
  DeisVariable variable_;
  LowerOrderFinal lower_order_final_;
  StepperTraits traits_;
};

}  // namespace fewstep
