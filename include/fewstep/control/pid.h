/// @file control/pid.h
/// @brief PID step-size control (Söderlind 2003, "Digital filters in adaptive time-stepping", in diffrax's form)
///        of an embedded error estimate, as in DPM-Solver's adaptive solver (Lu et al. 2022, arXiv 2206.00927, §4).
///
/// Error norm of an attempt x → x_next with embedded estimate `err` (shape of x, batch first):
///     E = max_b RMS_{i ∈ sample b} ( err_i / (atol + rtol · max(|x_i|, |x_next,i|)) ).
/// The RMS runs over all non-batch dims of each sample; the max over the batch is taken because a
/// batch steps together (one step sequence, one model call per stage for all samples), so the
/// least accurate sample sets the step. Reading E is the driver's one host sync per attempt.
/// (DPM-Solver's official code scales by max(atol, rtol·max(|x_low|, |x_low,prev|)); the sum form
/// used here is HNW §II.4's and diffrax's and differs from it by at most a factor 2.)
///
/// Decision: accept iff E ≤ 1 (or the attempt was made at dt_min). The next step, in the step
/// variable u (λ by default — monotone, and what DPM-Solver uses — or t), is h_next = h · factor with
///     factor = safety · (1/E_n)^{β1/k} · (1/E_{n−1})^{β2/k} · (1/E_{n−2})^{β3/k},
///     β1 = pcoeff + icoeff + dcoeff,   β2 = −(pcoeff + 2·dcoeff),   β3 = dcoeff,
/// where E_{n−1}, E_{n−2} are the errors of the two previous *accepted* steps (1 before there are
/// any) and k is the order of the local error estimate (for an embedded pair p(p−1), k = p: the
/// lower-order solution's local error is O(h^p)). Special cases: I control (pcoeff = dcoeff = 0,
/// icoeff = 1; the default) is the classic h·safety·E^{−1/k} used by DPM-Solver (θ = 0.9); PI is
/// dcoeff = 0. The factor is clipped to [factor_min, factor_max] after an accepted attempt and to
/// [factor_min, safety] after a rejected one (a rejected step must shrink); then h_next is clipped to
/// [dt_min, dt_max]. The step that would end within 1% of the end is stretched to land on t_end.
///
/// ControllerState layout: scalars = {1/E_{n−1}, 1/E_{n−2}, at_dt_min (0 or 1)}.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>

#include "fewstep/control/controller.h"

namespace fewstep {

/// The scaled error norm E above (max over the batch of per-sample RMS). One host sync.
double scaled_error_norm(const at::Tensor& error, const at::Tensor& x, const at::Tensor& x_next, double rtol,
                         double atol);

/// Everything but the tolerances, with documented defaults (diffrax's, and DPM-Solver's h_init).
struct PIDOptions {
  double pcoeff = 0.0;  ///< proportional coefficient
  double icoeff = 1.0;  ///< integral coefficient
  double dcoeff = 0.0;  ///< derivative coefficient
  double safety = 0.9;  ///< DPM-Solver's θ
  double factor_min = 0.2;   ///< smallest step ratio h_next/h (0 < factor_min ≤ 1)
  double factor_max = 10.0;  ///< largest step ratio after an accepted step (≥ 1)
  /// First step in the step variable; 0 = DPM-Solver's h_init = 0.05 in λ (for `Time`: the t-step
  /// from t_start that spans 0.05 in λ).
  double first_step = 0.0;
  /// Smallest step in the step variable; an attempt at dt_min is accepted whatever its error
  /// (diffrax's force_dtmin). 0 = none.
  double dt_min = 0.0;
  double dt_max = std::numeric_limits<double>::infinity();  ///< largest step in the step variable
  int64_t max_steps = 4096;  ///< attempts (accepted + rejected) per run
  StepVariable step_variable = StepVariable::LogSNR;
  int error_order = 0;  ///< k; 0 = the stepper's (its traits.order)
};

class PIDController final : public StepController {
 public:
  /// rtol ≥ 0 and atol > 0 are required (no silent tolerances); ValueError on any invalid setting.
  PIDController(double rtol, double atol, PIDOptions options = {});

  std::string describe() const override;
  bool requires_error_estimate() const override { return true; }
  int64_t max_steps() const override { return options_.max_steps; }
  ControlProposal start(const ControlStart& start) const override;
  ControlDecision decide(const ControlInput& input, ControllerState state) const override;

  double rtol() const { return rtol_; }
  double atol() const { return atol_; }
  const PIDOptions& options() const { return options_; }

 private:
  int error_order(int from_stepper) const;
  double next_time(const NoiseSchedule& schedule, double t_from, double h, double t_start, double t_end) const;

  double rtol_;
  double atol_;
  PIDOptions options_;
};

}  // namespace fewstep
