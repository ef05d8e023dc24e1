#include "fewstep/solvers/dpm_solver_2s.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

DpmSolverVariant parse_dpm_solver_variant(const std::string& name, const std::string& owner) {
  if (name == "dpmsolver") return DpmSolverVariant::DpmSolver;
  if (name == "taylor") return DpmSolverVariant::Taylor;
  FEWSTEP_CHECK_VALUE(false, owner, ": variant must be 'dpmsolver' or 'taylor', got '", name, "'");
  throw;  // unreachable
}

std::string to_string(DpmSolverVariant variant) {
  return variant == DpmSolverVariant::DpmSolver ? "dpmsolver" : "taylor";
}

double intermediate_time(const NoiseSchedule& schedule, double lambda, double s, double t) {
  return std::min(std::max(schedule.t_of_lambda(lambda), t), s);
}

at::Tensor dpm_solver_1_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps_s, double s,
                               double t) {
  const double h = schedule.lambda(t) - schedule.lambda(s);
  return x * std::exp(schedule.log_alpha(t) - schedule.log_alpha(s)) - eps_s * (schedule.sigma(t) * std::expm1(h));
}

SinglestepUpdate dpm_solver_2_update(ModelEvaluator& model, const at::Tensor& x, const DenoiserOutput& at_s, double s,
                                     double t, double r1, DpmSolverVariant variant) {
  const auto& sc = model.schedule();
  const double lambda_s = sc.lambda(s);
  const double h = sc.lambda(t) - lambda_s;
  const double s1 = intermediate_time(sc, lambda_s + r1 * h, s, t);
  const double log_alpha_s = sc.log_alpha(s);
  auto u = x * std::exp(sc.log_alpha(s1) - log_alpha_s) - at_s.eps * (sc.sigma(s1) * std::expm1(r1 * h));
  auto at_s1 = model(u, s1);
  const double sigma_t = sc.sigma(t);
  const double phi_1 = std::expm1(h);
  // Both variants add a multiple of the divided difference D to the first-order update.
  const double c = variant == DpmSolverVariant::DpmSolver ? sigma_t * phi_1 * (0.5 / r1)
                                                          : sigma_t * (phi_1 / h - 1.0) / r1;
  auto x_t = x * std::exp(sc.log_alpha(t) - log_alpha_s) - at_s.eps * (sigma_t * phi_1) - (at_s1.eps - at_s.eps) * c;
  return SinglestepUpdate{x_t, at_s1.x0};
}

DpmSolver2SStepper::DpmSolver2SStepper(const Options& options) {
  const std::string owner = "solver 'dpm_solver_2s'";
  options.check_known(traits().options, owner);
  variant_ = parse_dpm_solver_variant(options.get_string("variant", "dpmsolver"), owner);
  r1_ = options.get_double("r1", 0.5);
  FEWSTEP_CHECK_VALUE(std::isfinite(r1_) && r1_ > 0.0 && r1_ <= 1.0, owner, ": r1 must be in (0, 1], got ", r1_);
}

const StepperTraits& DpmSolver2SStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_2s",
      "DPM-Solver-2, singlestep, noise prediction (Lu et al. 2022, arXiv 2206.00927, Alg. 1)")
      .with_order(2)
      .with_nfe_per_step(2)
      .with_needs(Needs::Eps)
      .with_options({"variant", "r1"});
  return traits;
}

StepResult DpmSolver2SStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                    SolverState state, const StepContext& /*ctx*/) const {
  auto at_s = model(x, s);
  auto update = dpm_solver_2_update(model, x, at_s, s, t, r1_, variant_);
  return StepResult{update.x, update.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
