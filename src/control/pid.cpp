#include "fewstep/control/pid.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {
constexpr double kDefaultFirstStepLambda = 0.05;  // DPM-Solver's h_init (in λ)
constexpr double kStretch = 1.01;                 // a step ending within 1% of the end lands on it (HNW)

// Scaled errors of ∞/0 (an exact step, or a blown-up one) would poison the PI/PID history for
// the next two steps; diffrax stores a neutral 1 instead, and so do we.
double history_value(double inv) { return std::isfinite(inv) && inv > 0 ? inv : 1.0; }
}  // namespace

double scaled_error_norm(const at::Tensor& error, const at::Tensor& x, const at::Tensor& x_next, double rtol,
                         double atol) {
  FEWSTEP_CHECK_VALUE(error.sizes() == x.sizes() && x_next.sizes() == x.sizes(),
                      "scaled_error_norm: error, x and x_next must have one shape, got ", error.sizes(), ", ",
                      x.sizes(), ", ", x_next.sizes());
  FEWSTEP_CHECK_VALUE(x.dim() >= 1 && x.size(0) >= 1, "scaled_error_norm: x must have a batch dimension, got shape ",
                      x.sizes());
  FEWSTEP_CHECK_VALUE(std::isfinite(rtol) && rtol >= 0, "scaled_error_norm: rtol must be >= 0 and finite, got ", rtol);
  FEWSTEP_CHECK_VALUE(std::isfinite(atol) && atol >= 0, "scaled_error_norm: atol must be >= 0 and finite, got ", atol);
  FEWSTEP_CHECK_VALUE(rtol > 0 || atol > 0, "scaled_error_norm: rtol and atol must not both be 0");
  auto scale = at::maximum(x.abs(), x_next.abs()) * rtol + atol;
  auto w = (error / scale).reshape({x.size(0), -1});
  // Half precision would overflow the squares; accumulate in at least float32.
  if (w.scalar_type() == at::kHalf || w.scalar_type() == at::kBFloat16) w = w.to(at::kFloat);
  return w.square().mean(1).sqrt().max().item<double>();
}

PIDController::PIDController(double rtol, double atol, PIDOptions options)
    : rtol_(rtol), atol_(atol), options_(options) {
  const auto& o = options_;
  FEWSTEP_CHECK_VALUE(std::isfinite(rtol) && rtol >= 0, "PIDController: rtol must be >= 0, got ", rtol);
  FEWSTEP_CHECK_VALUE(std::isfinite(atol) && atol > 0,
                      "PIDController: atol must be > 0 (it keeps the error scale positive where x = 0), got ", atol);
  for (auto [name, c] : {std::pair<const char*, double>{"pcoeff", o.pcoeff}, {"icoeff", o.icoeff}, {"dcoeff", o.dcoeff}})
    FEWSTEP_CHECK_VALUE(std::isfinite(c), "PIDController: ", name, " must be finite, got ", c);
  FEWSTEP_CHECK_VALUE(o.pcoeff + o.icoeff + o.dcoeff > 0,
                      "PIDController: pcoeff + icoeff + dcoeff must be > 0 (otherwise the current error does not ",
                      "change the step), got ", o.pcoeff, " + ", o.icoeff, " + ", o.dcoeff);
  FEWSTEP_CHECK_VALUE(o.safety > 0 && o.safety <= 1, "PIDController: safety must be in (0, 1], got ", o.safety);
  FEWSTEP_CHECK_VALUE(o.factor_min > 0 && o.factor_min <= 1, "PIDController: factor_min must be in (0, 1], got ",
                      o.factor_min);
  FEWSTEP_CHECK_VALUE(o.factor_max >= 1, "PIDController: factor_max must be >= 1, got ", o.factor_max);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.first_step) && o.first_step >= 0,
                      "PIDController: first_step must be >= 0 (0 = DPM-Solver's 0.05 in λ), got ", o.first_step);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.dt_min) && o.dt_min >= 0, "PIDController: dt_min must be >= 0, got ",
                      o.dt_min);
  FEWSTEP_CHECK_VALUE(o.dt_max > o.dt_min, "PIDController: dt_max must be greater than dt_min, got dt_max = ",
                      o.dt_max, ", dt_min = ", o.dt_min);
  FEWSTEP_CHECK_VALUE(o.max_steps > 0, "PIDController: max_steps must be > 0, got ", o.max_steps);
  FEWSTEP_CHECK_VALUE(o.error_order >= 0, "PIDController: error_order must be >= 0 (0 = the stepper's order), got ",
                      o.error_order);
}

std::string PIDController::describe() const {
  const auto& o = options_;
  std::ostringstream s;
  s << "PIDController(rtol=" << rtol_ << ", atol=" << atol_ << ", pcoeff=" << o.pcoeff << ", icoeff=" << o.icoeff
    << ", dcoeff=" << o.dcoeff << ", safety=" << o.safety << ", factor_min=" << o.factor_min
    << ", factor_max=" << o.factor_max << ", first_step=" << o.first_step << ", dt_min=" << o.dt_min
    << ", dt_max=" << o.dt_max << ", max_steps=" << o.max_steps << ", step_variable='" << to_string(o.step_variable)
    << "', error_order=" << o.error_order << ")";
  return s.str();
}

int PIDController::error_order(int from_stepper) const {
  const int k = options_.error_order > 0 ? options_.error_order : from_stepper;
  FEWSTEP_CHECK_VALUE(k > 0, "PIDController: the stepper declares no error order; pass error_order=k (the order ",
                      "of its local error estimate, e.g. the higher order of an embedded pair)");
  return k;
}

// End of the step of size h (in u) from t_from, landing exactly on t_end when it would end within 1%.
double PIDController::next_time(const NoiseSchedule& schedule, double t_from, double h, double t_start,
                                double t_end) const {
  const auto v = options_.step_variable;
  const double u_from = step_coordinate(schedule, v, t_from);
  const double u_end = step_coordinate(schedule, v, t_end);
  if (u_from + kStretch * h >= u_end) return t_end;
  return time_of_step_coordinate(schedule, v, u_from + h, t_end, t_start);
}

ControlProposal PIDController::start(const ControlStart& start) const {
  const auto& schedule = start.schedule;
  double h = options_.first_step;
  if (h == 0) {
    h = kDefaultFirstStepLambda;
    if (options_.step_variable == StepVariable::Time) {
      const double lam = schedule.lambda(start.t_start) + kDefaultFirstStepLambda;
      h = start.t_start - std::clamp(schedule.t_of_lambda(lam), start.t_end, start.t_start);
    }
  }
  h = std::clamp(h, options_.dt_min, options_.dt_max);
  const bool at_dt_min = options_.dt_min > 0 && h <= options_.dt_min;
  return ControlProposal{next_time(schedule, start.t_start, h, start.t_start, start.t_end),
                         ControllerState{{1.0, 1.0, at_dt_min ? 1.0 : 0.0}, {}}};
}

ControlDecision PIDController::decide(const ControlInput& in, ControllerState state) const {
  FEWSTEP_CHECK_VALUE(in.error != nullptr && in.error->defined(),
                      "PIDController needs the stepper's embedded error estimate, and the step from t = ", in.t,
                      " gave none");
  if (state.scalars.size() != 3) state.scalars = {1.0, 1.0, 0.0};
  const auto& o = options_;
  const int k = error_order(in.error_order);
  const auto v = o.step_variable;
  const double h = step_coordinate(in.schedule, v, in.t_next) - step_coordinate(in.schedule, v, in.t);
  const bool forced = state.scalars[2] != 0;

  const double e = scaled_error_norm(*in.error, in.x, in.x_next, rtol_, atol_);
  const bool finite = std::isfinite(e);
  FEWSTEP_CHECK(finite || !forced, "PIDController: the error estimate is not finite (NaN/Inf) at t = ", in.t,
                " even at dt_min = ", o.dt_min, "; the model or the state has diverged");
  const bool accept = finite && (e <= 1.0 || forced);

  double factor;
  if (!finite) {
    factor = o.factor_min;
  } else if (e == 0) {
    factor = accept ? o.factor_max : o.safety;
  } else {
    const double inv = 1.0 / e;
    const double b1 = (o.pcoeff + o.icoeff + o.dcoeff) / k;
    const double b2 = -(o.pcoeff + 2 * o.dcoeff) / k;
    const double b3 = o.dcoeff / k;
    factor = o.safety * std::pow(inv, b1);
    if (b2 != 0) factor *= std::pow(state.scalars[0], b2);
    if (b3 != 0) factor *= std::pow(state.scalars[1], b3);
    factor = std::clamp(factor, o.factor_min, accept ? o.factor_max : o.safety);
  }

  double h_next = std::min(h * factor, o.dt_max);
  const bool at_dt_min = o.dt_min > 0 && h_next <= o.dt_min;
  h_next = std::max(h_next, o.dt_min);

  if (accept) {
    state.scalars[1] = state.scalars[0];
    state.scalars[0] = history_value(1.0 / e);
  }
  state.scalars[2] = at_dt_min ? 1.0 : 0.0;
  const double t_from = accept ? in.t_next : in.t;
  const double t_next = t_from <= in.t_end ? in.t_end : next_time(in.schedule, t_from, h_next, in.t_start, in.t_end);
  return ControlDecision{accept, t_next, e, std::move(state)};
}

}  // namespace fewstep
