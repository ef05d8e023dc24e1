#include "fewstep/solvers/heun.h"

#include "fewstep/solvers/euler.h"

namespace fewstep {

HeunStepper::HeunStepper(const Options& options) { options.check_known(traits().options, "solver 'heun'"); }

const StepperTraits& HeunStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("heun",
      "Heun's 2nd-order method on the probability-flow ODE in t (Karras et al. 2022, Alg. 1)")
      .with_order(2)
      .with_nfe_per_step(2)
      .with_needs(Needs::Eps);
  return traits;
}

StepResult heun_step_with_error(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                 bool with_error) {
  const auto& schedule = model.schedule();
  const double dt = t - s;
  auto out_s = model(x, s);
  auto d_s = probability_flow_velocity(schedule, x, out_s.eps, s);
  auto x_euler = x + d_s * dt;
  auto out_t = model(x_euler, t);
  auto d_t = probability_flow_velocity(schedule, x_euler, out_t.eps, t);
  // The trapezoid sum is formed as written (not as x_euler + error) so that heun_churn with
  // s_churn = 0 stays bit-identical to heun.
  auto x_heun = x + (d_s + d_t) * (0.5 * dt);
  std::optional<at::Tensor> error;
  if (with_error) error = (d_t - d_s) * (0.5 * dt);  // x_heun − x_euler
  return StepResult{x_heun, out_t.x0, error, std::move(state)};
}

StepResult HeunStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                             const StepContext& /*ctx*/) const {
  return heun_step_with_error(model, x, s, t, std::move(state), /*with_error=*/false);  // plain Heun declares none
}

}  // namespace fewstep
