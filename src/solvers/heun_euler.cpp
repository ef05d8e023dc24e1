#include "fewstep/solvers/heun_euler.h"

#include "fewstep/solvers/euler.h"

namespace fewstep {

HeunEulerStepper::HeunEulerStepper(const Options& options) {
  options.check_known(traits().options, "solver 'heun_euler'");
}

const StepperTraits& HeunEulerStepper::traits() const {
  static const StepperTraits traits{
      "heun_euler", 2, 2, false, true, false,
      "Heun-Euler embedded pair on the probability-flow ODE in t: Heun (order 2) with an Euler error estimate", {}};
  return traits;
}

StepResult HeunEulerStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                  const StepContext& /*ctx*/) const {
  const auto& schedule = model.schedule();
  const double dt = t - s;
  auto out_s = model(x, s);
  auto d_s = probability_flow_velocity(schedule, x, out_s.eps, s);
  auto x_euler = x + d_s * dt;
  auto out_t = model(x_euler, t);
  auto d_t = probability_flow_velocity(schedule, x_euler, out_t.eps, t);
  auto error = (d_t - d_s) * (0.5 * dt);  // x_heun − x_euler
  state.steps_taken += 1;
  return StepResult{x_euler + error, out_t.x0, error, std::move(state)};
}

}  // namespace fewstep
