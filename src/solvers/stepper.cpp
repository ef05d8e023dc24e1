#include "fewstep/solvers/stepper.h"

namespace fewstep {

StepperTraits StepperTraits::named(std::string name, std::string summary) {
  StepperTraits traits;
  traits.name = std::move(name);
  traits.summary = std::move(summary);
  return traits;
}

StepperTraits& StepperTraits::with_order(int value) {
  order = value;
  return *this;
}
StepperTraits& StepperTraits::with_nfe_per_step(int value) {
  nfe_per_step = value;
  return *this;
}
StepperTraits& StepperTraits::with_stochastic(bool value) {
  stochastic = value;
  return *this;
}
StepperTraits& StepperTraits::with_error_estimate(bool value) {
  has_error_estimate = value;
  return *this;
}
StepperTraits& StepperTraits::with_multistep(bool value) {
  multistep = value;
  return *this;
}
StepperTraits& StepperTraits::with_revised_start(bool value) {
  revises_start = value;
  return *this;
}
StepperTraits& StepperTraits::with_adaptive_default(bool value) {
  adaptive_by_default = value;
  return *this;
}
StepperTraits& StepperTraits::with_options(std::vector<std::string> keys) {
  options = std::move(keys);
  return *this;
}
StepperTraits& StepperTraits::with_needs(Needs value) {
  needs = value;
  return *this;
}

StepResult step_to_zero(ModelEvaluator& model, const at::Tensor& x, double s, SolverState state) {
  auto out = model(x, s, Needs::X0);
  return StepResult{out.x0, out.x0, std::nullopt, std::move(state)};
}

SolverState Stepper::init(const at::Tensor& /*x*/) const { return SolverState{}; }

std::optional<StepPlan> Stepper::plan(const NoiseSchedule& /*schedule*/, int64_t /*steps*/, Spacing /*spacing*/,
                                      std::optional<double> /*t_start*/, std::optional<double> /*t_end*/) const {
  return std::nullopt;
}

int64_t Stepper::nfe_for_steps(int64_t steps) const { return steps * traits().nfe_per_step; }

}  // namespace fewstep
