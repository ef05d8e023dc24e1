#include "fewstep/solvers/ddpm.h"

#include <cmath>

#include "stochastic_noise.h"

namespace fewstep {

DdpmStepper::DdpmStepper(const Options& options) { options.check_known(traits().options, "solver 'ddpm'"); }

const StepperTraits& DdpmStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("ddpm",
      "DDPM ancestral sampling of q(x_t | x_s, x0_hat) (Ho et al. 2020, eq. 6-7)")
      .with_stochastic();
  return traits;
}

StepResult DdpmStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                             const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  // σ²_{s|t}/σ_s² = 1 − (α_s σ_t/(α_t σ_s))² = 1 − e^{−2h}.
  const double h = schedule.lambda(t) - schedule.lambda(s);
  const double var_ratio = -std::expm1(-2.0 * h);
  const double log_alpha_st = schedule.log_alpha(s) - schedule.log_alpha(t);
  const double sigma_ratio_sq = std::exp(2.0 * (schedule.log_sigma(t) - schedule.log_sigma(s)));  // σ_t²/σ_s²
  const double c_x = std::exp(log_alpha_st) * sigma_ratio_sq;
  const double c_0 = schedule.alpha(t) * var_ratio;
  const double std_dev = schedule.sigma(t) * std::sqrt(var_ratio);
  auto z = detail::draw_noise(ctx, x, "ddpm");
  return StepResult{x * c_x + out.x0 * c_0 + z * std_dev, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
