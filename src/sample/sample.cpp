#include "fewstep/sample/sample.h"

#include <c10/core/InferenceMode.h>

#include "fewstep/core/check.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

namespace {

void check_input(const at::Tensor& x_T) {
  FEWSTEP_CHECK_VALUE(x_T.defined(), "sample: x_T is an undefined tensor");
  FEWSTEP_CHECK_VALUE(x_T.dim() >= 1 && x_T.size(0) >= 1,
                      "sample: x_T must have a batch dimension of size >= 1, got shape ", x_T.sizes());
  FEWSTEP_CHECK_TYPE(at::isFloatingType(x_T.scalar_type()), "sample: x_T must be a floating-point tensor, got ",
                     x_T.scalar_type());
}

void check_finite(const at::Tensor& x, int64_t index, double t) {
  if (x.device().is_meta()) return;  // nothing to check on shape-only tensors
  FEWSTEP_CHECK(at::isfinite(x).all().item<bool>(), "sample: non-finite values (NaN/Inf) in x after step ", index,
                " (t = ", t, ")");
}

Solution run(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const std::vector<double>& grid,
             const SampleOptions& options) {
  const int64_t num_steps = static_cast<int64_t>(grid.size()) - 1;
  ModelEvaluator evaluator(model);
  Solution solution;
  solution.timesteps = grid;
  solution.stats.reserve(num_steps);
  if (options.keep_trajectory) solution.trajectory.push_back(x_T);

  at::Tensor x = x_T;
  SolverState state = stepper.init(x);
  StepContext ctx;
  ctx.num_steps = num_steps;
  ctx.grid = &solution.timesteps;
  NoiseSampler noise = !options.seeds.empty() ? NoiseSampler::per_sample(options.seeds)
                       : options.generator   ? NoiseSampler(*options.generator)
                                             : NoiseSampler();
  ctx.noise = &noise;
  const bool to_zero = ends_at_zero(grid);
  for (int64_t i = 0; i < num_steps; ++i) {
    ctx.index = i;
    const int64_t nfe_before = evaluator.nfe();
    StepResult result = to_zero && i == num_steps - 1
                            ? step_to_zero(evaluator, x, grid[i], std::move(state))
                            : stepper.step(evaluator, x, grid[i], grid[i + 1], std::move(state), ctx);
    x = std::move(result.x);
    state = std::move(result.state);
    if (options.check_finite) check_finite(x, i, grid[i + 1]);
    solution.stats.push_back(StepStats{i, grid[i], grid[i + 1], evaluator.nfe() - nfe_before});
    if (options.keep_trajectory) solution.trajectory.push_back(x);
    if (options.callback) options.callback(StepInfo{i, num_steps, grid[i], grid[i + 1], x, result.x0, evaluator.nfe()});
  }
  if (options.denoise_to_zero) {
    x = evaluator(x, grid.back()).x0;
    if (options.check_finite) check_finite(x, num_steps, 0.0);
  }
  solution.x = x;
  solution.nfe = evaluator.nfe();
  solution.steps = num_steps;
  solution.accepted = num_steps;  // every step of a fixed grid is taken
  return solution;
}

}  // namespace

Solution sample(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const std::vector<double>& grid,
                const SampleOptions& options) {
  check_input(x_T);
  auto checked = validate_grid(model.schedule_ref(), grid, /*allow_final_zero=*/true);
  FEWSTEP_CHECK_VALUE(!(options.denoise_to_zero && ends_at_zero(checked)),
                      "sample: denoise_to_zero cannot be combined with a grid ending at the sigma = 0 marker "
                      "(final_sigma='zero' already ends with x0)");
  if (options.inference_mode) {
    c10::InferenceMode guard;
    return run(model, x_T, stepper, checked, options);
  }
  return run(model, x_T, stepper, checked, options);
}

Solution sample(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name, int64_t steps,
                Spacing spacing, const Options& solver_options, const SampleOptions& options,
                std::optional<double> t_start, std::optional<double> t_end) {
  auto stepper = solver(solver_name, solver_options);
  // A stepper may read `steps` as something else than grid steps (DPM-Solver-fast: a budget).
  if (auto plan = stepper->plan(model.schedule_ref(), steps, spacing, t_start, t_end))
    return sample(model, x_T, *solver(solver_name, plan->options), plan->grid, options);
  auto grid = timesteps(model.schedule_ref(), steps, spacing, t_start, t_end);
  return sample(model, x_T, *stepper, grid, options);
}

}  // namespace fewstep
