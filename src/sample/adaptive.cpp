// The adaptive driver of sample/sample.h: a stepper with a StepController (control/controller.h).
#include <c10/core/InferenceMode.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/sample/sample.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

namespace {

std::string error_estimating_solvers() {
  std::string names;
  for (const auto& e : registered_steppers())
    if (e.traits.has_error_estimate) names += (names.empty() ? "" : ", ") + e.traits.name;
  return names;
}

void check_arguments(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper,
                     const StepController& controller, double t_start, double t_end) {
  FEWSTEP_CHECK_VALUE(x_T.defined(), "sample_adaptive: x_T is an undefined tensor");
  FEWSTEP_CHECK_VALUE(x_T.dim() >= 1 && x_T.size(0) >= 1,
                      "sample_adaptive: x_T must have a batch dimension of size >= 1, got shape ", x_T.sizes());
  FEWSTEP_CHECK_TYPE(at::isFloatingType(x_T.scalar_type()),
                     "sample_adaptive: x_T must be a floating-point tensor, got ", x_T.scalar_type());
  const auto& schedule = model.schedule_ref();
  schedule.check_time(t_start, "t_start");
  schedule.check_time(t_end, "t_end");
  FEWSTEP_CHECK_VALUE(t_start > t_end, "sample_adaptive: t_start must be greater than t_end (sampling runs from noise ",
                      "to data), got t_start = ", t_start, ", t_end = ", t_end);
  const auto& traits = stepper.traits();
  FEWSTEP_CHECK_VALUE(!controller.requires_error_estimate() || traits.has_error_estimate, "sample_adaptive: solver '",
                      traits.name, "' gives no error estimate, which ", controller.describe(),
                      " needs to choose its steps; use a solver with one (", error_estimating_solvers(),
                      ") or a fixed grid (steps=/timesteps=)");
}

void check_finite(const at::Tensor& x, int64_t index, double t) {
  FEWSTEP_CHECK(at::isfinite(x).all().item<bool>(), "sample_adaptive: non-finite values (NaN/Inf) in x after step ",
                index, " (t = ", t, ")");
}

Solution run(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const StepController& controller,
             double t_start, double t_end, const SampleOptions& options) {
  const auto& schedule = model.schedule_ref();
  const auto& traits = stepper.traits();
  const int error_order = traits.has_error_estimate ? traits.order : 0;
  ModelEvaluator evaluator(model);
  Solution solution;
  solution.timesteps.push_back(t_start);
  if (options.keep_trajectory) solution.trajectory.push_back(x_T);

  NoiseSampler noise = !options.seeds.empty() ? NoiseSampler::per_sample(options.seeds)
                       : options.generator   ? NoiseSampler(*options.generator)
                                             : NoiseSampler();
  StepContext ctx;
  ctx.num_steps = -1;  // adaptive: the number of steps is not known in advance
  ctx.noise = &noise;

  at::Tensor x = x_T;
  at::Tensor x0_prev;  // x̂_0 of the previous accepted step
  SolverState state = stepper.init(x);
  ControlProposal first = controller.start(ControlStart{schedule, x, t_start, t_end, error_order});
  ControllerState cstate = std::move(first.state);
  double t = t_start;
  double t_next = first.t_next;
  int64_t rejected_here = 0;
  int64_t nfe_here = 0;

  while (t > t_end) {
    const int64_t attempts = solution.accepted + solution.rejected;
    FEWSTEP_CHECK(attempts < controller.max_steps(), "sample_adaptive: reached max_steps = ", controller.max_steps(),
                  " attempted steps (", solution.accepted, " accepted, ", solution.rejected, " rejected) at t = ", t,
                  " of [", t_start, " -> ", t_end, "] with solver '", traits.name, "' and ", controller.describe(),
                  "; raise max_steps or loosen rtol/atol");
    // Land exactly on t_end, whatever the controller proposed.
    if (!(t_next > t_end)) t_next = t_end;
    FEWSTEP_CHECK(t_next < t, "sample_adaptive: the step controller made no progress at t = ", t,
                  " (proposed t_next = ", t_next, "; step size underflow); ", controller.describe(),
                  " — loosen rtol/atol or set dt_min");

    ctx.index = solution.accepted;
    const int64_t nfe_before = evaluator.nfe();
    StepResult result = stepper.step(evaluator, x, t, t_next, state, ctx);
    nfe_here += evaluator.nfe() - nfe_before;
    FEWSTEP_CHECK(!controller.requires_error_estimate() || (result.error && result.error->defined()),
                  "sample_adaptive: solver '", traits.name, "' declares an error estimate but returned none at t = ",
                  t);
    const at::Tensor* error = result.error ? &*result.error : nullptr;
    ControlInput input{schedule, t, t_next, t_start, t_end, x, result.x, result.x0,
                       x0_prev.defined() ? &x0_prev : nullptr, error, error_order, solution.accepted,
                       solution.rejected};
    ControlDecision decision = controller.decide(input, std::move(cstate));
    cstate = std::move(decision.state);
    if (!decision.accept) {
      ++solution.rejected;
      ++rejected_here;
      t_next = decision.t_next;
      continue;
    }
    const int64_t index = solution.accepted++;
    x = std::move(result.x);
    state = std::move(result.state);
    x0_prev = result.x0;
    if (options.check_finite) check_finite(x, index, t_next);
    solution.stats.push_back(StepStats{index, t, t_next, nfe_here, rejected_here});
    solution.timesteps.push_back(t_next);
    if (options.keep_trajectory) solution.trajectory.push_back(x);
    if (options.callback) options.callback(StepInfo{index, -1, t, t_next, x, result.x0, evaluator.nfe()});
    nfe_here = 0;
    rejected_here = 0;
    t = t_next;
    t_next = decision.t_next;
  }
  if (options.denoise_to_zero) {
    x = evaluator(x, t_end).x0;
    if (options.check_finite) check_finite(x, solution.accepted, 0.0);
  }
  solution.x = x;
  solution.nfe = evaluator.nfe();
  solution.steps = solution.accepted;
  return solution;
}

}  // namespace

Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper,
                         const StepController& controller, double t_start, double t_end,
                         const SampleOptions& options) {
  check_arguments(model, x_T, stepper, controller, t_start, t_end);
  if (options.inference_mode) {
    c10::InferenceMode guard;
    return run(model, x_T, stepper, controller, t_start, t_end, options);
  }
  return run(model, x_T, stepper, controller, t_start, t_end, options);
}

Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name,
                         const StepController& controller, const Options& solver_options,
                         const SampleOptions& options, std::optional<double> t_start, std::optional<double> t_end) {
  auto stepper = solver(solver_name, solver_options);
  const auto& schedule = model.schedule_ref();
  return sample_adaptive(model, x_T, *stepper, controller, t_start.value_or(schedule.t_max()),
                         t_end.value_or(schedule.t_min()), options);
}

}  // namespace fewstep
