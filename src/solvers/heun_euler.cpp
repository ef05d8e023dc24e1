#include "fewstep/solvers/heun_euler.h"

#include "fewstep/solvers/heun.h"

namespace fewstep {

HeunEulerStepper::HeunEulerStepper(const Options& options) {
  options.check_known(traits().options, "solver 'heun_euler'");
}

const StepperTraits& HeunEulerStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("heun_euler",
      "Heun-Euler embedded pair on the probability-flow ODE in t: Heun (order 2) with an Euler error estimate")
      .with_order(2)
      .with_nfe_per_step(2)
      .with_error_estimate()
      .with_needs(Needs::Eps);
  return traits;
}

StepResult HeunEulerStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                  const StepContext& ctx) const {
  return heun_step_with_error(model, x, s, t, std::move(state), ctx.wants_error);
}

}  // namespace fewstep
