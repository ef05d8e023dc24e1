/// @file control/controller.h
/// @brief The step-size controller slot: where an adaptive run's next time comes from (docs/design.md §2 `control`).
///
/// A `StepController` decides, after every step attempt, whether to accept it and where the next
/// attempt should end. It is kept apart from the steppers (diffrax's `PIDController` vs. its
/// solvers): a stepper only advances x from s to t and may report an embedded error estimate; the
/// controller turns that into the step sequence. The same slot takes
///  - `PIDController` (control/pid.h): I/PI/PID control of an embedded error estimate
///    (DPM-Solver's adaptive algorithm, Lu et al. 2022, arXiv 2206.00927, §4 / App. C);
///  - a learned step-size network (micro-distillation): h_φ predicts the next Δt from
///    (x_t, t, e_t) with e_t = x̂_0 − x̂_0,prev the change of the model's data prediction since the
///    previous step — exactly the fields of `ControlInput`; it accepts every step and needs no
///    error estimate (`requires_error_estimate() == false`).
/// A fixed grid is a controller too (`GridController`, control/grid.h): fixed grids and adaptive step
/// control run through one loop (sample/request.h).
///
/// Contract (what the sampling loop of sample/request.h relies on, and what every controller must honour):
///  - A controller object is immutable during a run; everything it remembers between attempts
///    lives in the `ControllerState` value that the driver passes in and receives back (like
///    `SolverState`). Running the same controller on two batches at once is therefore safe.
///  - `start` is called once, before the first evaluation, and proposes the end time of the first
///    attempt. `decide` is called after every attempt (accepted or not) with the attempt's data.
///  - Proposed times must lie strictly below the current time (in the direction of t_end); the
///    driver clips them to land exactly on t_end and raises if a controller makes no progress.
///  - On rejection the driver discards the attempt (state, x and the stepper's state stay where
///    they were) and retries from the same t to the newly proposed time. Evaluations spent on
///    rejected attempts are counted in the run's NFE.
///  - `max_steps()` bounds the number of attempts (accepted + rejected); the driver raises an
///    error naming it, the time reached and `describe()`.
///  - A controller may read tensors (and thereby synchronise with the device once per attempt,
///    e.g. to read an error norm); it must not modify them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"

namespace fewstep {

/// The variable in which a controller measures step sizes. Both are monotone in t.
enum class StepVariable {
  LogSNR,  ///< half log-SNR λ = log(α/σ), increasing as t decreases (DPM-Solver's choice)
  Time,    ///< t itself (steps are t − t_next > 0)
};
/// "logsnr" or "time" (ValueError otherwise).
StepVariable parse_step_variable(const std::string& name);
std::string to_string(StepVariable variable);

/// u(t): the step variable as an increasing function along the solve (λ(t), or −t).
double step_coordinate(const NoiseSchedule& schedule, StepVariable variable, double t);
/// The inverse of `step_coordinate`, clamped to [t_lo, t_hi] against round-off.
double time_of_step_coordinate(const NoiseSchedule& schedule, StepVariable variable, double u, double t_lo,
                               double t_hi);

/// Everything a controller carries between attempts. A plain value; its layout is the
/// controller's own (documented by each controller), so new controllers need no new fields.
struct ControllerState {
  std::vector<double> scalars;     ///< e.g. PID: inverse scaled errors of the last accepted steps
  std::vector<at::Tensor> tensors; ///< e.g. a learned controller's recurrent memory
};

/// What a controller sees when a run starts (before any model evaluation).
struct ControlStart {
  const NoiseSchedule& schedule;
  const at::Tensor& x;  ///< x at t_start
  double t_start;
  double t_end;
  int error_order;       ///< order k of the stepper's local error estimate (error ∝ h^k); 0 if none
};

/// What a controller sees after an attempt from `t` to `t_next`.
struct ControlInput {
  const NoiseSchedule& schedule;
  double t;       ///< where the attempt started (the current accepted time)
  double t_next;  ///< where it ended (the attempted step is t → t_next)
  double t_start; ///< the run's start and end
  double t_end;
  const at::Tensor& x;          ///< state at t
  const at::Tensor& x_next;     ///< the attempt's (higher-order) state at t_next
  const at::Tensor& x0;         ///< the attempt's data prediction x̂_0 (its last evaluation)
  const at::Tensor* x0_prev;    ///< x̂_0 of the previous accepted step; nullptr before the first acceptance
  const at::Tensor* error;      ///< embedded error estimate x_high − x_low, shape of x; nullptr if none
  int error_order;              ///< as in ControlStart
  int64_t accepted;             ///< attempts accepted so far (this one not included)
  int64_t rejected;             ///< attempts rejected so far (this one not included)
};

/// The first proposal of a run.
struct ControlProposal {
  double t_next;          ///< end time of the first attempt (t_end ≤ t_next < t_start)
  ControllerState state;
};

/// A controller's verdict on one attempt.
struct ControlDecision {
  bool accept;                 ///< keep the attempt (x ← x_next, t ← t_next)
  double t_next;               ///< end time of the next attempt, from the new current time
                               ///< (input.t_next if accepted, input.t if rejected); ignored when
                               ///< the accepted attempt reached t_end
  double error_norm = std::numeric_limits<double>::quiet_NaN();  ///< the scaled error used, if any
  ControllerState state;
};

class StepController {
 public:
  virtual ~StepController() = default;
  /// One line with the settings, e.g. "PIDController(rtol=0.001, atol=0.0001, ...)"; used in errors.
  virtual std::string describe() const = 0;
  /// True if `decide` needs `ControlInput::error` (the driver then insists on a stepper with
  /// has_error_estimate and names it otherwise).
  virtual bool requires_error_estimate() const = 0;
  /// Maximum number of attempts (accepted + rejected) of one run.
  virtual int64_t max_steps() const = 0;
  /// First attempt's end time and the initial state.
  virtual ControlProposal start(const ControlStart& start) const = 0;
  /// Accept/reject the attempt and propose the next one.
  virtual ControlDecision decide(const ControlInput& input, ControllerState state) const = 0;
  /// The whole grid when the steps are fixed in advance (GridController, control/grid.h), else null.
  /// The driver then tells the steppers the number of steps and the grid (StepContext).
  virtual const std::vector<double>* fixed_grid() const { return nullptr; }
};

}  // namespace fewstep
