/// @file solvers/ddpm.h
/// @brief DDPM ancestral sampling (Ho, Jain & Abbeel 2020, eq. (6)–(7)) on arbitrary grids of any schedule.
///
/// Each step samples the forward posterior q(x_t | x_s, x̂_0) with x̂_0 = x̂_0(x_s, s). For the forward
/// transition x_s = α_{s|t} x_t + σ_{s|t} ε (α_{s|t} = α_s/α_t, σ²_{s|t} = σ_s² − α²_{s|t} σ_t²; VDM's notation,
/// Ho et al.'s β_t on a one-step grid) the posterior is Gaussian with
///   mean = (α_{s|t} σ_t²/σ_s²) x_s + (α_t σ²_{s|t}/σ_s²) x̂_0,   variance = σ²_{s|t} σ_t²/σ_s²  (β̃ of eq. (7)).
/// With h = λ_t − λ_s these are (σ_t/σ_s) e^{−h}, α_t (1 − e^{−2h}) and σ_t² (1 − e^{−2h}), computed with
/// expm1 so that fine grids keep their precision. This is DDIM with η = 1 (solvers/ddim.h) and the first-order
/// SDE-DPM-Solver++ (solvers/dpmpp_2m_sde.h). One evaluation and one Gaussian draw per step; weak order 1.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DdpmStepper final : public Stepper {
 public:
  explicit DdpmStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
