// Checks of numeric flags, shared by both programs' CLI11 apps (fewstep and fewstep-bench), so that a bad
// value gets the same readable message everywhere: "--n: must be > 0, got 0". CLI11's own PositiveNumber
// and Range print DBL_MAX or INT64_MAX in full as the bound. Header-only; needs nothing but CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

namespace fewstep::flags {

/// Check of a numeric flag: value >= lo (or > lo when `strict`). CLI11 prefixes the flag's name; its own
/// PositiveNumber prints DBL_MAX as the upper bound, which confuses more than it helps.
inline CLI::Validator at_least(double lo, bool strict = false) {
  std::ostringstream bound;
  bound << lo;
  const std::string text = (strict ? "> " : ">= ") + bound.str();
  return CLI::Validator(
      [lo, strict, text](std::string& value) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0') return "'" + value + "' is not a number";
        if (strict ? !(v > lo) : !(v >= lo)) return "must be " + text + ", got " + value;
        return "";
      },
      text);
}
inline CLI::Validator positive() { return at_least(0.0, true); }
inline CLI::Validator non_negative() { return at_least(0.0); }

/// Check of a real-valued flag: a finite number (NaN and Inf are refused, never read as "unset").
inline CLI::Validator finite_number() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0') return "'" + value + "' is not a number";
        if (!std::isfinite(v)) return "must be a finite number, got " + value;
        return "";
      },
      "finite");
}

/// Check of an unsigned 64-bit flag (seeds): decimal digits in [0, 2^64 - 1]; "-1" is refused rather than
/// wrapped to 2^64 - 1, and a larger number rather than clamped.
inline CLI::Validator unsigned_integer() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos)
          return "must be an integer in [0, 2^64 - 1], got " + value;
        errno = 0;
        (void)std::strtoull(value.c_str(), nullptr, 10);
        if (errno == ERANGE) return "must be an integer in [0, 2^64 - 1], got " + value;
        return "";
      },
      "UINT64");
}

/// Check of an integer flag that sizes an allocation (--n): in [1, hi].
inline CLI::Validator count_at_most(int64_t hi) {
  return CLI::Validator(
      [hi](std::string& value) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0') return "'" + value + "' is not an integer";
        if (errno == ERANGE || v < 1 || v > hi) return "must be in [1, " + std::to_string(hi) + "], got " + value;
        return "";
      },
      "1.." + std::to_string(hi));
}

}  // namespace fewstep::flags
