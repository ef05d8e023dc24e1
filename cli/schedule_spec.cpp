#include "schedule_spec.h"

#include <c10/util/Exception.h>

#include "command.h"
#include "fewstep/schedules/schedule_spec.h"

namespace fewstep::cli {

// The library owns the specs (schedules/schedule_spec.h); the CLI turns its ValueErrors, which
// already name the flag or file, into usage errors (exit code 2).

const std::vector<std::string>& schedule_names() { return schedule_spec_names(); }

nlohmann::json default_schedule_spec(const std::string& name, const std::string& flag) {
  try {
    return nlohmann::json::parse(fewstep::default_schedule_spec(name, flag));
  } catch (const c10::ValueError& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

SchedulePtr make_schedule(const nlohmann::json& spec, const std::string& source) {
  try {
    return schedule_from_spec(spec.dump(), source);
  } catch (const c10::ValueError& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

}  // namespace fewstep::cli
