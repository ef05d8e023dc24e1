// fewstep-bench subcommands: each lives in one file under commands/ and registers itself here.
//
// A subcommand is a `Command`: `configure` adds its options to its CLI11 sub-app, `run`
// does the work after parsing and returns the exit code. Registration is a static
// `register_command(...)` in the command's own source, so adding one touches no other file.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../cli/flag_checks.h"

namespace fewstep::bench {

// Numeric flag checks, the same as the fewstep CLI's (cli/flag_checks.h): readable bounds.
using flags::non_negative;
using flags::positive;
using flags::unsigned_integer;

/// Options shared by every subcommand (given before or after the subcommand's name).
struct GlobalOptions {
  int threads = 0;  ///< intra-op threads for LibTorch; 0 keeps LibTorch's default
};

class Command {
 public:
  virtual ~Command() = default;
  /// Declares the subcommand's options on `app` (already named and described).
  virtual void configure(CLI::App& app) = 0;
  /// Runs after parsing; returns the process exit code.
  virtual int run(const GlobalOptions& global) = 0;
};

struct CommandInfo {
  std::string name;
  std::string description;
  std::function<std::unique_ptr<Command>()> make;
};

/// Adds a subcommand; returns true so it can initialise a namespace-scope constant.
bool register_command(CommandInfo info);
/// All registered subcommands, sorted by name.
std::vector<CommandInfo> registered_commands();

}  // namespace fewstep::bench
