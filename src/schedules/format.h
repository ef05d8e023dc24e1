// Internal to src/schedules: number formatting for reprs and error messages.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace fewstep {
namespace detail {

/// Shortest decimal form that reads back to the same double ("0.1", "20", "1e-12"), so a
/// message never shows "1" for a time that is really 1.0000000000000002.
inline std::string fmt_num(double v) {
  char buf[40];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace detail
}  // namespace fewstep
