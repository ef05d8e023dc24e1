#include "fewstep/solvers/dpm_solver_fast.h"

#include "fewstep/core/check.h"
#include "fewstep/solvers/dpm_solver_3s.h"

namespace fewstep {

std::vector<int> dpm_solver_fast_orders(int64_t nfe) {
  FEWSTEP_CHECK_VALUE(nfe >= 1, "dpm_solver_fast: the evaluation budget must be >= 1, got ", nfe);
  const int64_t k = nfe / 3 + 1;
  std::vector<int> orders;
  switch (nfe % 3) {
    case 0:
      orders.assign(k - 2, 3);
      orders.push_back(2);
      orders.push_back(1);
      break;
    case 1:
      orders.assign(k - 1, 3);
      orders.push_back(1);
      break;
    default:
      orders.assign(k - 1, 3);
      orders.push_back(2);
      break;
  }
  return orders;
}

DpmSolverFastStepper::DpmSolverFastStepper(const Options& options) {
  const std::string owner = "solver 'dpm_solver_fast'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  nfe_ = options.get_int("nfe", 0);
  FEWSTEP_CHECK_VALUE(nfe_ >= 0, owner, ": nfe must be >= 1 (or 0 for no budget), got ", nfe_);
}

const StepperTraits& DpmSolverFastStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_fast",
      "DPM-Solver-fast: orders 3,...,3 then 2/1 spending exactly steps = NFE (Lu et al. 2022, arXiv 2206.00927)")
      .with_order(3)
      .with_nfe_per_step(3)
      .with_needs(Needs::Eps)
      .with_options({"variant", "nfe"});
  return traits;
}

int DpmSolverFastStepper::order_of(int64_t index, int64_t num_steps) const {
  if (nfe_ > 0) {
    const auto orders = dpm_solver_fast_orders(nfe_);
    FEWSTEP_CHECK_VALUE(num_steps == static_cast<int64_t>(orders.size()), "solver 'dpm_solver_fast': nfe = ", nfe_,
                        " plans ", orders.size(), " steps, but the grid has ", num_steps,
                        "; pass steps=", nfe_, " (the request plans the grid) or a grid of ", orders.size(),
                        " steps");
    return orders[index];
  }
  if (num_steps < 0) return 3;
  return index == num_steps - 1 ? 2 : 3;  // the plan of N = 3K − 1
}

StepResult DpmSolverFastStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                      SolverState state, const StepContext& ctx) const {
  const int order = order_of(ctx.index, ctx.num_steps);
  auto at_s = model(x, s);
  SinglestepUpdate update;
  if (order == 3) {
    update = dpm_solver_3_update(model, x, at_s, s, t, 1.0 / 3.0, 2.0 / 3.0, variant_);
  } else if (order == 2) {
    update = dpm_solver_2_update(model, x, at_s, s, t, 0.5, variant_);
  } else {
    update = SinglestepUpdate{dpm_solver_1_update(model.schedule(), x, at_s.eps, s, t), at_s.x0};
  }
  return StepResult{update.x, update.x0, std::nullopt, std::move(state)};
}

std::optional<StepPlan> DpmSolverFastStepper::plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                                                   std::optional<double> t_start, std::optional<double> t_end) const {
  FEWSTEP_CHECK_VALUE(steps >= 1, "solver 'dpm_solver_fast': steps is the evaluation budget and must be >= 1, got ",
                      steps);
  FEWSTEP_CHECK_VALUE(nfe_ == 0 || nfe_ == steps, "solver 'dpm_solver_fast': option nfe = ", nfe_,
                      " contradicts steps = ", steps, " (steps is the budget; drop the nfe option)");
  const auto orders = dpm_solver_fast_orders(steps);
  const auto k = static_cast<int64_t>(orders.size());
  StepPlan plan;
  if (spacing == Spacing::LogSNR) {
    plan.grid = timesteps(schedule, k, spacing, t_start, t_end);
  } else {
    // The budget-sized grid of this spacing, taken at the step boundaries (the official code's choice).
    const auto fine = timesteps(schedule, steps, spacing, t_start, t_end);
    int64_t at = 0;
    plan.grid.push_back(fine[0]);
    for (int order : orders) plan.grid.push_back(fine[at += order]);
  }
  plan.stepper = std::make_shared<DpmSolverFastStepper>(Options{{"variant", to_string(variant_)}, {"nfe", steps}});
  return plan;
}

}  // namespace fewstep
