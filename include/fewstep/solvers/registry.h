/// @file solvers/registry.h
/// @brief Name → stepper factory. Feeds `solver(name)`, the bindings, typed tests and benchmarks.
///
/// Adding a stepper: its header and source in solvers/, and one line in
/// src/solvers/registry.cpp. Unknown names and options are ValueErrors that list the
/// registered names / accepted options.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

using StepperFactory = std::function<std::shared_ptr<const Stepper>(const Options&)>;

struct StepperEntry {
  StepperTraits traits;
  StepperFactory make;
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
/// gives it (e.g. an odd budget for a 2-evaluation stepper). Comparisons at equal NFE use this.
int64_t steps_for_nfe(const Stepper& stepper, int64_t nfe);

}  // namespace fewstep
