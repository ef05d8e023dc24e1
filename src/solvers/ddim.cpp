#include "fewstep/solvers/ddim.h"

#include <cmath>

#include "fewstep/core/check.h"
#include "stochastic_noise.h"

namespace fewstep {

namespace {
struct DdimCoefficients {
  double ratio, c0;  // x_t = ratio x − c0 x̂_0
};
DdimCoefficients ddim_coefficients(const NoiseSchedule& schedule, double s, double t) {
  const double h = schedule.lambda(t) - schedule.lambda(s);
  return {std::exp(schedule.log_sigma(t) - schedule.log_sigma(s)), schedule.alpha(t) * std::expm1(-h)};
}
}  // namespace

at::Tensor ddim_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s, double t) {
  const DdimCoefficients c = ddim_coefficients(schedule, s, t);
  return x * c.ratio - x0 * c.c0;
}

at::Tensor ddim_update_consuming(const NoiseSchedule& schedule, const at::Tensor& x, at::Tensor& x0_scratch, double s,
                                 double t) {
  const DdimCoefficients c = ddim_coefficients(schedule, s, t);
  at::Tensor out = x * c.ratio;
  return out.sub_(x0_scratch.mul_(c.c0));
}

at::Tensor ddim_eta_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double s,
                           double t, double eta, const at::Tensor& z) {
  const double h = schedule.lambda(t) - schedule.lambda(s);
  const double one_minus_e2h = -std::expm1(-2.0 * h);  // 1 − e^{−2h}: posterior variance / σ_t²
  // log ρ = ½ log(1 − η²(1 − e^{−2h})); 1 − ρ e^{−h} = −expm1(log ρ − h) keeps precision as h → 0.
  const double log_rho = 0.5 * std::log1p(-eta * eta * one_minus_e2h);
  const double c_x = std::exp(log_rho + schedule.log_sigma(t) - schedule.log_sigma(s));
  const double c_0 = -schedule.alpha(t) * std::expm1(log_rho - h);
  const double c_z = eta * schedule.sigma(t) * std::sqrt(one_minus_e2h);
  return x * c_x + x0 * c_0 + z * c_z;
}

DdimStepper::DdimStepper(const Options& options) {
  options.check_known({"eta"}, "solver 'ddim'");
  eta_ = options.get_double("eta", 0.0);
  FEWSTEP_CHECK_VALUE(std::isfinite(eta_) && eta_ >= 0.0 && eta_ <= 1.0,
                      "solver 'ddim': eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like ancestral), got ",
                      eta_);
  traits_ = StepperTraits::named("ddim",
      "DDIM (Song et al. 2021, eq. 12/16): eta = 0 deterministic first-order exponential integrator (default), eta "
      "> 0 stochastic with sigma_t(eta)")
      .with_stochastic(eta_ > 0.0)
      .with_needs(Needs::X0)
      .with_options({"eta"});
}

StepResult DdimStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                             const StepContext& ctx) const {
  auto out = model(x, s);
  if (eta_ == 0.0) {
    return StepResult{ddim_update(model.schedule(), x, out.x0, s, t), out.x0, std::nullopt, std::move(state)};
  }
  auto z = detail::draw_noise(ctx, x, "ddim");
  return StepResult{ddim_eta_update(model.schedule(), x, out.x0, s, t, eta_, z), out.x0, std::nullopt,
                    std::move(state)};
}

}  // namespace fewstep
