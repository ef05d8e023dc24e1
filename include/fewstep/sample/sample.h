/// @file sample/sample.h
/// @brief The sampling driver's entry points, its options and its result.
///
/// Every entry point here is a `SampleRequest` (sample/request.h) filled from its arguments: one
/// interpretation of a request and one loop for fixed grids and adaptive step control. The loop runs
/// under inference mode, follows x_T's dtype and device throughout, makes no host synchronisation
/// inside the loop on fixed grids (unless `check_finite` is on), and reports the exact number of model
/// evaluations.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/control/controller.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// What the per-step callback sees after step `index` has moved x from t to t_next.
struct StepInfo {
  int64_t index;
  int64_t num_steps;
  double t;
  double t_next;
  const at::Tensor& x;   ///< state at t_next
  const at::Tensor& x0;  ///< the step's data prediction
  int64_t nfe;           ///< evaluations so far
};
using StepCallback = std::function<void(const StepInfo&)>;

struct SampleOptions {
  /// After the last step, replace x by the model's x̂_0 at t_end (one more evaluation).
  bool denoise_to_zero = false;
  /// Check x for NaN/Inf after every step; the error names the step and time.
  /// Costs one host synchronisation per step.
  bool check_finite = false;
  /// Keep x at every grid point in Solution::trajectory (steps+1 tensors).
  bool keep_trajectory = false;
  /// Run under c10::InferenceMode (no autograd). Off when gradients must flow (trainers).
  bool inference_mode = true;
  /// Convert every evaluation into both x̂_0 and ε̂ and compute every error estimate, whatever the
  /// stepper reads (StepperTraits::needs): the cost of sampling before steppers declared their needs,
  /// for side-by-side benchmarks (fewstep-bench-speed). The samples are the same bits either way.
  bool full_evaluations = false;
  /// Called after every accepted step. With a stepper that revises its start point (UniPC's
  /// corrector, StepperTraits::revises_start) the call for step i comes once step i + 1 has corrected
  /// x at t_next, with the corrected value (the last one after the loop).
  StepCallback callback;
  /// Noise for stochastic steppers (core/noise.h): one generator for the batch ...
  std::optional<at::Generator> generator;
  /// ... or the per-sample seeds of x_T (not both): sample i's step noise comes from the stream
  /// step_noise_seed(seeds[i]), so each sample depends on its seed only and its step noise is never
  /// its x_T draw.
  std::vector<uint64_t> seeds;
};

struct StepStats {
  int64_t index;
  double t;
  double t_next;
  int64_t nfe;  ///< evaluations spent by this step (adaptive: with its rejected attempts)
  int64_t rejected = 0;  ///< adaptive driver: rejected attempts before this step was accepted
};

struct Solution {
  at::Tensor x;                       ///< final sample
  int64_t nfe = 0;                    ///< exact number of model calls
  int64_t steps = 0;                  ///< steps taken
  std::vector<double> timesteps;      ///< the grid used
  std::vector<at::Tensor> trajectory; ///< only with keep_trajectory (corrected values, see callback)
  std::vector<StepStats> stats;
  int64_t accepted = 0;                ///< accepted steps (= steps on a fixed grid)
  int64_t rejected = 0;                ///< rejected attempts (adaptive driver only)
  bool tuned_grid = false;             ///< the grid was the model file's tuned grid (sample/request.h)
};

/// Runs `stepper` on an explicit grid (validated against the model's schedule). A grid ending at
/// the σ = 0 marker 0.0 (FinalSigma::Zero, schedules/timesteps.h) ends with one evaluation at the
/// previous time whose x̂_0 is the result; the stepper sees that step counted in num_steps (its
/// lower_order_final counts it, as diffusers' schedulers do) but never the time 0.
Solution sample(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const std::vector<double>& grid,
                const SampleOptions& options = {});

/// Solver by name with options; `steps` is read by the stepper's plan (grid steps with `spacing`
/// for most; DPM-Solver-fast's evaluation budget; a micro sampler's learned step sizes).
Solution sample(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name, int64_t steps,
                Spacing spacing = Spacing::LogSNR, const Options& solver_options = {},
                const SampleOptions& options = {}, std::optional<double> t_start = std::nullopt,
                std::optional<double> t_end = std::nullopt);

/// Adaptive step control: runs `stepper` from t_start down to t_end with the step sequence chosen by
/// `controller` (control/controller.h). After every attempt s → t the controller accepts or rejects
/// it and proposes the next time; rejected attempts are discarded (x and the stepper's state stay) and
/// retried. The last step is clipped to land exactly on t_end.
///  - NFE is exact: evaluations of rejected attempts are included (Solution::nfe, and each accepted
///    step's StepStats::nfe includes the attempts rejected before it).
///  - Solution::timesteps are the accepted times (t_start … t_end), steps = accepted, plus
///    accepted/rejected counters; trajectory, callback (num_steps = −1), check_finite,
///    denoise_to_zero, generator/seeds behave as on a fixed grid.
///  - A controller that reads the error (PIDController) synchronises with the device once per
///    attempt to read its norm; a fixed grid has no such sync.
/// ValueError if the controller needs an error estimate and the stepper has none (naming it), or for
/// times outside the schedule's range; RuntimeError naming max_steps when the controller's attempt
/// budget runs out, or when a controller stops making progress.
Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper,
                         const StepController& controller, double t_start, double t_end,
                         const SampleOptions& options = {});

/// Solver by name (e.g. "dpm_adaptive", "heun_euler") with options; t_start/t_end default to the
/// schedule's range.
Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name,
                         const StepController& controller, const Options& solver_options = {},
                         const SampleOptions& options = {}, std::optional<double> t_start = std::nullopt,
                         std::optional<double> t_end = std::nullopt);

}  // namespace fewstep
