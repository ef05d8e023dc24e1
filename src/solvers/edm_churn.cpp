#include "fewstep/solvers/edm_churn.h"

#include <cmath>
#include <limits>

#include "fewstep/core/check.h"
#include "fewstep/solvers/euler.h"
#include "stochastic_noise.h"

namespace fewstep {

namespace {
// A function, not a namespace-scope constant: the registry may build the churn steppers during another
// file's static initialisation (a StepperRegistration), before this file's constants exist.
const std::vector<std::string>& churn_options() {
  static const std::vector<std::string> options{"s_churn", "s_tmin", "s_tmax", "s_noise"};
  return options;
}
}  // namespace

ChurnParams ChurnParams::from_options(const Options& options, const char* solver) {
  options.check_known(churn_options(), std::string("solver '") + solver + "'");
  ChurnParams p;
  p.s_churn = options.get_double("s_churn", 80.0);
  p.s_tmin = options.get_double("s_tmin", 0.0);
  p.s_tmax = options.get_double("s_tmax", std::numeric_limits<double>::infinity());
  p.s_noise = options.get_double("s_noise", 1.0);
  FEWSTEP_CHECK_VALUE(std::isfinite(p.s_churn) && p.s_churn >= 0.0, "solver '", solver,
                      "': s_churn must be finite and >= 0, got ", p.s_churn);
  FEWSTEP_CHECK_VALUE(p.s_tmin >= 0.0 && p.s_tmin <= p.s_tmax, "solver '", solver,
                      "': need 0 <= s_tmin <= s_tmax, got s_tmin = ", p.s_tmin, ", s_tmax = ", p.s_tmax);
  FEWSTEP_CHECK_VALUE(std::isfinite(p.s_noise) && p.s_noise >= 0.0, "solver '", solver,
                      "': s_noise must be finite and >= 0, got ", p.s_noise);
  return p;
}

std::pair<at::Tensor, double> edm_churn(const NoiseSchedule& schedule, const at::Tensor& x, double s,
                                        const ChurnParams& params, const StepContext& ctx, const char* solver) {
  if (params.s_churn == 0.0) return {x, s};
  FEWSTEP_CHECK_VALUE(ctx.num_steps > 0, "solver '", solver,
                      "': churn needs the number of steps N of a fixed grid (gamma = min(s_churn/N, sqrt(2)-1)); "
                      "use a fixed grid or s_churn = 0");
  const double lambda_s = schedule.lambda(s);
  const double sigma_tilde = std::exp(-lambda_s);
  if (!(sigma_tilde >= params.s_tmin && sigma_tilde <= params.s_tmax)) return {x, s};
  const double gamma = std::min(params.s_churn / static_cast<double>(ctx.num_steps), std::sqrt(2.0) - 1.0);
  // σ̂ = σ̃ (1 + γ) ⇔ λ̂ = λ_s − log(1 + γ), capped at t_max.
  const double lambda_hat = std::max(lambda_s - std::log1p(gamma), schedule.lambda_min());
  if (!(lambda_hat < lambda_s)) return {x, s};
  const double t_hat = std::min(schedule.t_of_lambda(lambda_hat), schedule.t_max());
  const double dlambda = lambda_s - schedule.lambda(t_hat);  // the λ that t̂ actually has
  if (!(dlambda > 0.0)) return {x, s};
  // √(σ̂² − σ̃²) = σ̃ √(e^{2Δλ} − 1), in y = x/α; back to x with α(t̂).
  const double alpha_hat = schedule.alpha(t_hat);
  const double added = sigma_tilde * std::sqrt(std::expm1(2.0 * dlambda)) * params.s_noise;
  auto z = detail::draw_noise(ctx, x, solver);
  return {x * std::exp(schedule.log_alpha(t_hat) - schedule.log_alpha(s)) + z * (alpha_hat * added), t_hat};
}

namespace {
StepperTraits churn_traits(const char* name, int order, int nfe, bool stochastic, const char* summary) {
  return StepperTraits::named(name, summary)
      .with_order(order)
      .with_nfe_per_step(nfe)
      .with_stochastic(stochastic)
      .with_options(churn_options());
}
}  // namespace

EulerChurnStepper::EulerChurnStepper(const Options& options)
    : params_(ChurnParams::from_options(options, "euler_churn")),
      traits_(churn_traits("euler_churn", 1, 1, params_.s_churn > 0.0,
                           "Euler on the PF-ODE with EDM stochastic churn (Karras et al. 2022, Alg. 2)")) {}

StepResult EulerChurnStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                   const StepContext& ctx) const {
  auto [x_hat, t_hat] = edm_churn(model.schedule(), x, s, params_, ctx, "euler_churn");
  // From here on the `euler` update, verbatim, from (x̂, t̂).
  auto out = model(x_hat, t_hat);
  auto v = probability_flow_velocity(model.schedule(), x_hat, out.eps, t_hat);
  return StepResult{x_hat + v * (t - t_hat), out.x0, std::nullopt, std::move(state)};
}

HeunChurnStepper::HeunChurnStepper(const Options& options)
    : params_(ChurnParams::from_options(options, "heun_churn")),
      traits_(churn_traits("heun_churn", 2, 2, params_.s_churn > 0.0,
                           "Heun on the PF-ODE with EDM stochastic churn (Karras et al. 2022, Alg. 2)")) {}

StepResult HeunChurnStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                  const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto [x_hat, t_hat] = edm_churn(schedule, x, s, params_, ctx, "heun_churn");
  // From here on the `heun` update, verbatim, from (x̂, t̂).
  const double dt = t - t_hat;
  auto out_s = model(x_hat, t_hat);
  auto d_s = probability_flow_velocity(schedule, x_hat, out_s.eps, t_hat);
  auto x_euler = x_hat + d_s * dt;
  auto out_t = model(x_euler, t);
  auto d_t = probability_flow_velocity(schedule, x_euler, out_t.eps, t);
  return StepResult{x_hat + (d_s + d_t) * (0.5 * dt), out_t.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
