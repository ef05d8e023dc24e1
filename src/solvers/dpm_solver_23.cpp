#include "fewstep/solvers/dpm_solver_23.h"

#include <algorithm>
#include <cmath>

namespace fewstep {

namespace {
constexpr double kR1 = 1.0 / 3.0;
constexpr double kR2 = 2.0 / 3.0;
}  // namespace

DpmSolver23Stepper::DpmSolver23Stepper(const Options& options) {
  options.check_known(traits().options, "solver 'dpm_solver_23'");
}

const StepperTraits& DpmSolver23Stepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_23",
      "DPM-Solver-23 (Lu et al. 2022, sec. 4): DPM-Solver-3 with an embedded DPM-Solver-2 error estimate")
      .with_order(3)
      .with_nfe_per_step(3)
      .with_error_estimate()
      .with_needs(Needs::Eps);
  return traits;
}

StepResult DpmSolver23Stepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                    const StepContext& /*ctx*/) const {
  const auto& sc = model.schedule();
  const double lam_s = sc.lambda(s);
  const double h = sc.lambda(t) - lam_s;
  const double s1 = std::clamp(sc.t_of_lambda(lam_s + kR1 * h), t, s);
  const double s2 = std::clamp(sc.t_of_lambda(lam_s + kR2 * h), t, s);
  const double phi = std::expm1(h);
  const double phi_r2 = std::expm1(kR2 * h);
  const double sigma_t = sc.sigma(t);
  const double sigma_s2 = sc.sigma(s2);

  auto out_s = model(x, s);
  const at::Tensor& eps_s = out_s.eps;
  // The first-order (DDIM) part shared by both solutions.
  auto x_first = x * std::exp(sc.log_alpha(t) - sc.log_alpha(s)) - eps_s * (sigma_t * phi);

  auto u1 = x * std::exp(sc.log_alpha(s1) - sc.log_alpha(s)) - eps_s * (sc.sigma(s1) * std::expm1(kR1 * h));
  auto d1 = model(u1, s1).eps - eps_s;
  auto x_low = x_first - d1 * (sigma_t * phi / (2 * kR1));

  auto u2 = x * std::exp(sc.log_alpha(s2) - sc.log_alpha(s)) - eps_s * (sigma_s2 * phi_r2) -
            d1 * ((kR2 / kR1) * sigma_s2 * (phi_r2 / (kR2 * h) - 1));
  auto out_s2 = model(u2, s2);
  auto x_high = x_first - (out_s2.eps - eps_s) * (sigma_t / kR2 * (phi / h - 1));
  auto error = x_high - x_low;
  return StepResult{x_high, out_s2.x0, error, std::move(state)};
}

}  // namespace fewstep
