/// @file schedules/schedule_spec.h
/// @brief Noise schedules as JSON specs, the form model sidecars record them in.
///
/// A spec is a JSON object naming the family and its parameters, for example
///   {"name": "vp_linear", "beta_min": 0.1, "beta_max": 20, "t_min": 0.001, "t_max": 1}
/// A discrete schedule is either DDPM's linear betas ({"name": "vp_discrete", "betas": "linear",
/// "num_train_steps", "beta_start", "beta_end"}) or its ᾱ_n listed ({"name": "vp_discrete",
/// "alphas_cumprod": [...]}, with "interpolation": "log_sigma" or "sigma" when it is not the default
/// log_alpha continuation between trained timesteps, schedules/schedule.h).
/// Missing parameters take the family's defaults (default_schedule_spec); unknown ones are refused,
/// so a typo in a sidecar cannot silently give another schedule. Specs travel as JSON text so that
/// this header needs no JSON library.
#pragma once

#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"

namespace fewstep {

/// The family names a spec may give: vp_linear, vp_cosine, vp_discrete, ve, flow.
const std::vector<std::string>& schedule_spec_names();

/// The spec of family `name` with its default parameters, as JSON text. ValueError naming `source`
/// (a flag, a file, an argument name) and listing the families for an unknown name.
std::string default_schedule_spec(const std::string& name, const std::string& source = "name");

/// Builds the schedule `spec_json` describes. ValueError naming `source` when the text is not a JSON
/// object with a "name", the family is unknown, a parameter is unknown or invalid.
SchedulePtr schedule_from_spec(const std::string& spec_json, const std::string& source = "spec");

/// The spec of `schedule` (JSON text, numbers with 17 significant digits): schedule_from_spec of it
/// gives a schedule with the same α and σ everywhere. A discrete schedule is written with its ᾱ_n.
std::string schedule_spec(const NoiseSchedule& schedule);

}  // namespace fewstep
