#include "fewstep/solvers/dpm_solver_12.h"

#include <algorithm>
#include <cmath>

namespace fewstep {

namespace {
constexpr double kR1 = 0.5;
}  // namespace

DpmSolver12Stepper::DpmSolver12Stepper(const Options& options) {
  options.check_known(traits().options, "solver 'dpm_solver_12'");
}

const StepperTraits& DpmSolver12Stepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("dpm_solver_12",
      "DPM-Solver-12 (Lu et al. 2022, sec. 4): DPM-Solver-2 with an embedded DPM-Solver-1 error estimate")
      .with_order(2)
      .with_nfe_per_step(2)
      .with_error_estimate()
      .with_needs(Needs::Eps);
  return traits;
}

StepResult DpmSolver12Stepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                                    const StepContext& /*ctx*/) const {
  const auto& sc = model.schedule();
  const double lam_s = sc.lambda(s);
  const double h = sc.lambda(t) - lam_s;
  const double s1 = std::clamp(sc.t_of_lambda(lam_s + kR1 * h), t, s);
  const double phi = std::expm1(h);

  auto out_s = model(x, s);
  auto x_low = x * std::exp(sc.log_alpha(t) - sc.log_alpha(s)) - out_s.eps * (sc.sigma(t) * phi);
  auto u = x * std::exp(sc.log_alpha(s1) - sc.log_alpha(s)) - out_s.eps * (sc.sigma(s1) * std::expm1(kR1 * h));
  auto out_s1 = model(u, s1);
  auto error = (out_s1.eps - out_s.eps) * (-sc.sigma(t) * phi / (2 * kR1));
  return StepResult{x_low + error, out_s1.x0, error, std::move(state)};
}

}  // namespace fewstep
