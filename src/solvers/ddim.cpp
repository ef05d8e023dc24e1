#include "fewstep/solvers/ddim.h"

namespace fewstep {

at::Tensor ddim_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s, double t) {
  const double h = schedule.lambda(t) - schedule.lambda(s);
  const double ratio = std::exp(schedule.log_sigma(t) - schedule.log_sigma(s));
  return x * ratio - x0 * (schedule.alpha(t) * std::expm1(-h));
}

DdimStepper::DdimStepper(const Options& options) { options.check_known(traits().options, "solver 'ddim'"); }

const StepperTraits& DdimStepper::traits() const {
  static const StepperTraits traits{"ddim", 1, 1, false, false, false,
                                    "DDIM, eta = 0 (Song et al. 2021, eq. 12): first-order exponential integrator",
                                    {}};
  return traits;
}

StepResult DdimStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                             const StepContext& /*ctx*/) const {
  auto out = model(x, s);
  state.steps_taken += 1;
  return StepResult{ddim_update(model.schedule(), x, out.x0, s, t), out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
