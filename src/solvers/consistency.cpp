#include "fewstep/solvers/consistency.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/schedules/timesteps.h"
#include "stochastic_noise.h"

namespace fewstep {

std::vector<double> consistency_timesteps(const NoiseSchedule& schedule, std::optional<double> start_sigma,
                                          const std::vector<double>& intermediate_sigmas,
                                          std::optional<double> t_end) {
  const double end = t_end.value_or(schedule.t_min());
  FEWSTEP_CHECK_VALUE(std::isfinite(end) && end >= schedule.t_min() && end < schedule.t_max(),
                      "consistency_timesteps: t_end=", end, " is outside the schedule's range [", schedule.t_min(),
                      ", ", schedule.t_max(), ")");
  if (start_sigma)
    FEWSTEP_CHECK_VALUE(std::isfinite(*start_sigma) && *start_sigma > 0.0,
                        "consistency_timesteps: start_sigma must be positive and finite, got ", *start_sigma);
  // The levels, from the start (a start above the schedule's top is the top, t_max) down to t_end's.
  const double top = schedule.sigma_tilde(schedule.t_max()), bottom = schedule.sigma_tilde(end);
  std::vector<double> levels{start_sigma ? std::min(*start_sigma, top) : top};
  for (size_t i = 0; i < intermediate_sigmas.size(); ++i) {
    const double s = intermediate_sigmas[i];
    FEWSTEP_CHECK_VALUE(std::isfinite(s) && s > 0.0 && s < levels.back(), "consistency_timesteps: intermediate_sigmas[",
                        i, "]=", s, " must be positive and below ", i == 0 ? "the start level (" : "the level before it (",
                        levels.back(), ")");
    FEWSTEP_CHECK_VALUE(s > bottom, "consistency_timesteps: intermediate_sigmas[", i, "]=", s,
                        " is not above the level of t_end (", bottom, ", t = ", end, ")");
    levels.push_back(s);
  }
  levels.push_back(bottom);
  std::vector<double> grid = timesteps_from_sigmas(schedule, levels);  // the schedule's exact inverse
  grid.back() = end;  // exactly, not through the round trip
  return validate_grid(schedule, std::move(grid));
}

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
