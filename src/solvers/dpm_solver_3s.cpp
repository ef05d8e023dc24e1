#include "fewstep/solvers/dpm_solver_3s.h"

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

SinglestepUpdate dpm_solver_3_update(ModelEvaluator& model, const at::Tensor& x, const DenoiserOutput& at_s, double s,
                                     double t, double r1, double r2, DpmSolverVariant variant) {
  const auto& sc = model.schedule();
  const double lambda_s = sc.lambda(s);
  const double h = sc.lambda(t) - lambda_s;
  const double s1 = intermediate_time(sc, lambda_s + r1 * h, s, t);
  const double s2 = intermediate_time(sc, lambda_s + r2 * h, s, t);
  const double log_alpha_s = sc.log_alpha(s);
  const double sigma_s1 = sc.sigma(s1), sigma_s2 = sc.sigma(s2), sigma_t = sc.sigma(t);
  const double phi_11 = std::expm1(r1 * h), phi_12 = std::expm1(r2 * h), phi_1 = std::expm1(h);
  const double phi_22 = phi_12 / (r2 * h) - 1.0;
  const double phi_2 = phi_1 / h - 1.0;
  const double phi_3 = phi_2 / h - 0.5;

  auto u1 = x * std::exp(sc.log_alpha(s1) - log_alpha_s) - at_s.eps * (sigma_s1 * phi_11);
  auto d1 = model(u1, s1).eps - at_s.eps;
  // u_2 is itself a second-order (taylor-form) step to s_2, built from D_1.
  auto u2 = x * std::exp(sc.log_alpha(s2) - log_alpha_s) - at_s.eps * (sigma_s2 * phi_12) -
            d1 * (r2 / r1 * sigma_s2 * phi_22);
  auto at_s2 = model(u2, s2);
  auto d2 = at_s2.eps - at_s.eps;
  auto x_t = x * std::exp(sc.log_alpha(t) - log_alpha_s) - at_s.eps * (sigma_t * phi_1);
  if (variant == DpmSolverVariant::DpmSolver) {
    x_t = x_t - d2 * (sigma_t * phi_2 / r2);
  } else {
    auto delta_1 = d1 * (1.0 / r1);
    auto delta_2 = d2 * (1.0 / r2);
    auto first = (delta_1 * r2 - delta_2 * r1) * (1.0 / (r2 - r1));
    auto second = (delta_2 - delta_1) * (2.0 / (r2 - r1));
    x_t = x_t - first * (sigma_t * phi_2) - second * (sigma_t * phi_3);
  }
  return SinglestepUpdate{x_t, at_s2.x0};
}

DpmSolver3SStepper::DpmSolver3SStepper(const Options& options) {
  const std::string owner = "solver 'dpm_solver_3s'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  r1_ = options.get_double("r1", 1.0 / 3.0);
  r2_ = options.get_double("r2", 2.0 / 3.0);
  FEWSTEP_CHECK_VALUE(std::isfinite(r1_) && std::isfinite(r2_) && 0.0 < r1_ && r1_ < r2_ && r2_ <= 1.0, owner,
                      ": need 0 < r1 < r2 <= 1, got r1 = ", r1_, ", r2 = ", r2_);
}

const StepperTraits& DpmSolver3SStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_3s",
      "DPM-Solver-3, singlestep, noise prediction (Lu et al. 2022, arXiv 2206.00927, Alg. 2)")
      .with_order(3)
      .with_nfe_per_step(3)
      .with_needs(Needs::Eps)
      .with_options({"variant", "r1", "r2"});
  return traits;
}

StepResult DpmSolver3SStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                    SolverState state, const StepContext& /*ctx*/) const {
  auto at_s = model(x, s);
  auto update = dpm_solver_3_update(model, x, at_s, s, t, r1_, r2_, variant_);
  return StepResult{update.x, update.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
