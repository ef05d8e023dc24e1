#include "fewstep/core/options.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "fewstep/core/check.h"

namespace fewstep {

std::string to_string(const OptionValue& value) {
  std::ostringstream out;
  std::visit(
      [&out](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, bool>) {
          out << (v ? "true" : "false");
        } else if constexpr (std::is_same_v<V, std::string>) {
          out << "'" << v << "'";
        } else {
          out << v;
        }
      },
      value);
  return out.str();
}

OptionValue parse_option_value(const std::string& text) {
  if (text == "true" || text == "false") return text == "true";
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0') {
    // An integer outside int64 is an error, not the clamped LLONG_MAX strtoll returns.
    FEWSTEP_CHECK_VALUE(errno != ERANGE, "the integer '", text, "' is outside the 64-bit range [",
                        std::numeric_limits<int64_t>::min(), ", ", std::numeric_limits<int64_t>::max(), "]");
    return static_cast<int64_t>(i);
  }
  const double d = std::strtod(text.c_str(), &end);
  if (!text.empty() && *end == '\0') return d;
  return text;
}

namespace {
const char* type_name(const OptionValue& value) {
  switch (value.index()) {
    case 0: return "bool";
    case 1: return "int";
    case 2: return "float";
    default: return "str";
  }
}
}  // namespace

Options& Options::set(const std::string& key, OptionValue value) {
  values_[key] = std::move(value);
  return *this;
}

bool Options::get_bool(const std::string& key, bool fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  FEWSTEP_CHECK_TYPE(std::holds_alternative<bool>(it->second), "option '", key, "' must be a bool, got ",
                     type_name(it->second), " ", to_string(it->second));
  return std::get<bool>(it->second);
}

int64_t Options::get_int(const std::string& key, int64_t fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  FEWSTEP_CHECK_TYPE(std::holds_alternative<int64_t>(it->second), "option '", key, "' must be an int, got ",
                     type_name(it->second), " ", to_string(it->second));
  return std::get<int64_t>(it->second);
}

double Options::get_double(const std::string& key, double fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  if (std::holds_alternative<int64_t>(it->second)) return static_cast<double>(std::get<int64_t>(it->second));
  FEWSTEP_CHECK_TYPE(std::holds_alternative<double>(it->second), "option '", key, "' must be a number, got ",
                     type_name(it->second), " ", to_string(it->second));
  return std::get<double>(it->second);
}

std::string Options::get_string(const std::string& key, const std::string& fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  FEWSTEP_CHECK_TYPE(std::holds_alternative<std::string>(it->second), "option '", key, "' must be a string, got ",
                     type_name(it->second), " ", to_string(it->second));
  return std::get<std::string>(it->second);
}

void Options::check_known(const std::vector<std::string>& known, const std::string& owner) const {
  for (const auto& [key, value] : values_) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string accepted;
    for (const auto& k : known) accepted += (accepted.empty() ? "" : ", ") + k;
    FEWSTEP_CHECK_VALUE(false, owner, " has no option '", key, "' (given ", to_string(value), "); accepted: ",
                        accepted.empty() ? std::string("none") : accepted);
  }
}

}  // namespace fewstep
