/// @file solvers/dpmpp_2m_sde.h
/// @brief SDE-DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, §5 / App.): data prediction, multistep,
///        on the reverse diffusion SDE.
///
/// Variation of constants on the reverse SDE in λ (h = λ_t − λ_s) gives, exactly,
///   x_t = (σ_t/σ_s) e^{−h} x_s + 2 α_t ∫_{λ_s}^{λ_t} e^{−2(λ_t − λ)} x̂_0(λ) dλ + σ_t √(1 − e^{−2h}) z.
/// With x̂_0 frozen at s this is DDPM's posterior step (solvers/ddpm.h). The 2M method extrapolates x̂_0
/// linearly from the previous evaluation: D1 = (x̂_s − x̂_prev)/r, r = h_prev/h, and adds
///  - variant "midpoint" (default): ½ α_t (1 − e^{−2h}) D1 — the published SDE-DPM-Solver++(2M) update
///    (also diffusers' `sde-dpmsolver++` with solver_type "midpoint");
///  - variant "heun": α_t (1 − (1 − e^{−2h})/(2h)) D1 — the exact integral of the linear extrapolation
///    (k-diffusion's solver_type "heun").
/// Both agree to O(h²) per step. The first step (no history) is first order. One evaluation and one draw
/// per step. Options: variant, lower_order_final (default true: on grids of fewer than
/// lower_order_final_steps = 10 steps the last step is first order, as in solvers/dpmpp_2m.h).
#pragma once

#include <string>

#include "fewstep/solvers/lower_order_final.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmSolverPP2MSdeStepper final : public Stepper {
 public:
  explicit DpmSolverPP2MSdeStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  bool heun_ = false;
  LowerOrderFinal lower_order_final_;
};

}  // namespace fewstep
