// `fewstep solvers`: the solvers `fewstep sample --solver` accepts, with their order and cost.
#include <iostream>

#include "../command.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::cli {

std::string solver_list() {
  std::string out = "Solvers (name: order, model evaluations per step):\n";
  for (const auto& e : registered_steppers()) {
    out += "  " + e.traits.name + ": order " + std::to_string(e.traits.order) + ", " +
           std::to_string(e.traits.nfe_per_step) + " NFE/step" + (e.traits.multistep ? ", multistep" : "") +
           (e.traits.stochastic ? ", stochastic" : "") + (e.traits.has_error_estimate ? ", error estimate" : "") +
           "\n";
  }
  return out;
}

namespace {

class SolversCommand final : public Command {
 public:
  void configure(CLI::App&) override {}
  int run(const GlobalOptions&) override {
    std::cout << solver_list();
    return 0;
  }
};

const bool registered = register_command({"solvers", "List the solvers 'fewstep sample --solver' accepts",
                                          "Example:\n  fewstep solvers\n",
                                          [] { return std::make_unique<SolversCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
