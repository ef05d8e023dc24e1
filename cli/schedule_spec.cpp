#include "schedule_spec.h"

#include <c10/util/Exception.h>

#include "command.h"

namespace fewstep::cli {

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"vp_linear", "vp_cosine", "vp_discrete", "ve", "flow"};
  return names;
}

nlohmann::json default_schedule_spec(const std::string& name, const std::string& flag) {
  if (name == "vp_linear") return {{"name", name}, {"beta_min", 0.1}, {"beta_max", 20.0}, {"t_min", 1e-3}, {"t_max", 1.0}};
  if (name == "vp_cosine") return {{"name", name}, {"s", 0.008}, {"t_min", 1e-3}, {"t_max", 0.9946}};
  // DDPM's 1000 linear betas, the most common discrete checkpoint convention.
  if (name == "vp_discrete")
    return {{"name", name}, {"betas", "linear"}, {"num_train_steps", 1000}, {"beta_start", 1e-4}, {"beta_end", 0.02}};
  if (name == "ve") return {{"name", name}, {"sigma_min", 0.002}, {"sigma_max", 80.0}};
  if (name == "flow") return {{"name", name}, {"t_min", 1e-3}, {"t_max", 0.999}};
  std::string known;
  for (const auto& n : schedule_names()) known += (known.empty() ? "" : ", ") + n;
  throw UsageError(flag + " '" + name + "' is not a schedule (expected one of: " + known + ")");
}

SchedulePtr make_schedule(const nlohmann::json& spec, const std::string& source) {
  if (!spec.is_object() || !spec.contains("name") || !spec["name"].is_string())
    throw UsageError(source + ": the schedule must be a JSON object with a \"name\"");
  const std::string name = spec["name"];
  nlohmann::json full = default_schedule_spec(name, source);
  for (const auto& [key, value] : spec.items()) {
    if (key == "repr") continue;
    if (!full.contains(key)) throw UsageError(source + ": schedule '" + name + "' has no parameter '" + key + "'");
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
      if (full["betas"] != "linear") throw UsageError(source + ": vp_discrete supports betas \"linear\" only");
      return VPDiscrete::ddpm_linear(full["num_train_steps"].get<int64_t>(), full["beta_start"].get<double>(),
                                     full["beta_end"].get<double>());
    }
    if (name == "ve") return std::make_shared<VE>(full["sigma_min"].get<double>(), full["sigma_max"].get<double>());
    return std::make_shared<FlowMatching>(full["t_min"].get<double>(), full["t_max"].get<double>());
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(source + ": bad parameter of schedule '" + name + "': " + e.what());
  } catch (const c10::Error& e) {
    throw UsageError(source + ": bad schedule '" + name + "': " + e.what_without_backtrace());
  }
}

}  // namespace fewstep::cli
