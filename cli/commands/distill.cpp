// `fewstep distill <method> ...`: the distillation methods of cli/distill/ as sub-subcommands.
#include <algorithm>

#include "../command.h"
#include "../distill/method.h"

namespace fewstep::cli {

namespace {

std::vector<DistillMethodInfo>& methods() {
  static std::vector<DistillMethodInfo> all;
  return all;
}

class DistillCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    app.require_subcommand(0, 1);  // none: run() names the methods
    // From the registry, so every method (each registers itself from cli/distill/) is named.
    app.description("Distil a teacher into a few-step student: " + names());
    for (const DistillMethodInfo& m : distill_methods()) {
      CLI::App* sub = app.add_subcommand(m.name, m.description);
      sub->footer(m.footer);
      auto command = m.make();
      command->configure(*sub);
      subs_.emplace_back(sub, std::move(command));
    }
  }
  int run(const GlobalOptions& global) override {
    for (auto& [sub, command] : subs_) {
      if (sub->parsed()) return command->run(global);
    }
    throw UsageError("name a method: " + names() + " (fewstep distill <method> --help)");
  }

 private:
  static std::string names() {
    std::string out;
    for (const DistillMethodInfo& m : distill_methods()) out += (out.empty() ? "" : ", ") + m.name;
    return out;
  }
  std::vector<std::pair<CLI::App*, std::unique_ptr<Command>>> subs_;
};

const bool registered = register_command(
    {"distill", "Distil a teacher into a few-step student",
     "Run `fewstep distill <method> --help` for each method's flags. Students are TorchScript files with a\n"
     "sidecar naming their own step grid, so `fewstep sample --model student.pt` runs them directly.",
     [] { return std::make_unique<DistillCommand>(); }});

}  // namespace

bool register_distill_method(DistillMethodInfo info) {
  methods().push_back(std::move(info));
  return true;
}

std::vector<DistillMethodInfo> distill_methods() {
  std::vector<DistillMethodInfo> all = methods();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return all;
}

}  // namespace fewstep::cli
