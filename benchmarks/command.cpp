#include "command.h"

#include <algorithm>
#include <stdexcept>

namespace fewstep::bench {

namespace {
// Function-local so registration from other translation units never sees it uninitialised.
std::vector<CommandInfo>& registry() {
  static std::vector<CommandInfo> commands;
  return commands;
}
}  // namespace

bool register_command(CommandInfo info) {
  for (const auto& c : registry()) {
    if (c.name == info.name) throw std::logic_error("fewstep-bench: subcommand '" + info.name + "' registered twice");
  }
  registry().push_back(std::move(info));
  return true;
}

std::vector<CommandInfo> registered_commands() {
  auto commands = registry();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return commands;
}

}  // namespace fewstep::bench
