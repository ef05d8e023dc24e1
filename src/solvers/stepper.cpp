#include "fewstep/solvers/stepper.h"

namespace fewstep {

StepResult step_to_zero(ModelEvaluator& model, const at::Tensor& x, double s, SolverState state) {
  auto out = model(x, s);
  return StepResult{out.x0, out.x0, std::nullopt, std::move(state)};
}

SolverState Stepper::init(const at::Tensor& /*x*/) const { return SolverState{}; }

std::optional<StepPlan> Stepper::plan(const NoiseSchedule& /*schedule*/, int64_t /*steps*/, Spacing /*spacing*/,
                                      std::optional<double> /*t_start*/, std::optional<double> /*t_end*/) const {
  return std::nullopt;
}

int64_t Stepper::nfe_for_steps(int64_t steps) const { return steps * traits().nfe_per_step; }

}  // namespace fewstep
