#include "command.h"

#include <algorithm>
#include <cctype>

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

std::string closest_match(const std::string& typed, const std::vector<std::string>& candidates) {
  // Optimal string alignment distance (Damerau 1964; Levenshtein 1966 with adjacent transpositions).
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
    return d[a.size()][b.size()];
  };
  std::string best;
  size_t best_distance = std::string::npos;
  for (const std::string& c : candidates) {
    const size_t dist = distance(typed, c);
    if (dist < best_distance) best = c, best_distance = dist;
  }
  const size_t allowed = std::max<size_t>(1, typed.size() / 3);
  if (!best.empty() && best_distance <= allowed) return best;
  std::string prefixed;
  for (const std::string& c : candidates) {
    if (typed.size() >= 2 && c.rfind(typed, 0) == 0) {
      if (!prefixed.empty()) return "";  // ambiguous
      prefixed = c;
    }
  }
  return prefixed;
}

namespace {

std::string full_name(const CLI::App* app) {
  std::string name;
  for (; app != nullptr; app = app->get_parent()) name = app->get_name() + (name.empty() ? "" : " " + name);
  return name;
}

std::vector<const CLI::App*> children(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App*) { return true; });
}

// The option `flag` ("--name" or "-n") of `app` or of an ancestor (global flags fall through).
const CLI::Option* find_flag(const CLI::App* app, const std::string& flag) {
  for (; app != nullptr; app = app->get_parent()) {
    if (const CLI::Option* opt = app->get_option_no_throw(flag)) return opt;
  }
  return nullptr;
}

}  // namespace

std::string subcommand_list(const CLI::App& app) {
  size_t width = 0;
  for (const CLI::App* sub : children(app)) width = std::max(width, sub->get_name().size());
  std::string out;
  for (const CLI::App* sub : children(app)) {
    out += "  " + sub->get_name() + std::string(width + 2 - sub->get_name().size(), ' ') + sub->get_description() + "\n";
  }
  return out;
}

std::string explain_parse_error(const CLI::App& root, int argc, char** argv) {
  const CLI::App* app = &root;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() > 1 && arg[0] == '-' && !std::isdigit(static_cast<unsigned char>(arg[1])) && arg[1] != '.') {
      const std::string flag = arg.substr(0, arg.find('='));
      if (flag == "--help" || flag == "-h" || flag == "--version") continue;
      const CLI::Option* opt = find_flag(app, flag);
      if (opt == nullptr) {
        std::vector<std::string> names = {"--help"};
        for (const CLI::App* a = app; a != nullptr; a = a->get_parent()) {
          for (const CLI::Option* o : a->get_options()) {
            for (const std::string& l : o->get_lnames()) names.push_back("--" + l);
          }
        }
        const std::string guess = closest_match(flag, names);
        return "unknown flag '" + flag + "' for '" + full_name(app) + "'" +
               (guess.empty() ? "" : "; did you mean '" + guess + "'?");
      }
      // A flag that takes a value, given as "--flag value": skip the value.
      if (arg.find('=') == std::string::npos && opt->get_type_size_max() > 0 && i + 1 < argc) ++i;
      continue;
    }
    const std::vector<const CLI::App*> subs = children(*app);
    if (subs.empty()) return "";  // a positional argument where none is taken: CLI11 says so
    const CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (const CLI::App* sub : subs) {
      names.push_back(sub->get_name());
      if (sub->check_name(arg)) next = sub;
    }
    if (next == nullptr) {
      const std::string guess = closest_match(arg, names);
      return "'" + arg + "' is not a subcommand of '" + full_name(app) + "'" +
             (guess.empty() ? "" : "; did you mean '" + guess + "'?") + "\nSubcommands:\n" + subcommand_list(*app);
    }
    app = next;
  }
  if (!children(*app).empty() && app->get_require_subcommand_min() > 0)
    return "'" + full_name(app) + "' needs a subcommand:\n" + subcommand_list(*app);
  return "";
}

void set_command_line(int argc, char** argv) {
  std::string line = "fewstep";  // argv[0] may be a build path; the card shows the command as a user types it
  for (int i = 1; i < argc; ++i) line += " " + shell_quote(argv[i]);
  typed_command_line() = line;
}

std::string command_line() { return typed_command_line(); }

}  // namespace fewstep::cli
