#include "fewstep/solvers/dpm_solver_2m.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

at::Tensor dpm_solver_multistep_update(const NoiseSchedule& sc, const at::Tensor& x, const std::vector<double>& times,
                                       const std::vector<at::Tensor>& eps, double t, int64_t order,
                                       DpmSolverVariant variant, double d2_weight) {
  FEWSTEP_CHECK_VALUE(order >= 1 && order <= 3, "dpm_solver_multistep_update: order must be 1, 2 or 3, got ", order);
  FEWSTEP_CHECK_VALUE(static_cast<int64_t>(times.size()) >= order && eps.size() == times.size(),
                      "dpm_solver_multistep_update: order ", order, " needs as many times and eps as its order, got ",
                      times.size(), " times and ", eps.size(), " eps");
  const double s = times[0];
  const double lambda_s = sc.lambda(s);
  const double h = sc.lambda(t) - lambda_s;
  const double sigma_t = sc.sigma(t);
  const double phi_1 = std::expm1(h);
  const double ratio = std::exp(sc.log_alpha(t) - sc.log_alpha(s));
  // In place: the first-order update, then the correction terms subtracted from it.
  at::Tensor out = x * ratio;
  out.sub_(eps[0] * (sigma_t * phi_1));
  if (order == 1) return out;
  const double lambda_1 = sc.lambda(times[1]);
  const double r0 = (lambda_s - lambda_1) / h;
  at::Tensor delta_0 = at::sub(eps[0], eps[1]);
  delta_0.mul_(1.0 / r0);
  if (order == 2) {
    const double c = variant == DpmSolverVariant::DpmSolver ? 0.5 * sigma_t * phi_1 : sigma_t * (phi_1 / h - 1.0);
    return out.sub_(delta_0.mul_(c));
  }
  const double r1 = (lambda_1 - sc.lambda(times[2])) / h;
  at::Tensor delta_1 = at::sub(eps[1], eps[2]);
  delta_1.mul_(1.0 / r1);
  at::Tensor d2 = at::sub(delta_0, delta_1);
  at::Tensor d1 = at::mul(d2, r0 / (r0 + r1)).add_(delta_0);
  d2.mul_(1.0 / (r0 + r1));
  const double phi_2 = phi_1 / h - 1.0;
  const double phi_3 = phi_2 / h - 0.5;
  out.sub_(d1.mul_(sigma_t * phi_2));
  return out.sub_(d2.mul_(sigma_t * phi_3 * d2_weight));
}

DpmSolver2MStepper::DpmSolver2MStepper(const Options& options) {
  const std::string owner = "solver 'dpm_solver_2m'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  lower_order_final_ = LowerOrderFinal::from_options(options, owner);
}

const StepperTraits& DpmSolver2MStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_2m",
      "Multistep DPM-Solver-2, noise prediction (Lu et al. 2022, arXiv 2206.00927 and 2211.01095)")
      .with_order(2)
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options({"variant", "lower_order_final", "lower_order_final_steps"});
  return traits;
}

StepResult DpmSolver2MStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                    SolverState state, const StepContext& ctx) const {
  auto out = model(x, s);
  auto& hist = state.history;
  const int64_t order = lower_order_final_.order(2, hist.size(), ctx);
  std::vector<double> times{s};
  std::vector<at::Tensor> eps{out.eps};
  if (order == 2) {
    times.push_back(hist.back().t);
    eps.push_back(hist.back().eps);
  }
  auto x_next = dpm_solver_multistep_update(model.schedule(), x, times, eps, t, order, variant_, 1.0);
  hist.clear();
  hist.push_back(HistoryEntry{s, out.x0, out.eps});
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
