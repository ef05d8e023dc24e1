#include "fewstep/solvers/euler.h"

namespace fewstep {

at::Tensor probability_flow_velocity(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps,
                                     double t) {
  // dx/dt = f x − σ λ̇ ε̂, with f = d log α/dt.
  return x * schedule.dlog_alpha_dt(t) - eps * (schedule.sigma(t) * schedule.dlambda_dt(t));
}

EulerStepper::EulerStepper(const Options& options) { options.check_known(traits().options, "solver 'euler'"); }

const StepperTraits& EulerStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("euler",
      "Explicit Euler on the probability-flow ODE in t (Song et al. 2021)")
      .with_needs(Needs::Eps);
  return traits;
}

StepResult EulerStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                              const StepContext& /*ctx*/) const {
  auto out = model(x, s);
  auto v = probability_flow_velocity(model.schedule(), x, out.eps, s);
  return StepResult{x + v * (t - s), out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
