/// @file solvers/stepper.h
/// @brief The stepper contract: explicit state in, explicit state out (diffrax-style).
///
/// A stepper advances x from time s to time t < s. It holds no mutable state: whatever it must
/// remember between steps lives in a `SolverState` value that the driver passes in and receives back
/// — the shared `history` of model evaluations that multistep methods reuse, and `own`, a value of the
/// stepper's own type that no one else reads (UniPC keeps its corrector's start point there). Counters
/// belong to the driver: `StepContext::index` is the number of steps accepted before this one. All
/// model calls go through `ModelEvaluator`, which counts them, so the reported NFE is exact. Steps use
/// only ATen ops on tensors built from x's options: no host sync, any device/dtype.
///
/// Adding a stepper: its header and source in solvers/ and one line in src/solvers/registry.cpp
/// (architecture.md, "Adding things"). The contract is documented in docs/sampling.md.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <any>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/control/controller.h"
#include "fewstep/core/noise.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/timesteps.h"

namespace fewstep {

/// What a stepper declares about itself; read by the registry, the driver, tests and benchmarks.
/// Built by name: `StepperTraits::named("heun", "Heun ... (Karras et al. 2022, Alg. 1)").with_order(2)
/// .with_nfe_per_step(2)`; every flag not set is false.
struct StepperTraits {
  std::string name;
  int order = 1;                      ///< global convergence order on smooth problems
  int nfe_per_step = 1;               ///< model evaluations per step (multistep: after warm-up)
  bool stochastic = false;            ///< draws noise (StepContext::noise)
  bool has_error_estimate = false;    ///< fills StepResult::error (embedded pair)
  bool multistep = false;             ///< reuses evaluations from earlier steps
  /// step() may return StepResult::revised_start, a corrected value of x at its start time (a
  /// corrector that needs the evaluation made there, as UniPC's); the driver then reports the
  /// corrected value in the trajectory and callback of the previous step (docs/sampling.md).
  bool revises_start = false;
  /// Sampled adaptively (PID control with DPM-Solver's tolerances) when a request names no steps,
  /// NFE budget, grid or tolerances (sample/request.h).
  bool adaptive_by_default = false;
  /// The predictions step() reads from its evaluations (models/denoiser.h): Eps or X0 lets the
  /// Denoiser skip converting a network's output into the other (one or two full passes per
  /// evaluation). StepResult::x0 may then be undefined; the loop asks for both whenever it reports
  /// x̂_0 (callbacks, adaptive controllers).
  Needs needs = Needs::Both;
  std::string summary;                ///< one line, with the paper it implements
  std::vector<std::string> options;   ///< accepted option keys

  /// Not an aggregate (a positional list of unlabelled bools would still compile): build with `named`.
  StepperTraits() {}
  static StepperTraits named(std::string name, std::string summary);
  StepperTraits& with_order(int value);
  StepperTraits& with_nfe_per_step(int value);
  StepperTraits& with_stochastic(bool value = true);
  StepperTraits& with_error_estimate(bool value = true);
  StepperTraits& with_multistep(bool value = true);
  StepperTraits& with_revised_start(bool value = true);
  StepperTraits& with_adaptive_default(bool value = true);
  StepperTraits& with_options(std::vector<std::string> keys);
  StepperTraits& with_needs(Needs value);
};

/// Counts and forwards model calls. One per sampling run. `needs` is what its calls fill by default
/// (the stepper's StepperTraits::needs, or Both); a call may ask for more.
class ModelEvaluator {
 public:
  explicit ModelEvaluator(const Denoiser& model, Needs needs = Needs::Both) : model_(&model), needs_(needs) {}
  DenoiserOutput operator()(const at::Tensor& x, double t) { return (*this)(x, t, needs_); }
  DenoiserOutput operator()(const at::Tensor& x, double t, Needs needs) {
    ++nfe_;
    return (*model_)(x, t, needs);
  }
  int64_t nfe() const { return nfe_; }
  Needs needs() const { return needs_; }
  const Denoiser& model() const { return *model_; }
  const NoiseSchedule& schedule() const { return model_->schedule_ref(); }

 private:
  const Denoiser* model_;
  Needs needs_;
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
  /// The stepper's own memory, of a type only it knows (empty until it stores one), e.g. UniPC's
  /// start point of the previous step, from which its corrector re-integrates. Read it with
  /// `std::any_cast<T>(&state.own)`.
  std::any own;
};

/// Where a step sits in the run. The driver owns these counters. On a fixed grid `index` is the
/// step number and `grid` the whole grid (num_steps = grid.size() − 1); when a controller chooses
/// the steps, num_steps = −1, grid = nullptr and index counts the steps accepted so far.
struct StepContext {
  int64_t index = 0;
  /// The loop reads StepResult::error (an adaptive controller); steppers whose error estimate is
  /// optional skip computing it otherwise.
  bool wants_error = true;
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
  /// Steppers with traits.revises_start: the corrected value of x at s (the start of this step),
  /// when this step corrected it. It replaces the previous step's reported value; x itself (and so
  /// every sample) does not depend on it.
  std::optional<at::Tensor> revised_start = std::nullopt;
};

class Stepper;

/// A stepper's own reading of a request's `steps` (see `Stepper::plan`): what to run and where.
struct StepPlan {
  std::shared_ptr<const Stepper> stepper;  ///< the stepper to run (null: the planning one)
  std::vector<double> grid;                ///< a fixed grid, or empty when `controller` chooses the steps
  std::shared_ptr<const StepController> controller;  ///< chooses the steps during the run
  std::optional<double> t_start, t_end;    ///< the controller's range (default: the request's)
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

  /// How a request's `steps` is read (sample/request.h). Most steppers read it as the number of grid
  /// steps and return nullopt; the request then runs `timesteps(schedule, steps, spacing, t_start,
  /// t_end)`. A stepper that reads it otherwise returns its plan: DPM-Solver-fast reads the budget N
  /// and plans ⌊N/3⌋ + 1 steps with the stepper {nfe: N}; a micro-distilled sampler plans its learned
  /// step-size controller under a budget of `steps` evaluations.
  virtual std::optional<StepPlan> plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                                       std::optional<double> t_start, std::optional<double> t_end) const;
  /// Model evaluations a request of `steps` spends (after `plan`), for tests and benchmarks that
  /// compare at equal cost and for NFE budgets. Default steps · nfe_per_step.
  virtual int64_t nfe_for_steps(int64_t steps) const;
};

}  // namespace fewstep
