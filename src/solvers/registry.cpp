#include "fewstep/solvers/registry.h"

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
#include "fewstep/micro/micro_stepper.h"

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
      entry<DpmSolver2SStepper>(),
      entry<DpmSolver3SStepper>(),
      entry<DpmSolverFastStepper>(),
      entry<DpmSolverPP2SStepper>(),
      entry<DpmSolverPP3MStepper>(),
      entry<UniPCStepper>(),
      entry<DeisStepper>(),
      entry<DdpmStepper>(),
      entry<EulerMaruyamaStepper>(),
      entry<DpmSolverPP2MSdeStepper>(),
      entry<EulerChurnStepper>(),
      entry<HeunChurnStepper>(),
      entry<HeunEulerStepper>(),
      entry<DpmSolver12Stepper>(),
      entry<DpmSolver23Stepper>(),
      entry<DpmAdaptiveStepper>(),
      entry<ConsistencyStepper>(),
      entry<MicroStepper>(),
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

namespace fewstep {

int64_t steps_for_nfe(const Stepper& stepper, int64_t nfe) {
  for (int64_t s = 1; s <= nfe; ++s) {
    if (stepper.nfe_for_steps(s) == nfe) return s;
  }
  return 0;
}

}  // namespace fewstep
