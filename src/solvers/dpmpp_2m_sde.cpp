#include "fewstep/solvers/dpmpp_2m_sde.h"

#include <cmath>

#include "fewstep/core/check.h"
#include "stochastic_noise.h"

namespace fewstep {

namespace {
/// 1 − (1 − e^{−u})/u for u = 2h > 0; its Taylor series where the direct form cancels.
double heun_coefficient(double u) {
  if (u < 1e-3) return u * (0.5 - u * (1.0 / 6.0 - u * (1.0 / 24.0 - u / 120.0)));
  return 1.0 + std::expm1(-u) / u;
}
}  // namespace

DpmSolverPP2MSdeStepper::DpmSolverPP2MSdeStepper(const Options& options) {
  options.check_known(traits().options, "solver 'dpmpp_2m_sde'");
  const std::string variant = options.get_string("variant", "midpoint");
  FEWSTEP_CHECK_VALUE(variant == "midpoint" || variant == "heun",
                      "solver 'dpmpp_2m_sde': variant must be 'midpoint' or 'heun', got '", variant, "'");
  heun_ = variant == "heun";
  lower_order_final_ = LowerOrderFinal::from_options(options, "solver 'dpmpp_2m_sde'");
}

const StepperTraits& DpmSolverPP2MSdeStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpmpp_2m_sde",
      "SDE-DPM-Solver++(2M), data prediction, multistep (Lu et al. 2022)")
      .with_order(2)
      .with_stochastic()
      .with_multistep()
      .with_options({"variant", "lower_order_final", "lower_order_final_steps"});
  return traits;
}

StepResult DpmSolverPP2MSdeStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                         SolverState state, const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  const double lambda_s = schedule.lambda(s);
  const double h = schedule.lambda(t) - lambda_s;
  const double one_minus_e2h = -std::expm1(-2.0 * h);
  const double alpha_t = schedule.alpha(t);
  // First-order part: DDPM's posterior mean (σ_t/σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) x̂_s.
  auto x_next = x * std::exp(schedule.log_sigma(t) - schedule.log_sigma(s) - h) + out.x0 * (alpha_t * one_minus_e2h);
  if (lower_order_final_.order(2, state.history.size(), ctx) == 2) {
    const HistoryEntry& prev = state.history.back();
    const double r = (lambda_s - schedule.lambda(prev.t)) / h;
    const double coef = heun_ ? alpha_t * heun_coefficient(2.0 * h) : 0.5 * alpha_t * one_minus_e2h;
    x_next = x_next + (out.x0 - prev.x0) * (coef / r);
  }
  auto z = detail::draw_noise(ctx, x, "dpmpp_2m_sde");
  x_next = x_next + z * (schedule.sigma(t) * std::sqrt(one_minus_e2h));
  state.history.clear();
  state.history.push_back(HistoryEntry{s, out.x0, out.eps});
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
