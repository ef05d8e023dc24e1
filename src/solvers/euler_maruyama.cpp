#include "fewstep/solvers/euler_maruyama.h"

#include <cmath>

#include "stochastic_noise.h"

namespace fewstep {

EulerMaruyamaStepper::EulerMaruyamaStepper(const Options& options) {
  options.check_known(traits().options, "solver 'euler_maruyama'");
}

const StepperTraits& EulerMaruyamaStepper::traits() const {
  static const StepperTraits traits = StepperTraits::named("euler_maruyama",
      "Euler-Maruyama on the reverse-time SDE in t (Song et al. 2021, eq. 6), weak order 1")
      .with_stochastic();
  return traits;
}

StepResult EulerMaruyamaStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t,
                                      SolverState state, const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  const double dt = t - s;  // negative
  const double sigma = schedule.sigma(s);
  const double dlambda = schedule.dlambda_dt(s);  // < 0, so g² = −2σ²λ̇ > 0
  auto drift = x * schedule.dlog_alpha_dt(s) - out.eps * (2.0 * sigma * dlambda);
  const double diffusion = sigma * std::sqrt(-2.0 * dlambda * -dt);  // g_s √|dt|
  auto z = detail::draw_noise(ctx, x, "euler_maruyama");
  return StepResult{x + drift * dt + z * diffusion, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
