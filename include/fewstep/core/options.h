/// @file core/options.h
/// @brief Name-keyed option bag for steppers (and later controllers/trainers).
///
/// Steppers take their settings (`lower_order_final`, `eta`, `variant`, ...) as an
/// `Options` map so that the registry, the CLI and the Python keyword arguments all
/// pass them the same way. A stepper declares the keys it understands; an unknown
/// key is an error that lists the accepted ones.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace fewstep {

using OptionValue = std::variant<bool, int64_t, double, std::string>;

/// Human-readable form of a value ("true", "3", "0.5", "'bh2'").
std::string to_string(const OptionValue& value);

/// The value of a "key=value" text as the front ends read it: true/false → bool, an integer →
/// int64, a number → double, anything else → string.
OptionValue parse_option_value(const std::string& text);

class Options {
 public:
  Options() = default;
  Options(std::initializer_list<std::pair<const std::string, OptionValue>> init) : values_(init) {}

  Options& set(const std::string& key, OptionValue value);
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  const std::map<std::string, OptionValue>& values() const { return values_; }

  /// Typed getters with a default; a value of the wrong type is a TypeError naming the key.
  /// Integers are accepted where a double is asked for.
  bool get_bool(const std::string& key, bool fallback) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

  /// Throws ValueError naming the first key of this bag that is not in `known`,
  /// and listing `known`, e.g. "solver 'euler' has no option 'eta' (accepted: none)".
  void check_known(const std::vector<std::string>& known, const std::string& owner) const;

 private:
  std::map<std::string, OptionValue> values_;
};

}  // namespace fewstep
