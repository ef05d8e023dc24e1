// fewstep-bench: accuracy and speed benchmarks. `fewstep-bench --help` lists the subcommands.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <iostream>
#include <utility>

#include "command.h"
#include "fewstep/core/malloc_tuning.h"

int main(int argc, char** argv) {
  using namespace fewstep::bench;
  fewstep::tune_malloc_for_tensors();  // core/malloc_tuning.h
  CLI::App app{"fewstep-bench: accuracy-per-NFE and speed tables for fewstep's samplers"};
  app.require_subcommand(1, 1);
  app.fallthrough();  // global options may also follow the subcommand's name
  GlobalOptions global;
  app.add_option("--threads", global.threads, "LibTorch intra-op threads (0 = LibTorch's default)")
      ->check(non_negative());

  std::vector<std::pair<CLI::App*, std::unique_ptr<Command>>> commands;
  for (const auto& info : registered_commands()) {
    CLI::App* sub = app.add_subcommand(info.name, info.description);
    auto command = info.make();
    command->configure(*sub);
    commands.emplace_back(sub, std::move(command));
  }
  CLI11_PARSE(app, argc, argv);

  if (global.threads > 0) at::set_num_threads(global.threads);
  for (auto& [sub, command] : commands) {
    if (!sub->parsed()) continue;
    try {
      return command->run(global);
    } catch (const c10::Error& e) {
      std::cerr << "fewstep-bench " << sub->get_name() << ": error: " << e.what_without_backtrace() << "\n";
    } catch (const std::exception& e) {
      std::cerr << "fewstep-bench " << sub->get_name() << ": error: " << e.what() << "\n";
    }
    return 1;
  }
  return 1;
}
