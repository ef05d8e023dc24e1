#include "fewstep/schedules/schedule_spec.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"

namespace fewstep {
namespace {

using json = nlohmann::json;

json default_spec(const std::string& name, const std::string& source) {
  if (name == "vp_linear") return {{"name", name}, {"beta_min", 0.1}, {"beta_max", 20.0}, {"t_min", 1e-3}, {"t_max", 1.0}};
  if (name == "vp_cosine") return {{"name", name}, {"s", 0.008}, {"t_min", 1e-3}, {"t_max", 0.9946}};
  // DDPM's 1000 linear betas, the most common discrete checkpoint convention.
  if (name == "vp_discrete")
    return {{"name", name}, {"betas", "linear"}, {"num_train_steps", 1000}, {"beta_start", 1e-4}, {"beta_end", 0.02}};
  if (name == "ve") return {{"name", name}, {"sigma_min", 0.002}, {"sigma_max", 80.0}};
  if (name == "flow") return {{"name", name}, {"t_min", 1e-3}, {"t_max", 0.999}};
  std::string known;
  for (const auto& n : schedule_spec_names()) known += (known.empty() ? "" : ", ") + n;
  FEWSTEP_CHECK_VALUE(false, source, " '", name, "' is not a schedule (expected one of: ", known, ")");
  return {};
}

}  // namespace

const std::vector<std::string>& schedule_spec_names() {
  static const std::vector<std::string> names = {"vp_linear", "vp_cosine", "vp_discrete", "ve", "flow"};
  return names;
}

std::string default_schedule_spec(const std::string& name, const std::string& source) {
  return default_spec(name, source).dump();
}

SchedulePtr schedule_from_spec(const std::string& spec_json, const std::string& source) {
  json spec;
  try {
    spec = json::parse(spec_json);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, source, ": the schedule spec is not valid JSON: ", e.what());
  }
  FEWSTEP_CHECK_VALUE(spec.is_object() && spec.contains("name") && spec["name"].is_string(), source,
                      ": the schedule must be a JSON object with a \"name\", got ", spec.dump());
  const std::string name = spec["name"];
  if (name == "vp_discrete" && spec.contains("alphas_cumprod")) {
    for (const auto& [key, value] : spec.items())
      FEWSTEP_CHECK_VALUE(key == "name" || key == "repr" || key == "alphas_cumprod" || key == "interpolation", source,
                          ": schedule 'vp_discrete' given by its alphas_cumprod takes no parameter '", key, "'");
    try {
      // "interpolation" (absent = log_alpha): how the schedule continues between trained timesteps.
      const DiscreteInterpolation interpolation =
          spec.contains("interpolation") ? parse_discrete_interpolation(spec["interpolation"].get<std::string>())
                                         : DiscreteInterpolation::LogAlpha;
      return VPDiscrete::from_alphas_cumprod(spec["alphas_cumprod"].get<std::vector<double>>(), interpolation);
    } catch (const json::exception& e) {
      FEWSTEP_CHECK_VALUE(false, source, ": bad alphas_cumprod of schedule 'vp_discrete': ", e.what());
    } catch (const c10::ValueError& e) {
      FEWSTEP_CHECK_VALUE(false, source, ": bad schedule 'vp_discrete': ", e.what_without_backtrace());
    }
  }
  json full = default_spec(name, source);
  for (const auto& [key, value] : spec.items()) {
    if (key == "repr") continue;  // the human-readable form sidecars carry beside the parameters
    FEWSTEP_CHECK_VALUE(full.contains(key), source, ": schedule '", name, "' has no parameter '", key, "'");
    full[key] = value;
  }
  try {
    if (name == "vp_linear")
      return std::make_shared<VPLinear>(full["beta_min"].get<double>(), full["beta_max"].get<double>(),
                                        full["t_min"].get<double>(), full["t_max"].get<double>());
    if (name == "vp_cosine")
      return std::make_shared<VPCosine>(full["s"].get<double>(), full["t_min"].get<double>(),
                                        full["t_max"].get<double>());
    if (name == "vp_discrete") {
      FEWSTEP_CHECK_VALUE(full["betas"] == "linear", source, ": vp_discrete supports betas \"linear\" only, got ",
                          full["betas"].dump());
      return VPDiscrete::ddpm_linear(full["num_train_steps"].get<int64_t>(), full["beta_start"].get<double>(),
                                     full["beta_end"].get<double>());
    }
    if (name == "ve") return std::make_shared<VE>(full["sigma_min"].get<double>(), full["sigma_max"].get<double>());
    return std::make_shared<FlowMatching>(full["t_min"].get<double>(), full["t_max"].get<double>());
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, source, ": bad parameter of schedule '", name, "': ", e.what());
  } catch (const c10::ValueError& e) {
    FEWSTEP_CHECK_VALUE(false, source, ": bad schedule '", name, "': ", e.what_without_backtrace());
  }
  return nullptr;
}

std::string schedule_spec(const NoiseSchedule& schedule) {
  json spec;
  if (const auto* s = dynamic_cast<const VPLinear*>(&schedule)) {
    spec = {{"name", "vp_linear"}, {"beta_min", s->beta_min()}, {"beta_max", s->beta_max()}};
  } else if (const auto* s = dynamic_cast<const VPCosine*>(&schedule)) {
    spec = {{"name", "vp_cosine"}, {"s", s->s()}};
  } else if (const auto* s = dynamic_cast<const VPDiscrete*>(&schedule)) {
    spec = {{"name", "vp_discrete"}, {"alphas_cumprod", s->alphas_cumprod()}};
    if (s->interpolation() != DiscreteInterpolation::LogAlpha) spec["interpolation"] = to_string(s->interpolation());
  } else if (dynamic_cast<const VE*>(&schedule) != nullptr) {
    spec = {{"name", "ve"}, {"sigma_min", schedule.t_min()}, {"sigma_max", schedule.t_max()}};
  } else if (dynamic_cast<const FlowMatching*>(&schedule) != nullptr) {
    spec = {{"name", "flow"}};
  } else {
    FEWSTEP_CHECK_VALUE(false, "schedule_spec: ", schedule.repr(), " is not one of the families a spec can name (",
                        "vp_linear, vp_cosine, vp_discrete, ve, flow)");
  }
  if (spec["name"] != "vp_discrete" && spec["name"] != "ve") {
    spec["t_min"] = schedule.t_min();
    spec["t_max"] = schedule.t_max();
  }
  return spec.dump();
}

}  // namespace fewstep
