// sample/request.h: interpreting a request (resolve) and the one sampling loop (ResolvedSample::run).
#include "fewstep/sample/request.h"

#include <c10/core/InferenceMode.h>

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "fewstep/control/grid.h"
#include "fewstep/control/pid.h"
#include "fewstep/core/check.h"
#include "fewstep/core/interrupt.h"
#include "fewstep/core/noise.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

namespace {

constexpr const char* kDefaultSolver = "dpmpp_2m";

std::string error_estimating_solvers() {
  std::string names;
  for (const auto& e : registered_steppers())
    if (e.traits.has_error_estimate) names += (names.empty() ? "" : ", ") + e.traits.name;
  return names;
}

/// "NaN at index (0, 3)": the first non-finite element of x (x has one).
std::string first_non_finite(const at::Tensor& x) {
  const at::Tensor where = at::nonzero(at::logical_not(at::isfinite(x)).reshape(x.sizes()));
  if (where.size(0) == 0) return "no non-finite value";
  const at::Tensor index = where[0];
  std::string text;
  for (int64_t d = 0; d < index.numel(); ++d) text += (d ? ", " : "") + std::to_string(index[d].item<int64_t>());
  at::Tensor value = x;
  for (int64_t d = 0; d < index.numel(); ++d) value = value[index[d].item<int64_t>()];
  const double v = value.item<double>();
  return std::string(std::isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf") + " at index (" + text + ")";
}

/// x_T against the model file's sample shape (SamplerDefaults::sample_shape): the mistakes a network
/// would report as a convolution's channel mismatch, named here in the request's terms.
void check_x_T_shape(const at::Tensor& x_T, const std::vector<int64_t>& sample_shape) {
  if (sample_shape.empty()) return;
  const int64_t rank = static_cast<int64_t>(sample_shape.size());
  if (x_T.dim() == rank + 1 && x_T.size(1) == sample_shape[0]) return;
  std::string wanted = "[batch";
  for (int64_t d : sample_shape) wanted += ", " + std::to_string(d);
  FEWSTEP_CHECK_VALUE(false, "sample: x_T has shape ", x_T.sizes(), ", but the model file's samples are ", wanted, "]",
                      rank == 3 ? " (height and width may differ, the channels may not)" : "");
}

bool all_finite(const at::Tensor& x) { return x.device().is_meta() || at::isfinite(x).all().item<bool>(); }

void check_x_T(const at::Tensor& x_T) {
  FEWSTEP_CHECK_VALUE(x_T.defined(), "sample: x_T is an undefined tensor");
  FEWSTEP_CHECK_VALUE(x_T.dim() >= 1 && x_T.size(0) >= 1,
                      "sample: x_T must have a batch dimension of size >= 1, got shape ", x_T.sizes());
  FEWSTEP_CHECK_TYPE(at::isFloatingType(x_T.scalar_type()), "sample: x_T must be a floating-point tensor, got ",
                     x_T.scalar_type());
  FEWSTEP_CHECK_VALUE(all_finite(x_T), "sample: x_T must be finite, got ", first_non_finite(x_T));
}

at::Tensor starting_noise(const SampleRequest& r) {
  if (r.x_T.defined()) {
    FEWSTEP_CHECK_VALUE(r.sample_shape.empty(), "sample: pass either x_T or sample_shape (with seeds), not both");
    return r.x_T;
  }
  FEWSTEP_CHECK_VALUE(!r.sample_shape.empty(), "sample: pass x_T, or sample_shape with per-sample seeds");
  FEWSTEP_CHECK_VALUE(!r.options.seeds.empty(), "sample: drawing x_T from sample_shape needs per-sample seeds=");
  return randn_per_sample(r.sample_shape, r.options.seeds, r.x_T_options);
}

/// How the request says to step, after the precedence rules of request.h.
struct Stepping {
  std::optional<int64_t> steps, nfe;
  std::vector<double> timesteps;
  bool adaptive = false;
  bool own_grid = false;  // the model file's own grid
};

/// The solver a request without one uses: the model file's own (a student's ddim or consistency, at any
/// steps), else dpmpp_2m.
std::string default_solver(const SampleRequest& r) {
  return r.model_defaults.solver.empty() ? kDefaultSolver : r.model_defaults.solver;
}

/// `solver` is the one the request will use (named, or default_solver); `named`: the request chose it.
Stepping choose_stepping(const SampleRequest& r, bool named, const std::string& solver) {
  const bool tolerances = r.rtol.has_value() || r.atol.has_value();
  const bool adaptive = tolerances || r.controller != nullptr;
  const int gridded = int(r.steps.has_value()) + int(r.nfe.has_value()) + int(!r.timesteps.empty());
  FEWSTEP_CHECK_VALUE(!(tolerances && r.controller), "pass either rtol=/atol= or controller=, not both (set the "
                      "tolerances on the controller)");
  FEWSTEP_CHECK_VALUE(!(r.steps && !r.timesteps.empty()), "pass either steps= or timesteps=, not both");
  FEWSTEP_CHECK_VALUE(gridded <= 1, "pass one of steps=, nfe= or timesteps=, not several");
  FEWSTEP_CHECK_VALUE(!(gridded && adaptive), "steps=/nfe=/timesteps= fix the grid while rtol=/atol=/controller= "
                      "choose the steps adaptively; pass one or the other");
  Stepping s{r.steps, r.nfe, r.timesteps, adaptive};
  if (gridded || adaptive) return s;
  const auto traits_of = [&]() -> const StepperTraits& {
    return r.stepper ? r.stepper->traits() : stepper_traits(solver);
  };
  // A model file's own grid (a distilled student's), with its own solver or the one the request names
  // (ddim: a progressive student as it was trained), unless that solver chooses its own steps.
  if (!r.model_defaults.timesteps.empty() && !(named && traits_of().adaptive_by_default)) {
    s.timesteps = r.model_defaults.timesteps;
    s.own_grid = true;
    return s;
  }
  const StepperTraits& traits = traits_of();
  if (traits.adaptive_by_default) {
    s.adaptive = true;
    return s;
  }
  if (r.fallback_steps > 0) {
    s.steps = r.fallback_steps;
    return s;
  }
  std::string hint;
  if (traits.has_error_estimate)
    hint = "; solver '" + traits.name + "' gives an error estimate, so rtol=/atol= or controller= also work";
  FEWSTEP_CHECK_VALUE(false, "pass steps= (with spacing=), nfe= or an explicit timesteps= grid", hint);
  return s;
}

/// The tuned grid fitted for `solver` with `options` at the NFE `steps` spends, if the file has one.
std::shared_ptr<const ModelTunedGrid> tuned_grid_for(const std::vector<ModelTunedGrid>& grids, const std::string& solver,
                                                     const Options& options, const Stepper& stepper, int64_t steps) {
  const auto wanted = tuned_grid_options(options);
  for (const ModelTunedGrid& g : grids)
    if (g.solver == solver && g.options == wanted && static_cast<int64_t>(g.timesteps.size()) == steps + 1 &&
        g.nfe == stepper.nfe_for_steps(steps))
      return std::make_shared<const ModelTunedGrid>(g);
  return nullptr;
}

}  // namespace

double prior_scale(const NoiseSchedule& schedule, double t_start) {
  return schedule.family() == ScheduleFamily::VE ? schedule.sigma(t_start) : 1.0;
}

ResolvedSample resolve(const SampleRequest& r) {
  FEWSTEP_CHECK_VALUE(r.model != nullptr, "sample: model must not be null");
  const NoiseSchedule& schedule = r.model->schedule_ref();
  ResolvedSample out;
  out.model = r.model;
  out.options = r.options;
  out.x_T = starting_noise(r);
  check_x_T(out.x_T);
  check_x_T_shape(out.x_T, r.model_defaults.sample_shape);
  FEWSTEP_CHECK_VALUE(r.options.seeds.empty() || !r.options.generator.has_value(),
                      "pass either generator= or seeds=, not both");
  FEWSTEP_CHECK_VALUE(r.options.seeds.empty() || static_cast<int64_t>(r.options.seeds.size()) == out.x_T.size(0),
                      "seeds should give one seed per sample: got ", r.options.seeds.size(), " seeds for x_T of shape ",
                      out.x_T.sizes());
  FEWSTEP_CHECK_VALUE(!(r.stepper && !r.solver.empty()), "sample: pass either a solver name or a stepper object, "
                      "not both (got solver '", r.solver, "' and a '", r.stepper->traits().name, "' stepper)");

  const bool named = !r.solver.empty() || r.stepper != nullptr;
  const std::string name = named ? r.solver : default_solver(r);
  const Stepping stepping = choose_stepping(r, named, name);
  out.stepper = r.stepper ? r.stepper : solver(name, r.solver_options);
  out.solver = out.stepper->traits().name;

  if (!stepping.timesteps.empty()) {
    FEWSTEP_CHECK_VALUE(!r.t_start && !r.t_end, "t_start/t_end apply to steps=; an explicit timesteps= grid already "
                        "fixes them");
    FEWSTEP_CHECK_VALUE(r.final_sigma == FinalSigma::Min && !r.steps_offset, "final_sigma/steps_offset apply to "
                        "steps=; an explicit timesteps= grid already fixes them (end it with 0.0 for a last step to "
                        "sigma = 0)");
    out.grid = validate_grid(schedule, stepping.timesteps, /*allow_final_zero=*/true);
    out.own_grid = stepping.own_grid;
  } else if (stepping.adaptive) {
    FEWSTEP_CHECK_VALUE(r.final_sigma == FinalSigma::Min && !r.steps_offset, "final_sigma/steps_offset apply to a "
                        "fixed grid (steps=), not to adaptive stepping");
    out.controller = r.controller ? r.controller
                                  : std::make_shared<PIDController>(r.rtol.value_or(kDpmSolverRtol),
                                                                    r.atol.value_or(kDpmSolverAtol));
    out.t_start = r.t_start.value_or(schedule.t_max());
    out.t_end = r.t_end.value_or(schedule.t_min());
  } else {
    int64_t steps = 0;
    if (stepping.nfe) {
      FEWSTEP_CHECK_VALUE(*stepping.nfe >= 1 && *stepping.nfe <= kMaxGridSteps, "nfe must be in [1, ", kMaxGridSteps,
                          "], got ", *stepping.nfe);
      steps = steps_for_nfe(*out.stepper, *stepping.nfe);
      FEWSTEP_CHECK_VALUE(steps > 0, "solver '", out.solver, "' cannot spend exactly nfe=", *stepping.nfe,
                          " evaluations (it spends ", out.stepper->traits().nfe_per_step,
                          " per step); pass a multiple of that, or steps=");
    } else {
      steps = *stepping.steps;
      FEWSTEP_CHECK_VALUE(steps >= 1 && steps <= kMaxGridSteps, "steps must be in [1, ", kMaxGridSteps, "], got ",
                          steps);
    }
    // A solver may plan its own steps (dpm_solver_fast: steps is the budget); a grid that asks for
    // diffusers' offsets or the final step to sigma = 0 is the generic one.
    const bool generic = r.final_sigma != FinalSigma::Min || r.steps_offset.has_value();
    if (!generic && r.use_tuned_grid && !r.stepper && !r.t_start && !r.t_end)
      out.tuned_grid = tuned_grid_for(r.model_defaults.tuned_grids, out.solver, r.solver_options, *out.stepper, steps);
    auto plan = out.tuned_grid || generic ? std::nullopt : out.stepper->plan(schedule, steps, r.spacing, r.t_start, r.t_end);
    if (plan) {
      if (plan->stepper) out.stepper = plan->stepper;
      if (plan->controller) {
        out.controller = plan->controller;
        out.t_start = plan->t_start.value_or(r.t_start.value_or(schedule.t_max()));
        out.t_end = plan->t_end.value_or(r.t_end.value_or(schedule.t_min()));
      } else {
        out.grid = validate_grid(schedule, plan->grid);
      }
    } else if (out.tuned_grid) {
      out.grid = validate_grid(schedule, out.tuned_grid->timesteps);
    } else {
      out.grid = timesteps(schedule, steps, r.spacing, r.t_start, r.t_end, 7.0, r.steps_offset, r.final_sigma);
    }
  }
  if (!out.grid.empty()) {
    out.controller = std::make_shared<GridController>(out.grid);
    out.t_start = out.grid.front();
    out.t_end = out.grid.back();
  }
  schedule.check_time(out.t_start, "t_start");
  const bool to_zero = !out.grid.empty() && ends_at_zero(out.grid);
  if (!to_zero) schedule.check_time(out.t_end, "t_end");
  FEWSTEP_CHECK_VALUE(!(to_zero && r.options.denoise_to_zero), "sample: denoise_to_zero cannot be combined with a "
                      "grid ending at the sigma = 0 marker (final_sigma='zero' already ends with x0)");
  FEWSTEP_CHECK_VALUE(out.t_start > out.t_end, "sample: t_start must be greater than t_end (sampling runs from noise ",
                      "to data), got t_start = ", out.t_start, ", t_end = ", out.t_end);
  if (!r.x_T.defined() && schedule.family() == ScheduleFamily::VE)
    out.x_T = out.x_T * prior_scale(schedule, out.t_start);  // drawn noise is the prior at t_start
  const StepperTraits& traits = out.stepper->traits();
  FEWSTEP_CHECK_VALUE(!out.controller->requires_error_estimate() || traits.has_error_estimate, "sample: solver '",
                      traits.name, "' gives no error estimate, which ", out.controller->describe(),
                      " needs to choose its steps; use a solver with one (", error_estimating_solvers(),
                      ") or a fixed grid (steps=/timesteps=)");
  return out;
}

namespace {

void check_finite(const at::Tensor& x, int64_t index, double t) {
  FEWSTEP_CHECK(all_finite(x), "sample: non-finite values (NaN/Inf) in x after step ", index, " (t = ", t, "): ",
                first_non_finite(x));
}

/// A step's report, held back while a later step may still revise its x (traits.revises_start).
struct Report {
  int64_t index;
  double t, t_next;
  at::Tensor x, x0;
  int64_t nfe;
};

/// The one sampling loop: fixed grids (GridController) and adaptive step control alike.
///  - NFE is exact: evaluations of rejected attempts are included (Solution::nfe, and each accepted
///    step's StepStats::nfe includes the attempts rejected before it).
///  - A rejected attempt is discarded (x and the stepper's state stay) and retried to the newly
///    proposed time; the last step is clipped to land exactly on t_end.
Solution drive(const ResolvedSample& job) {
  const Denoiser& model = *job.model;
  const Stepper& stepper = *job.stepper;
  const StepController& controller = *job.controller;
  const SampleOptions& options = job.options;
  const NoiseSchedule& schedule = model.schedule_ref();
  const StepperTraits& traits = stepper.traits();
  const double t_start = job.t_start, t_end = job.t_end;
  const int error_order = traits.has_error_estimate ? traits.order : 0;
  const std::vector<double>* fixed = controller.fixed_grid();

  // Evaluations fill only what the stepper reads (StepperTraits::needs) unless the loop reports x̂_0
  // (callbacks; adaptive controllers read it) or the request asks for everything.
  const bool lean = !options.full_evaluations && fixed && !options.callback;
  ModelEvaluator evaluator(model, lean ? traits.needs : Needs::Both);
  Solution solution;
  solution.timesteps.push_back(t_start);
  if (fixed) solution.stats.reserve(fixed->size() - 1);
  if (options.keep_trajectory) solution.trajectory.push_back(job.x_T);

  NoiseSampler noise = NoiseSampler::make(options.seeds, options.generator);
  StepContext ctx;
  ctx.num_steps = fixed ? static_cast<int64_t>(fixed->size()) - 1 : -1;
  ctx.grid = fixed;
  ctx.noise = &noise;
  ctx.wants_error = options.full_evaluations || controller.requires_error_estimate();

  std::optional<Report> held;
  auto report = [&](const Report& r) {
    if (options.callback) options.callback(StepInfo{r.index, ctx.num_steps, r.t, r.t_next, r.x, r.x0, r.nfe});
  };

  at::Tensor x = job.x_T;
  at::Tensor x0_prev;  // x̂_0 of the previous accepted step
  SolverState state = stepper.init(x);
  ControlProposal first = controller.start(ControlStart{schedule, x, t_start, t_end, error_order});
  ControllerState cstate = std::move(first.state);
  double t = t_start;
  double t_next = first.t_next;
  int64_t rejected_here = 0;
  int64_t nfe_here = 0;

  while (t > t_end) {
    check_interrupt();  // Ctrl-C between steps (core/interrupt.h)
    const int64_t attempts = solution.accepted + solution.rejected;
    FEWSTEP_CHECK(attempts < controller.max_steps(), "sample: reached max_steps = ", controller.max_steps(),
                  " attempted steps (", solution.accepted, " accepted, ", solution.rejected, " rejected) at t = ", t,
                  " of [", t_start, " -> ", t_end, "] with solver '", traits.name, "' and ", controller.describe(),
                  "; raise max_steps or loosen rtol/atol");
    if (!(t_next > t_end)) t_next = t_end;  // land exactly on t_end, whatever the controller proposed
    FEWSTEP_CHECK(t_next < t, "sample: the step controller made no progress at t = ", t, " (proposed t_next = ",
                  t_next, "; step size underflow); ", controller.describe(), " — loosen rtol/atol or set dt_min");

    ctx.index = solution.accepted;
    const int64_t nfe_before = evaluator.nfe();
    // The σ = 0 marker of a fixed grid: one evaluation whose x̂_0 is the result (solvers/stepper.h).
    StepResult result = fixed && t_next == 0.0 && t_end == 0.0 ? step_to_zero(evaluator, x, t, state)
                                                                : stepper.step(evaluator, x, t, t_next, state, ctx);
    nfe_here += evaluator.nfe() - nfe_before;
    FEWSTEP_CHECK(!controller.requires_error_estimate() || (result.error && result.error->defined()),
                  "sample: solver '", traits.name, "' declares an error estimate but returned none at t = ", t);
    const at::Tensor* error = result.error ? &*result.error : nullptr;
    ControlInput input{schedule, t, t_next, t_start, t_end, x, result.x, result.x0,
                       x0_prev.defined() ? &x0_prev : nullptr, error, error_order, solution.accepted,
                       solution.rejected};
    ControlDecision decision = controller.decide(input, std::move(cstate));
    cstate = std::move(decision.state);
    if (!decision.accept) {
      // A model that returns NaN/Inf makes every attempt fail: name it at the first one rather than
      // shrinking the step until max_steps (only rejected attempts pay for this check).
      if (result.x0.defined())
        FEWSTEP_CHECK(all_finite(result.x0), "sample: the model returned non-finite values (NaN/Inf) in x̂_0 at step ",
                      solution.accepted, " (t = ", t, " -> ", t_next, "): ", first_non_finite(result.x0));
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
    // A corrector revised the value at t (the previous step's end): report that one.
    if (result.revised_start && index > 0) {
      if (options.keep_trajectory) solution.trajectory.back() = *result.revised_start;
      if (held) held->x = *result.revised_start;
    }
    if (options.keep_trajectory) solution.trajectory.push_back(x);
    if (held) report(*held);
    held.reset();
    Report now{index, t, t_next, x, result.x0, evaluator.nfe()};
    if (traits.revises_start) {
      held = std::move(now);
    } else {
      report(now);
    }
    nfe_here = 0;
    rejected_here = 0;
    t = t_next;
    t_next = decision.t_next;
  }
  if (held) report(*held);
  if (options.denoise_to_zero) {
    x = evaluator(x, t_end, Needs::X0).x0;
    if (options.check_finite) check_finite(x, solution.accepted, 0.0);
  }
  solution.x = x;
  solution.nfe = evaluator.nfe();
  solution.steps = solution.accepted;
  return solution;
}

}  // namespace

Solution ResolvedSample::run() const {
  FEWSTEP_CHECK_VALUE(model && stepper && controller && x_T.defined(), "ResolvedSample::run: not resolved (use "
                      "resolve(request))");
  Solution solution;
  if (options.inference_mode) {
    c10::InferenceMode guard;
    solution = drive(*this);
  } else {
    solution = drive(*this);
  }
  solution.tuned_grid = tuned_grid != nullptr;
  return solution;
}

Solution sample(const SampleRequest& request) { return resolve(request).run(); }

}  // namespace fewstep
