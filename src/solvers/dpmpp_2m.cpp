#include "fewstep/solvers/dpmpp_2m.h"

#include "fewstep/core/check.h"
#include "fewstep/solvers/ddim.h"

namespace fewstep {

DpmSolverPP2MStepper::DpmSolverPP2MStepper(const Options& options) {
  options.check_known(traits().options, "solver 'dpmpp_2m'");
  lower_order_final_ = LowerOrderFinal::from_options(options, "solver 'dpmpp_2m'");
}

const StepperTraits& DpmSolverPP2MStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpmpp_2m",
      "DPM-Solver++(2M), data prediction, multistep (Lu et al. 2022, Alg. 2)")
      .with_order(2)
      .with_multistep()
      .with_needs(Needs::X0)
      .with_options({"lower_order_final", "lower_order_final_steps"});
  return traits;
}

StepResult DpmSolverPP2MStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                      SolverState state, const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  at::Tensor x_next;
  if (lower_order_final_.order(2, state.history.size(), ctx) == 1) {
    x_next = ddim_update(schedule, x, out.x0, s, t);
  } else {
    const HistoryEntry& prev = state.history.back();
    const double lambda_s = schedule.lambda(s);
    const double h = schedule.lambda(t) - lambda_s;
    const double r = (lambda_s - schedule.lambda(prev.t)) / h;
    // D = x̂_s + (x̂_s − x̂_prev)/(2r): second-order extrapolation of x̂_0 over the step, formed in
    // place (the same bits as out-of-place: a + b = b + a in IEEE arithmetic).
    at::Tensor d = at::sub(out.x0, prev.x0);
    d.mul_(0.5 / r).add_(out.x0);
    x_next = ddim_update_consuming(schedule, x, d, s, t);
  }
  state.history.clear();
  state.history.push_back(HistoryEntry{s, out.x0, out.eps});
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
