/// @file sample/request.h
/// @brief One sampling request: what every door (fewstep sample / eval, fs.sample, the benchmarks, the
///        C++ API) asks for, interpreted in one place (docs/sampling.md).
///
/// A `SampleRequest` says which model, from which x_T, with which solver, over which steps and with
/// which noise. `resolve` turns it into a `ResolvedSample` — the stepper (through `Stepper::plan`), the
/// step controller (a fixed grid is a `GridController`), the time range, x_T and the noise set-up —
/// and `ResolvedSample::run` runs the one sampling loop. The interfaces only fill a request and print
/// the `Solution`.
///
/// Which steps, in this order of precedence:
///  1. what the request names — at most one of `steps` (read by the stepper's plan: grid steps for
///     most, the evaluation budget for dpm_solver_fast, the learned step sizes of a micro sampler),
///     `nfe` (the step count whose cost is exactly nfe, then the plan), `timesteps` (an explicit grid)
///     or adaptive step control (`rtol`/`atol`: a PIDController, DPM-Solver's value for the one not
///     given; or a `controller`);
///     With steps/nfe, a model file's tuned grid for that solver, options and NFE (model_defaults.
///     tuned_grids, grids/optimize.h) replaces the generated one unless use_tuned_grid is false or the
///     request sets t_start/t_end/steps_offset/final_sigma;
///  2. a model file's own sampler (`model_defaults`: a distilled student samples on its own grid with
///     its own solver) when the request names no steps; a named solver samples that grid too (e.g.
///     ddim for a progressive student whose file records a multistep solver), unless it is adaptive by
///     default; a request that names steps but no solver still uses the file's own solver (ddim, a
///     measured multistep solver or consistency), dpmpp_2m only without one;
///  3. a solver's own default (traits.adaptive_by_default: dpm_adaptive runs adaptively with
///     DPM-Solver's tolerances);
///  4. `fallback_steps` (the CLI's --steps default) if > 0; otherwise a ValueError says what to pass.
/// Bad requests are ValueErrors naming the field (with the names fs.sample uses as keywords).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/control/controller.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// DPM-Solver's adaptive tolerances (Lu et al. 2022, arXiv 2206.00927, §4; atol ≈ 1/128 for data in
/// [−1, 1]): the PID controller's defaults for a tolerance the request leaves out.
constexpr double kDpmSolverRtol = 0.05;
constexpr double kDpmSolverAtol = 0.0078;

/// A model file's own sampler (models/model_file.h: ModelFile::solver and ::timesteps).
struct SamplerDefaults {
  std::string solver;
  std::vector<double> timesteps;  ///< empty: the file has no sampler of its own
  /// The file's optimised grids (ModelFile::info.tuned_grids; grids/optimize.h): a request with
  /// steps/nfe for a solver, options and NFE one of them was fitted for samples on it (see resolve).
  std::vector<ModelTunedGrid> tuned_grids;
  /// The file's sample shape, without the batch (ModelFile::sample_shape); empty: not checked. When
  /// set, x_T must have one more dimension and the same leading size (channels of an image, the
  /// coordinates of a vector); an image's height and width may differ, as a convolutional net allows.
  std::vector<int64_t> sample_shape;
};

struct SampleRequest {
  /// The model. Required.
  std::shared_ptr<const Denoiser> model;

  /// Where the run starts: x_T [batch, ...] at t_start, whose dtype and device the run keeps ...
  at::Tensor x_T;
  /// ... or, when x_T is undefined, the shape of one sample: x_T = randn_per_sample(sample_shape,
  /// options.seeds, x_T_options) (core/noise.h), which needs per-sample seeds.
  std::vector<int64_t> sample_shape;
  at::TensorOptions x_T_options = at::TensorOptions().dtype(at::kFloat);

  /// The solver: a registered name ("" = the model file's solver, else "dpmpp_2m") with options ...
  std::string solver;
  Options solver_options;
  /// ... or a stepper object (instead of a name; e.g. one built outside the registry).
  std::shared_ptr<const Stepper> stepper;

  /// The steps: at most one of steps, nfe, timesteps, adaptive control (rtol/atol or controller).
  std::optional<int64_t> steps;
  std::optional<int64_t> nfe;
  std::vector<double> timesteps;
  std::optional<double> rtol, atol;
  std::shared_ptr<const StepController> controller;
  /// Grid spacing for steps/nfe; the time range for steps/nfe/adaptive (default: the schedule's).
  Spacing spacing = Spacing::LogSNR;
  std::optional<double> t_start, t_end;
  /// With steps/nfe: diffusers' steps_offset of the leading spacings, and how the grid ends (Zero: the
  /// σ = 0 marker, a last step that returns the previous evaluation's x̂_0; schedules/timesteps.h).
  /// An explicit `timesteps` grid may end with the marker too; adaptive runs take neither.
  std::optional<int64_t> steps_offset;
  FinalSigma final_sigma = FinalSigma::Min;

  /// A model file's own sampler, used when the request names neither steps nor a solver.
  SamplerDefaults model_defaults;
  /// With steps/nfe and none of spacing-setting fields t_start/t_end/steps_offset/final_sigma: sample on
  /// the model file's tuned grid for this solver, options and NFE when it has one (model_defaults.
  /// tuned_grids). False when the caller chose a spacing (`--spacing`, `--grid default`).
  bool use_tuned_grid = true;
  /// Steps when nothing else says how to step (0: a ValueError instead).
  int64_t fallback_steps = 0;

  /// Noise (generator or per-sample seeds), callback, trajectory, finite checks, denoise_to_zero.
  SampleOptions options;
};

/// A request with every choice made.
struct ResolvedSample {
  std::shared_ptr<const Denoiser> model;
  at::Tensor x_T;
  std::string solver;  ///< the solver's name, for messages
  std::shared_ptr<const Stepper> stepper;
  /// Chooses the steps; a GridController (control/grid.h) for a fixed grid.
  std::shared_ptr<const StepController> controller;
  double t_start = 0.0, t_end = 0.0;
  std::vector<double> grid;  ///< the fixed grid (empty when the controller chooses the steps)
  /// The model file's tuned grid that `grid` is (null otherwise), for the interfaces to say so.
  std::shared_ptr<const ModelTunedGrid> tuned_grid;
  /// True when `grid` is the model file's own sampler grid (model_defaults.timesteps), for the same.
  bool own_grid = false;
  SampleOptions options;

  bool adaptive() const { return grid.empty(); }
  /// Runs the one sampling loop (under inference mode unless options.inference_mode is false).
  Solution run() const;
};

/// The standard deviation of the prior at t_start that x_T drawn from seeds is scaled by: σ(t_start)
/// for VE/EDM schedules (x_T ~ N(0, σ_max² I), Karras et al. 2022, arXiv 2206.00364, Algorithm 1),
/// 1 for VP and flow matching (whose prior is N(0, I)). A request's drawn x_T and a cached teacher
/// solve's (sample/teacher_cache.h) both use it; an x_T given by the caller is used as given.
double prior_scale(const NoiseSchedule& schedule, double t_start);

/// Interprets a request (see the file comment); ValueError naming the field for a bad one.
ResolvedSample resolve(const SampleRequest& request);
/// resolve(request).run().
Solution sample(const SampleRequest& request);

/// A non-owning shared pointer to an object the caller keeps alive for the duration of a call (for
/// request fields filled from references).
template <typename T>
std::shared_ptr<const T> borrowed(const T& object) {
  return std::shared_ptr<const T>(std::shared_ptr<const T>(), &object);
}

}  // namespace fewstep
