/// @file solvers/registry.h
/// @brief Name → stepper factory. Feeds `solver(name)`, the bindings, typed tests and benchmarks.
///
/// Adding a stepper: its header and source in solvers/, and one line in src/solvers/registry.cpp.
/// A stepper defined in a higher layer (micro/) registers itself with a `StepperRegistration` object
/// in its own source file, so this layer never includes it. The registry is core/registry.h's
/// template; unknown names and options are ValueErrors that list the registered names / accepted
/// options.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/core/registry.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

using StepperRegistry = Registry<Stepper, StepperTraits>;
using StepperEntry = StepperRegistry::Entry;
using StepperFactory = StepperRegistry::Factory;

/// The registry entry of stepper type S (S(Options) builds it; S() gives its traits).
template <typename S>
StepperEntry stepper_entry() {
  return registry_entry<Stepper, StepperTraits, S>();
}

/// Registers a stepper from outside this layer, at static-initialisation time:
/// `static const StepperRegistration kRegistered(stepper_entry<MyStepper>());` in its .cpp.
/// Such steppers come after the built-in ones; a name already taken is a logic error.
struct StepperRegistration {
  explicit StepperRegistration(StepperEntry entry);
};

/// All registered steppers, in registration order.
const std::vector<StepperEntry>& registered_steppers();
/// Names only.
std::vector<std::string> stepper_names();
/// Traits of a registered stepper (ValueError if unknown).
const StepperTraits& stepper_traits(const std::string& name);
/// Builds the named stepper with its options checked.
std::shared_ptr<const Stepper> solver(const std::string& name, const Options& options = {});

/// The step count whose cost (Stepper::nfe_for_steps) is exactly `nfe`, or 0 when no step count
/// gives it (e.g. an odd budget for a 2-evaluation stepper). Requests with an NFE budget use this.
int64_t steps_for_nfe(const Stepper& stepper, int64_t nfe);

}  // namespace fewstep
