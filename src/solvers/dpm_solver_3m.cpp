#include "fewstep/solvers/dpm_solver_3m.h"

#include "fewstep/core/check.h"

namespace fewstep {

DpmSolver3MStepper::DpmSolver3MStepper(const Options& options) {
  const std::string owner = "solver 'dpm_solver_3m'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  const std::string d2 = options.get_string("d2_weight", "taylor");
  FEWSTEP_CHECK_VALUE(d2 == "taylor" || d2 == "official", owner, ": d2_weight must be 'taylor' or 'official', got '",
                      d2, "'");
  d2_weight_ = d2 == "taylor" ? 2.0 : 1.0;
  lower_order_final_ = LowerOrderFinal::from_options(options, owner);
}

const StepperTraits& DpmSolver3MStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_3m",
      "Multistep DPM-Solver-3, noise prediction (Lu et al. 2022, arXiv 2206.00927 and 2211.01095)")
      .with_order(3)
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options({"variant", "d2_weight", "lower_order_final", "lower_order_final_steps"});
  return traits;
}

StepResult DpmSolver3MStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                    SolverState state, const StepContext& ctx) const {
  auto out = model(x, s);
  auto& hist = state.history;
  const int64_t order = lower_order_final_.order(3, hist.size(), ctx);
  std::vector<double> times{s};
  std::vector<at::Tensor> eps{out.eps};
  for (int64_t k = 1; k < order; ++k) {
    times.push_back(hist[hist.size() - k].t);
    eps.push_back(hist[hist.size() - k].eps);
  }
  auto x_next = dpm_solver_multistep_update(model.schedule(), x, times, eps, t, order, variant_, d2_weight_);
  hist.push_back(HistoryEntry{s, out.x0, out.eps});
  if (hist.size() > 2) hist.erase(hist.begin());
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
