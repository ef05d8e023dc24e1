/// @file solvers/stepper.h
/// @brief The stepper interface: explicit state in, explicit state out (diffrax-style).
///
/// A stepper advances x from time s to time t < s. It holds no mutable state: whatever it
/// must remember between steps (previous x̂_0 of a multistep method, ...) lives in a
/// `SolverState` value that the driver passes in and receives back. All model calls go
/// through `ModelEvaluator`, which counts them, so the reported NFE is exact.
/// Steps use only ATen ops on tensors built from x's options: no host sync, any device/dtype.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/core/noise.h"

namespace fewstep {

/// What a stepper declares about itself; read by the registry, tests and benchmarks.
struct StepperTraits {
  std::string name;
  int order = 1;                    ///< global convergence order on smooth problems
  int nfe_per_step = 1;             ///< model evaluations per step (multistep: after warm-up)
  bool stochastic = false;          ///< draws noise (needs a generator for reproducibility)
  bool has_error_estimate = false;  ///< fills StepResult::error (embedded pair)
  bool multistep = false;           ///< reuses evaluations from earlier steps
  std::string summary;              ///< one line, with the paper it implements
  std::vector<std::string> options; ///< accepted option keys
};

/// Counts and forwards model calls. One per sampling run.
class ModelEvaluator {
 public:
  explicit ModelEvaluator(const Denoiser& model) : model_(&model) {}
  DenoiserOutput operator()(const at::Tensor& x, double t) {
    ++nfe_;
    return (*model_)(x, t);
  }
  int64_t nfe() const { return nfe_; }
  const Denoiser& model() const { return *model_; }
  const NoiseSchedule& schedule() const { return model_->schedule_ref(); }

 private:
  const Denoiser* model_;
  int64_t nfe_ = 0;
};

/// One remembered model evaluation.
struct HistoryEntry {
  double t;
  at::Tensor x0;
  at::Tensor eps;
};

/// Everything a stepper carries from one step to the next. Plain value.
struct SolverState {
  std::vector<HistoryEntry> history;  ///< most recent last; the stepper trims it
  int64_t steps_taken = 0;
  /// Stepper-specific tensors carried to the next step, e.g. UniPC's start point x_{i−1} of
  /// the previous step, from which its corrector re-integrates once ε̂ at x_i is known.
  std::vector<at::Tensor> carry;
  /// Order the previous step used (0 before the first step); UniPC's corrector matches it.
  int64_t last_order = 0;
};

/// Where a step sits in the run. For a fixed grid, `index` is the step number and `grid`
/// the whole grid (num_steps = grid.size() − 1); adaptive drivers pass num_steps = −1.
struct StepContext {
  int64_t index = 0;
  int64_t num_steps = -1;
  const std::vector<double>* grid = nullptr;
  NoiseSampler* noise = nullptr;  ///< set by the driver; stochastic steppers draw from it
  bool is_last() const { return num_steps >= 0 && index == num_steps - 1; }
};

struct StepResult {
  at::Tensor x;      ///< state at time t
  at::Tensor x0;     ///< the data prediction made during this step (last evaluation)
  std::optional<at::Tensor> error;  ///< embedded error estimate, same shape as x
  SolverState state;
};

/// A stepper's own plan for the convenience driver's `steps` argument: the grid to run and
/// the options to build the stepper with for it (see `Stepper::plan`).
struct StepPlan {
  std::vector<double> grid;
  Options options;
};

/// The last step of a grid that ends at the σ = 0 marker (schedules/timesteps.h, FinalSigma::Zero):
/// every first-order step from s to σ = 0 (DDIM, DPM-Solver(++), Euler in σ) lands on the x̂_0 of its
/// one evaluation at s, so the driver takes it for any stepper.
StepResult step_to_zero(ModelEvaluator& model, const at::Tensor& x, double s, SolverState state);

class Stepper {
 public:
  virtual ~Stepper() = default;
  virtual const StepperTraits& traits() const = 0;
  /// Fresh state for a run starting at x.
  virtual SolverState init(const at::Tensor& x) const;
  /// Advance x from s to t (t < s).
  virtual StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                          const StepContext& ctx) const = 0;

  /// Planning hook of `sample(model, x, name, steps, spacing, ...)`. Most steppers read `steps`
  /// as the number of grid steps and return nullopt, and the driver runs `timesteps(...)`. A
  /// stepper that reads `steps` differently returns its grid and the options to rebuild it
  /// with; the driver then runs `solver(name, plan.options)` on `plan.grid`. DPM-Solver-fast
  /// reads `steps` as the evaluation budget N and plans ⌊N/3⌋ + 1 steps with options
  /// {nfe: N}, which fix its per-step orders (the plan is then plain data: Python does the same).
  virtual std::optional<StepPlan> plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                                       std::optional<double> t_start, std::optional<double> t_end) const;
  /// Model evaluations `sample(model, x, name, steps)` spends (after `plan`), for tests and
  /// benchmarks that compare at equal cost. Default steps · nfe_per_step.
  virtual int64_t nfe_for_steps(int64_t steps) const;
};

}  // namespace fewstep
