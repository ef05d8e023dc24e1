#include "fewstep/solvers/dpm_adaptive.h"

#include "fewstep/core/check.h"
#include "fewstep/solvers/dpm_solver_12.h"
#include "fewstep/solvers/dpm_solver_23.h"

namespace fewstep {

DpmAdaptiveStepper::DpmAdaptiveStepper(const Options& options) {
  options.check_known({"order"}, "solver 'dpm_adaptive'");
  const int64_t order = options.get_int("order", 3);
  FEWSTEP_CHECK_VALUE(order == 2 || order == 3, "solver 'dpm_adaptive': order must be 2 (DPM-Solver-12) or 3 ",
                      "(DPM-Solver-23), got ", order);
  if (order == 2) {
    pair_ = std::make_shared<DpmSolver12Stepper>();
  } else {
    pair_ = std::make_shared<DpmSolver23Stepper>();
  }
  const auto& p = pair_->traits();
  traits_ = StepperTraits::named("dpm_adaptive",
      "DPM-Solver's adaptive solver (Lu et al. 2022, sec. 4): the DPM-Solver-12 (order=2) or -23 (order=3, default) "
      "pair under a PID controller in lambda")
      .with_order(p.order)
      .with_nfe_per_step(p.nfe_per_step)
      .with_error_estimate()
      .with_adaptive_default()
      .with_needs(Needs::Eps)
      .with_options({"order"});
}

StepResult DpmAdaptiveStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                    const StepContext& ctx) const {
  return pair_->step(model, x, s, t, std::move(state), ctx);
}

}  // namespace fewstep
