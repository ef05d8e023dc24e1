// `fewstep distill <method>`: each distillation method lives in one file of cli/distill/ and
// registers itself here (like the subcommands of cli/command.h), so commands/distill.cpp needs no
// list of methods.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../command.h"

namespace fewstep::cli {

struct DistillMethodInfo {
  std::string name;
  std::string description;
  std::string footer;
  std::function<std::unique_ptr<Command>()> make;
};

bool register_distill_method(DistillMethodInfo info);
std::vector<DistillMethodInfo> distill_methods();

}  // namespace fewstep::cli
