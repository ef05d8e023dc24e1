#include "fewstep/psld/sde_samplers.h"

#include <cmath>

#include "rules.h"

namespace fewstep {

namespace {
double clock(const PsldProcess& p, double s, double t) {
  FEWSTEP_CHECK_VALUE(t < s, "psld sampler step: t must be below s, got s=", s, ", t=", t);
  return p.beta_integral(s) - p.beta_integral(t);
}
}  // namespace

PsldEulerMaruyama::PsldEulerMaruyama(const Options& options) {
  options.check_known(traits().options, "psld sampler 'psld_em'");
}

const PsldSamplerTraits& PsldEulerMaruyama::traits() const {
  static const PsldSamplerTraits traits{
      "psld_em", 1, 1, 0, true, "Euler-Maruyama on the PSLD reverse SDE (Song et al. 2021 eq. 6; PSLD eq. 6)", {}};
  return traits;
}

PsldStepResult PsldEulerMaruyama::step(PsldEvaluator& model, const at::Tensor& z, double s, double t,
                                       PsldState state, const PsldStepContext& ctx) const {
  const auto& p = model.process();
  const double b = clock(p, s, t);
  auto score = model(z, s);
  auto eta = psld_rules::draw(ctx, z, "psld_em");
  auto [ex, em] = split_state(eta, "psld_em");
  auto noise = at::cat({ex * std::sqrt(p.gamma() * b), em * std::sqrt(p.mass() * p.nu() * b)}, 1);
  state.steps_taken += 1;
  return {z + psld_rules::reverse_drift(p, z, score, 2.0) * b + noise, std::move(state)};
}

PsldOdeEuler::PsldOdeEuler(const Options& options) {
  options.check_known(traits().options, "psld sampler 'psld_ode_euler'");
}

const PsldSamplerTraits& PsldOdeEuler::traits() const {
  static const PsldSamplerTraits traits{
      "psld_ode_euler", 1, 1, 0, false, "Euler on the PSLD probability-flow ODE (Song et al. 2021 eq. 13)", {}};
  return traits;
}

PsldStepResult PsldOdeEuler::step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                                  const PsldStepContext&) const {
  const auto& p = model.process();
  const double b = clock(p, s, t);
  state.steps_taken += 1;
  return {z + psld_rules::reverse_drift(p, z, model(z, s), 1.0) * b, std::move(state)};
}

PsldOdeHeun::PsldOdeHeun(const Options& options) {
  options.check_known(traits().options, "psld sampler 'psld_ode_heun'");
}

const PsldSamplerTraits& PsldOdeHeun::traits() const {
  static const PsldSamplerTraits traits{
      "psld_ode_heun", 2, 2, 0, false,
      "Heun (explicit trapezoid) on the PSLD probability-flow ODE (Karras et al. 2022 Alg. 1 without churn)", {}};
  return traits;
}

PsldStepResult PsldOdeHeun::step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                                 const PsldStepContext&) const {
  const auto& p = model.process();
  const double b = clock(p, s, t);
  auto f0 = psld_rules::reverse_drift(p, z, model(z, s), 1.0);
  auto z1 = z + f0 * b;
  auto f1 = psld_rules::reverse_drift(p, z1, model(z1, t), 1.0);
  state.steps_taken += 1;
  return {z + (f0 + f1) * (0.5 * b), std::move(state)};
}

}  // namespace fewstep
