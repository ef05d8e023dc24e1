// fewstep subcommands: each lives in one file under commands/ and registers itself here.
//
// A subcommand is a `Command`: `configure` declares its flags on its CLI11 sub-app, `run` does the
// work after parsing and returns the exit code. Registration is a namespace-scope
// `register_command(...)` in the command's own source, so adding one touches no other file.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fewstep/core/noise.h"
#include "flag_checks.h"

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

// Numeric flag checks (flag_checks.h, shared with fewstep-bench).
using flags::at_least;
using flags::count_at_most;
using flags::finite_number;
using flags::non_negative;
using flags::positive;
using flags::unsigned_integer;

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
