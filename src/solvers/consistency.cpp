#include "fewstep/solvers/consistency.h"

#include <algorithm>
#include <cmath>

#include "stochastic_noise.h"

namespace fewstep {

ConsistencyStepper::ConsistencyStepper(const Options& options) {
  options.check_known(traits().options, "solver 'consistency'");
}

const StepperTraits& ConsistencyStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("consistency",
      "Multistep consistency sampling (Song et al. 2023, Algorithm 1): x0 = f(x, t), re-noised to the next time")
      .with_stochastic();
  return traits;
}

StepResult ConsistencyStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                    SolverState state, const StepContext& ctx) const {
  const auto out = model(x, s);
  if (ctx.is_last()) return StepResult{out.x0, out.x0, std::nullopt, std::move(state)};
  const NoiseSchedule& schedule = model.schedule();
  // The boundary ε the model's x̂ lives at: the grid's end, or the schedule's t_min (adaptive drivers).
  const double eps_t = ctx.grid != nullptr && !ctx.grid->empty() ? ctx.grid->back() : schedule.t_min();
  const double ratio = std::exp(schedule.log_alpha(t) - schedule.log_alpha(eps_t));  // α_t/α_ε
  const double var = schedule.sigma(t) * schedule.sigma(t) - ratio * ratio * schedule.sigma(eps_t) *
                                                                 schedule.sigma(eps_t);
  const at::Tensor z = detail::draw_noise(ctx, x, "consistency");
  return StepResult{out.x0 * ratio + z * std::sqrt(std::max(var, 0.0)), out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
