// fewstep subcommands: each lives in one file under commands/ and registers itself here.
//
// A subcommand is a `Command`: `configure` declares its flags on its CLI11 sub-app, `run` does the
// work after parsing and returns the exit code. Registration is a namespace-scope
// `register_command(...)` in the command's own source, so adding one touches no other file.
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fewstep/core/noise.h"

namespace fewstep::cli {

/// Flags shared by every subcommand (accepted before or after the subcommand's name).
struct GlobalOptions {
  int threads = 0;  ///< LibTorch intra-op threads; 0 keeps LibTorch's default
};

/// A user error the message of which already names the bad flag or file; main() prints
/// "fewstep <subcommand>: <message>" and exits with status 2 (as for a parse error).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Command {
 public:
  virtual ~Command() = default;
  /// Declares the subcommand's flags on `app` (already named and described).
  virtual void configure(CLI::App& app) = 0;
  /// Runs after parsing; returns the process exit code.
  virtual int run(const GlobalOptions& global) = 0;
};

struct CommandInfo {
  std::string name;
  std::string description;
  std::string footer;  ///< examples and notes printed after the flags by --help
  std::function<std::unique_ptr<Command>()> make;
};

/// Adds a subcommand; returns true so it can initialise a namespace-scope constant.
bool register_command(CommandInfo info);
/// All registered subcommands, sorted by name.
std::vector<CommandInfo> registered_commands();

/// The registered solvers, one per line with order and evaluations per step (commands/solvers.cpp).
std::string solver_list();

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

/// A seed for another purpose derived from `seed`: the library's counter-based derivation
/// (core/noise.h, SplitMix64), so streams never coincide.
using fewstep::derive_seed;

/// The candidate nearest to `typed` by edit distance (insertions, deletions, substitutions and
/// swaps of neighbours each count 1), if it is near enough to be a typo (distance <= 1 for short
/// words, about a third of the length for longer ones, or `typed` is a prefix of exactly one
/// candidate); "" otherwise.
std::string closest_match(const std::string& typed, const std::vector<std::string>& candidates);

/// For a command line CLI11 refused: "unknown subcommand/flag ... did you mean ...?" with the list of
/// subcommands where one was expected, or "" when the mistake is of another kind (then CLI11's own
/// message stands).
std::string explain_parse_error(const CLI::App& root, int argc, char** argv);

/// "  name   description" lines of the subcommands of `app`.
std::string subcommand_list(const CLI::App& app);

/// The command line as typed (shell-quoted where needed), for model cards.
std::string command_line();
void set_command_line(int argc, char** argv);

}  // namespace fewstep::cli
