#include "fewstep/solvers/registry.h"

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
#include "fewstep/solvers/dpm_solver_2m.h"
#include "fewstep/solvers/dpm_solver_3m.h"
#include "fewstep/solvers/ipndm.h"
#include "fewstep/solvers/ipndm_v.h"

namespace fewstep {

namespace {

StepperRegistry& registry() {
  // One line per stepper.
  static StepperRegistry instance("solver", {
      stepper_entry<EulerStepper>(),
      stepper_entry<HeunStepper>(),
      stepper_entry<DdimStepper>(),
      stepper_entry<DpmSolverPP2MStepper>(),
      stepper_entry<DpmSolver2SStepper>(),
      stepper_entry<DpmSolver3SStepper>(),
      stepper_entry<DpmSolverFastStepper>(),
      stepper_entry<DpmSolverPP2SStepper>(),
      stepper_entry<DpmSolverPP3MStepper>(),
      stepper_entry<DpmSolver2MStepper>(),
      stepper_entry<DpmSolver3MStepper>(),
      stepper_entry<UniPCStepper>(),
      stepper_entry<DeisStepper>(),
      stepper_entry<IpndmStepper>(),
      stepper_entry<IpndmVStepper>(),
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
  });
  return instance;
}

}  // namespace

StepperRegistration::StepperRegistration(StepperEntry entry) { registry().add(std::move(entry)); }

const std::vector<StepperEntry>& registered_steppers() { return registry().entries(); }

std::vector<std::string> stepper_names() { return registry().names(); }

const StepperTraits& stepper_traits(const std::string& name) { return registry().find(name).traits; }

std::shared_ptr<const Stepper> solver(const std::string& name, const Options& options) {
  return registry().make(name, options);
}

int64_t steps_for_nfe(const Stepper& stepper, int64_t nfe) {
  for (int64_t s = 1; s <= nfe; ++s) {
    if (stepper.nfe_for_steps(s) == nfe) return s;
  }
  return 0;
}

}  // namespace fewstep
