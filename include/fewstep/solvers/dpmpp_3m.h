/// @file solvers/dpmpp_3m.h
/// @brief DPM-Solver++(3M): multistep DPM-Solver++ of order 3, data prediction, non-uniform steps
/// (Lu et al. 2022, arXiv 2211.01095: the paper derives the Taylor expansion of the data-form
/// integral and analyses orders <= 2; the third-order multistep update is in the authors' code).
///
/// At step i from s = t_{i−1} to t = t_i, with the data predictions m_0, m_1, m_2 at t_{i−1},
/// t_{i−2}, t_{i−3}, h = λ_t − λ_s, h_0 = λ_{t_{i−1}} − λ_{t_{i−2}}, h_1 = λ_{t_{i−2}} − λ_{t_{i−3}},
/// r_0 = h_0/h, r_1 = h_1/h, φ_1 = e^{−h} − 1, φ_2 = φ_1/h + 1, φ_3 = φ_2/h − 1/2:
///   δ_0 = (m_0 − m_1)/r_0,  δ_1 = (m_1 − m_2)/r_1,
///   D_1 = δ_0 + r_0/(r_0 + r_1) (δ_0 − δ_1)  (= h x̂_0'(λ_s) of the quadratic through the m's),
///   D_2 = (δ_0 − δ_1)/(r_0 + r_1)            (= h² x̂_0''(λ_s)/2 of that quadratic),
///   x_t = (σ_t/σ_s) x_s − α_t φ_1 m_0 + α_t φ_2 D_1 − w α_t φ_3 D_2.
/// The Taylor expansion of the data-form integral (terms to n = 2) has
/// σ_t ∫ e^{λ} (λ − λ_s)²/2 dλ · x̂_0'' = −α_t φ_3 h² x̂_0'', so w = 2: the update is the exact
/// integral of the quadratic interpolant, third order (variant "taylor", default). The official
/// code (dpm_solver_pytorch.py, multistep_dpm_solver_third_update; diffusers copies it) uses
/// w = 1, which is not exact for quadratic x̂_0(λ) and makes the method second order; variant
/// "official" reproduces it for cross-checks. The first step is DDIM and the second
/// DPM-Solver++(2M) (history still short). Options:
///  - variant: "taylor" (default) | "official", as above.
///  - lower_order_final (default true): on grids of fewer than `lower_order_final_steps`
///    (default 10) steps the order is capped by the steps left, so the last step is first order
///    and the one before second order, as the official implementation does (its code uses < 10
///    although its docstring says < 15); it stabilises very few-step sampling.
#pragma once

#include "fewstep/solvers/lower_order_final.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmSolverPP3MStepper final : public Stepper {
 public:
  explicit DpmSolverPP3MStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  LowerOrderFinal lower_order_final_;
  double d2_weight_;
};

}  // namespace fewstep
