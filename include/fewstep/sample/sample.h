/// @file sample/sample.h
/// @brief The sampling driver: one entry point over any stepper and grid.
///
/// `sample(model, x_T, stepper, grid, options)` runs the stepper over the grid under
/// inference mode, follows x_T's dtype and device throughout, makes no host
/// synchronisation inside the loop (unless `check_finite` is on), and reports the exact
/// number of model evaluations.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

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
  StepCallback callback;
  /// Noise for stochastic steppers: one generator for the batch ...
  std::optional<at::Generator> generator;
  /// ... or one seed per sample (takes precedence), making each sample batch-independent.
  std::vector<uint64_t> seeds;
};

struct StepStats {
  int64_t index;
  double t;
  double t_next;
  int64_t nfe;  ///< evaluations spent by this step
};

struct Solution {
  at::Tensor x;                       ///< final sample
  int64_t nfe = 0;                    ///< exact number of model calls
  int64_t steps = 0;                  ///< steps taken
  std::vector<double> timesteps;      ///< the grid used
  std::vector<at::Tensor> trajectory; ///< only with keep_trajectory
  std::vector<StepStats> stats;
};

/// Runs `stepper` on an explicit grid (validated against the model's schedule).
Solution sample(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const std::vector<double>& grid,
                const SampleOptions& options = {});

/// Convenience: solver by name with options, grid from steps + spacing.
Solution sample(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name, int64_t steps,
                Spacing spacing = Spacing::LogSNR, const Options& solver_options = {},
                const SampleOptions& options = {}, std::optional<double> t_start = std::nullopt,
                std::optional<double> t_end = std::nullopt);

}  // namespace fewstep
