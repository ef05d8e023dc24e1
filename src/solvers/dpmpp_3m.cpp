#include "fewstep/solvers/dpmpp_3m.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/solvers/ddim.h"

namespace fewstep {

DpmSolverPP3MStepper::DpmSolverPP3MStepper(const Options& options) {
  options.check_known(traits().options, "solver 'dpmpp_3m'");
  lower_order_final_ = LowerOrderFinal::from_options(options, "solver 'dpmpp_3m'");
  const std::string variant = options.get_string("variant", "taylor");
  FEWSTEP_CHECK_VALUE(variant == "taylor" || variant == "official", "solver 'dpmpp_3m': variant must be 'taylor' or ",
                      "'official', got '", variant, "'");
  // The official code's multistep update weights D_2 = h² x̂''/2 by −α_t φ_3 where the Taylor
  // expansion needs −α_t φ_3 h² x̂'' (see the header): half the second-derivative term.
  d2_weight_ = variant == "taylor" ? 2.0 : 1.0;
}

const StepperTraits& DpmSolverPP3MStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpmpp_3m",
      "DPM-Solver++(3M), data prediction, multistep (Lu et al. 2022, arXiv 2211.01095)")
      .with_order(3)
      .with_multistep()
      .with_needs(Needs::X0)
      .with_options({"lower_order_final", "lower_order_final_steps", "variant"});
  return traits;
}

StepResult DpmSolverPP3MStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                      SolverState state, const StepContext& ctx) const {
  const auto& sc = model.schedule();
  auto out = model(x, s);
  // Order: limited by the history (warm-up) and, on short grids, by the steps left.
  const int64_t order = lower_order_final_.order(3, state.history.size(), ctx);
  at::Tensor x_next;
  if (order <= 1) {
    x_next = ddim_update(sc, x, out.x0, s, t);
  } else {
    const double lambda_s = sc.lambda(s);
    const double h = sc.lambda(t) - lambda_s;
    const HistoryEntry& p1 = state.history.back();
    const double lambda_1 = sc.lambda(p1.t);
    const double r0 = (lambda_s - lambda_1) / h;
    // In place, with the operations and their order of the formulas in the header: the same bits as
    // out-of-place arithmetic, 6 full-size temporaries instead of 16.
    at::Tensor delta_0 = at::sub(out.x0, p1.x0);
    delta_0.mul_(1.0 / r0);
    if (order == 2) {
      // DPM-Solver++(2M): D = m_0 + δ_0/2.
      delta_0.mul_(0.5).add_(out.x0);
      x_next = ddim_update_consuming(sc, x, delta_0, s, t);
    } else {
      const HistoryEntry& p2 = state.history[state.history.size() - 2];
      const double r1 = (lambda_1 - sc.lambda(p2.t)) / h;
      at::Tensor delta_1 = at::sub(p1.x0, p2.x0);
      delta_1.mul_(1.0 / r1);
      at::Tensor d2 = at::sub(delta_0, delta_1);             // δ_0 − δ_1
      at::Tensor d1 = at::mul(d2, r0 / (r0 + r1)).add_(delta_0);
      d2.mul_(1.0 / (r0 + r1));
      const double alpha_t = sc.alpha(t);
      const double phi_1 = std::expm1(-h);
      const double phi_2 = phi_1 / h + 1.0;
      const double phi_3 = phi_2 / h - 0.5;
      x_next = x * std::exp(sc.log_sigma(t) - sc.log_sigma(s));
      x_next.sub_(out.x0 * (alpha_t * phi_1));
      x_next.add_(d1.mul_(alpha_t * phi_2));
      x_next.sub_(d2.mul_(alpha_t * phi_3 * d2_weight_));
    }
  }
  state.history.push_back(HistoryEntry{s, out.x0, out.eps});
  if (state.history.size() > 2) state.history.erase(state.history.begin());
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
