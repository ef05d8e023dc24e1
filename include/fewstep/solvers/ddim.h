/// @file solvers/ddim.h
/// @brief DDIM (Song, Meng & Ermon 2021, eq. (12) with η = 0), the first-order exponential integrator.
///
/// With h = λ_t − λ_s: x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂_0(x_s, s)
/// (DPM-Solver++ eq. (5) at order 1; identical to the noise form (α_t/α_s) x_s − σ_t (e^{h} − 1) ε̂).
/// One evaluation per step.
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// The deterministic DDIM update from (x_s, x̂_0) at s to t, exposed for reuse (trainers).
at::Tensor ddim_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s, double t);

class DdimStepper final : public Stepper {
 public:
  explicit DdimStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
