#include "fewstep/control/controller.h"

#include <algorithm>

#include "fewstep/core/check.h"

namespace fewstep {

StepVariable parse_step_variable(const std::string& name) {
  if (name == "logsnr") return StepVariable::LogSNR;
  if (name == "time") return StepVariable::Time;
  FEWSTEP_CHECK_VALUE(false, "step_variable must be 'logsnr' or 'time', got '", name, "'");
  throw;  // unreachable
}

std::string to_string(StepVariable variable) { return variable == StepVariable::LogSNR ? "logsnr" : "time"; }

double step_coordinate(const NoiseSchedule& schedule, StepVariable variable, double t) {
  return variable == StepVariable::LogSNR ? schedule.lambda(t) : -t;
}

double time_of_step_coordinate(const NoiseSchedule& schedule, StepVariable variable, double u, double t_lo,
                               double t_hi) {
  const double t = variable == StepVariable::LogSNR ? schedule.t_of_lambda(u) : -u;
  return std::clamp(t, t_lo, t_hi);
}

}  // namespace fewstep
