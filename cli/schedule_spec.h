// Noise schedules as JSON specs: how `fewstep train` records its schedule in the model's sidecar
// and how `fewstep sample` rebuilds the same schedule from it (or from --schedule).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"

namespace fewstep::cli {

/// Names accepted by --schedule.
const std::vector<std::string>& schedule_names();
/// The spec of `name` with its default parameters, e.g. {"name": "vp_linear", "beta_min": 0.1,
/// "beta_max": 20, "t_min": 0.001, "t_max": 1}. UsageError naming `flag` for an unknown name.
nlohmann::json default_schedule_spec(const std::string& name, const std::string& flag = "--schedule");
/// Builds the schedule a spec describes (missing parameters take their defaults). UsageError naming
/// `source` (a flag or a file) when the name or a parameter is invalid.
SchedulePtr make_schedule(const nlohmann::json& spec, const std::string& source);

}  // namespace fewstep::cli
