#include "fewstep/solvers/registry.h"

#include "fewstep/core/check.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/dpmpp_2m.h"
#include "fewstep/solvers/euler.h"
#include "fewstep/solvers/heun.h"

namespace fewstep {

namespace {

template <typename S>
StepperEntry entry() {
  return StepperEntry{S().traits(), [](const Options& options) -> std::shared_ptr<const Stepper> {
                        return std::make_shared<S>(options);
                      }};
}

std::vector<StepperEntry> build_registry() {
  // One line per stepper.
  return {
      entry<EulerStepper>(),
      entry<HeunStepper>(),
      entry<DdimStepper>(),
      entry<DpmSolverPP2MStepper>(),
  };
}

const StepperEntry& find(const std::string& name) {
  for (const auto& e : registered_steppers()) {
    if (e.traits.name == name) return e;
  }
  std::string names;
  for (const auto& n : stepper_names()) names += (names.empty() ? "" : ", ") + n;
  FEWSTEP_CHECK_VALUE(false, "unknown solver '", name, "'; registered solvers: ", names);
  throw;  // unreachable
}

}  // namespace

const std::vector<StepperEntry>& registered_steppers() {
  static const std::vector<StepperEntry> registry = build_registry();
  return registry;
}

std::vector<std::string> stepper_names() {
  std::vector<std::string> names;
  for (const auto& e : registered_steppers()) names.push_back(e.traits.name);
  return names;
}

const StepperTraits& stepper_traits(const std::string& name) { return find(name).traits; }

std::shared_ptr<const Stepper> solver(const std::string& name, const Options& options) {
  return find(name).make(options);
}

}  // namespace fewstep
