#include "fewstep/solvers/registry.h"

#include <stdexcept>

#include "fewstep/core/check.h"
#include "fewstep/solvers/consistency.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/dpm_solver_2s.h"
#include "fewstep/solvers/dpm_solver_3s.h"
#include "fewstep/solvers/dpm_solver_fast.h"
#include "fewstep/solvers/deis.h"
#include "fewstep/solvers/ddpm.h"
#include "fewstep/solvers/dpmpp_2m.h"
#include "fewstep/solvers/dpmpp_2s.h"
#include "fewstep/solvers/dpmpp_3m.h"
#include "fewstep/solvers/dpmpp_2m_sde.h"
#include "fewstep/solvers/edm_churn.h"
#include "fewstep/solvers/euler.h"
#include "fewstep/solvers/euler_maruyama.h"
#include "fewstep/solvers/heun.h"
#include "fewstep/solvers/unipc.h"
#include "fewstep/solvers/heun_euler.h"
#include "fewstep/solvers/dpm_solver_12.h"
#include "fewstep/solvers/dpm_solver_23.h"
#include "fewstep/solvers/dpm_adaptive.h"

namespace fewstep {

namespace {

std::vector<StepperEntry> build_registry() {
  // One line per stepper.
  return {
      stepper_entry<EulerStepper>(),
      stepper_entry<HeunStepper>(),
      stepper_entry<DdimStepper>(),
      stepper_entry<DpmSolverPP2MStepper>(),
      stepper_entry<DpmSolver2SStepper>(),
      stepper_entry<DpmSolver3SStepper>(),
      stepper_entry<DpmSolverFastStepper>(),
      stepper_entry<DpmSolverPP2SStepper>(),
      stepper_entry<DpmSolverPP3MStepper>(),
      stepper_entry<UniPCStepper>(),
      stepper_entry<DeisStepper>(),
      stepper_entry<DdpmStepper>(),
      stepper_entry<EulerMaruyamaStepper>(),
      stepper_entry<DpmSolverPP2MSdeStepper>(),
      stepper_entry<EulerChurnStepper>(),
      stepper_entry<HeunChurnStepper>(),
      stepper_entry<HeunEulerStepper>(),
      stepper_entry<DpmSolver12Stepper>(),
      stepper_entry<DpmSolver23Stepper>(),
      stepper_entry<DpmAdaptiveStepper>(),
      stepper_entry<ConsistencyStepper>(),
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

std::vector<StepperEntry>& mutable_registry() {
  static std::vector<StepperEntry> registry = build_registry();
  return registry;
}

}  // namespace

StepperRegistration::StepperRegistration(StepperEntry entry) {
  auto& registry = mutable_registry();
  for (const auto& e : registry)
    if (e.traits.name == entry.traits.name)
      throw std::logic_error("StepperRegistration: solver name '" + entry.traits.name + "' is registered twice");
  registry.push_back(std::move(entry));
}

const std::vector<StepperEntry>& registered_steppers() { return mutable_registry(); }

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

namespace fewstep {

int64_t steps_for_nfe(const Stepper& stepper, int64_t nfe) {
  for (int64_t s = 1; s <= nfe; ++s) {
    if (stepper.nfe_for_steps(s) == nfe) return s;
  }
  return 0;
}

}  // namespace fewstep
