#include "fewstep/solvers/dpmpp_2s.h"

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

DpmSolverPP2SStepper::DpmSolverPP2SStepper(const Options& options) {
  const std::string owner = "solver 'dpmpp_2s'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  r_ = options.get_double("r1", 0.5);
  FEWSTEP_CHECK_VALUE(std::isfinite(r_) && r_ > 0.0 && r_ <= 1.0, owner, ": r1 must be in (0, 1], got ", r_);
}

const StepperTraits& DpmSolverPP2SStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpmpp_2s",
      "DPM-Solver++(2S), singlestep, data prediction (Lu et al. 2022, arXiv 2211.01095, Alg. 1)")
      .with_order(2)
      .with_nfe_per_step(2)
      .with_needs(Needs::X0)
      .with_options({"variant", "r1"});
  return traits;
}

StepResult DpmSolverPP2SStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                      SolverState state, const StepContext& /*ctx*/) const {
  const auto& sc = model.schedule();
  auto at_s = model(x, s);
  const double lambda_s = sc.lambda(s);
  const double h = sc.lambda(t) - lambda_s;
  const double s1 = intermediate_time(sc, lambda_s + r_ * h, s, t);
  const double log_sigma_s = sc.log_sigma(s);
  auto u = x * std::exp(sc.log_sigma(s1) - log_sigma_s) - at_s.x0 * (sc.alpha(s1) * std::expm1(-r_ * h));
  auto at_s1 = model(u, s1);
  const double alpha_t = sc.alpha(t);
  const double phi_1 = std::expm1(-h);
  const double c = variant_ == DpmSolverVariant::DpmSolver ? -alpha_t * phi_1 * (0.5 / r_)
                                                           : alpha_t * (phi_1 / h + 1.0) / r_;
  auto x_t = x * std::exp(sc.log_sigma(t) - log_sigma_s) - at_s.x0 * (alpha_t * phi_1) + (at_s1.x0 - at_s.x0) * c;
  return StepResult{x_t, at_s1.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
