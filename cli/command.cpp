#include "command.h"

#include <algorithm>

namespace fewstep::cli {

namespace {
// Function-local so registration from other translation units never sees it uninitialised.
std::vector<CommandInfo>& registry() {
  static std::vector<CommandInfo> commands;
  return commands;
}
std::string& typed_command_line() {
  static std::string line;
  return line;
}

std::string shell_quote(const std::string& arg) {
  const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string("-_./=:,+@%").find(c) != std::string::npos;
  });
  if (plain) return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

bool register_command(CommandInfo info) {
  for (const auto& c : registry()) {
    if (c.name == info.name) throw std::logic_error("fewstep: subcommand '" + info.name + "' registered twice");
  }
  registry().push_back(std::move(info));
  return true;
}

std::vector<CommandInfo> registered_commands() {
  auto commands = registry();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return commands;
}

void set_command_line(int argc, char** argv) {
  std::string line = "fewstep";  // argv[0] may be a build path; the card shows the command as a user types it
  for (int i = 1; i < argc; ++i) line += " " + shell_quote(argv[i]);
  typed_command_line() = line;
}

std::string command_line() { return typed_command_line(); }

}  // namespace fewstep::cli
