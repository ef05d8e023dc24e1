/// @file solvers/ddim.h
/// @brief DDIM (Song, Meng & Ermon 2021, eq. (12) with σ_t(η) of eq. (16)): deterministic at η = 0, stochastic above.
///
/// With h = λ_t − λ_s > 0 and the data prediction x̂_0 = x̂_0(x_s, s):
///  - η = 0: x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂_0 (DPM-Solver++ eq. (5) at order 1; identical to the
///    noise form (α_t/α_s) x_s − σ_t (e^{h} − 1) ε̂), the first-order exponential integrator of the PF-ODE.
///  - η > 0: x_t = α_t x̂_0 + √(σ_t² − c²) ε̂ + c z with c = η σ_t √(1 − e^{−2h}), z ~ N(0, I). On VP this is
///    eq. (16)'s σ_t(η) = η √((1−ᾱ_{t})/(1−ᾱ_{s})) √(1 − ᾱ_{s}/ᾱ_{t}); written with λ it holds on every
///    schedule (σ_t²(1 − e^{−2h}) is the variance of the forward posterior q(x_t | x_s, x_0)). Computed in data
///    form with ε̂ = (x_s − α_s x̂_0)/σ_s: x_t = ρ (σ_t/σ_s) x_s + α_t (1 − ρ e^{−h}) x̂_0 + c z,
///    ρ = √(1 − η²(1 − e^{−2h})). η = 1 is DDPM's ancestral step (solvers/ddpm.h).
/// One evaluation per step. Option `eta` ∈ [0, 1] (default 0). The registry lists the defaults (η = 0,
/// deterministic); an instance's traits() reflect its own options (stochastic = η > 0).
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// The deterministic DDIM update from (x_s, x̂_0) at s to t, exposed for reuse (trainers).
at::Tensor ddim_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s, double t);
/// The same update, bit for bit, using `x0_scratch` (a temporary of the caller, overwritten) for its
/// intermediate: one full-size allocation fewer in the multistep hot loops.
at::Tensor ddim_update_consuming(const NoiseSchedule& schedule, const at::Tensor& x, at::Tensor& x0_scratch, double s,
                                 double t);

/// The stochastic DDIM update (η ∈ [0, 1]) from (x_s, x̂_0) at s to t with the standard normal draw z.
at::Tensor ddim_eta_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s,
                           double t, double eta, const at::Tensor& z);

class DdimStepper final : public Stepper {
 public:
  explicit DdimStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
  double eta() const { return eta_; }

 private:
  double eta_ = 0.0;
  StepperTraits traits_;
};

}  // namespace fewstep
