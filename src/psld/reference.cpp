#include "fewstep/psld/reference.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {
// The time t with B(t) = target, B increasing (Newton from a bracketing start).
double time_of_integral(const PsldProcess& p, double target, double guess) {
  double t = guess;
  for (int i = 0; i < 50; ++i) {
    const double step = (p.beta_integral(t) - target) / p.beta(t);
    t -= step;
    if (std::abs(step) < 1e-15 * std::max(1.0, std::abs(t))) break;
  }
  return t;
}
}  // namespace

PsldStepLaw psld_affine_step_law(const PsldModel& model, double x0, double m0, double s, double t, int substeps) {
  FEWSTEP_CHECK_VALUE(t < s, "psld_affine_step_law: t must be below s, got s=", s, ", t=", t);
  FEWSTEP_CHECK_VALUE(substeps >= 1, "psld_affine_step_law: substeps must be >= 1, got ", substeps);
  const auto& p = model.process();
  const double g = p.gamma(), nu = p.nu(), mi = p.mass_inverse(), mass = p.mass();
  const double bs = p.beta_integral(s), b = bs - p.beta_integral(t);
  const auto basis = at::tensor({0.0, 0.0, 1.0, 0.0, 0.0, 1.0}, at::kDouble).view({3, 2});
  using V = std::array<double, 5>;  // μx, μm, Pxx, Pxm, Pmm
  auto f = [&](double r, const V& y) {
    // S_t and q_t from the score at 0, e_x and e_m.
    const double tr = time_of_integral(p, bs - r, s - r / p.beta(s));
    const auto sc = model.score(basis, tr).to(at::kDouble).contiguous();
    const auto a = sc.accessor<double, 2>();
    const double sxx = a[1][0] - a[0][0], sxm = a[2][0] - a[0][0], smx = a[1][1] - a[0][1], smm = a[2][1] - a[0][1];
    const double jxx = g / 2 + g * sxx, jxm = -mi / 2 + g * sxm;
    const double jmx = 0.5 + mass * nu * smx, jmm = nu / 2 + mass * nu * smm;
    const double kx = g * a[0][0], km = mass * nu * a[0][1];
    const double xx = y[2], xm = y[3], mm = y[4];
    return V{jxx * y[0] + jxm * y[1] + kx, jmx * y[0] + jmm * y[1] + km, 2 * (jxx * xx + jxm * xm) + g,
             jxx * xm + jxm * mm + jmx * xx + jmm * xm, 2 * (jmx * xm + jmm * mm) + mass * nu};
  };
  V y{x0, m0, 0, 0, 0};
  const double h = b / substeps;
  for (int i = 0; i < substeps; ++i) {
    const double r = i * h;
    V k1 = f(r, y), y2, y3, y4;
    for (int j = 0; j < 5; ++j) y2[j] = y[j] + 0.5 * h * k1[j];
    V k2 = f(r + h / 2, y2);
    for (int j = 0; j < 5; ++j) y3[j] = y[j] + 0.5 * h * k2[j];
    V k3 = f(r + h / 2, y3);
    for (int j = 0; j < 5; ++j) y4[j] = y[j] + h * k3[j];
    V k4 = f(r + h, y4);
    for (int j = 0; j < 5; ++j) y[j] += h / 6 * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]);
  }
  return PsldStepLaw{y[0], y[1], Cov2{y[2], y[3], y[4]}};
}

PsldLocalError psld_local_error(const PsldModel& model, const PsldSampler& sampler, const PsldStepLaw& law, double x0,
                                double m0, double s, double t, int64_t n, NoiseSampler& noise) {
  FEWSTEP_CHECK_VALUE(n >= 2, "psld_local_error: n must be >= 2, got ", n);
  auto z = at::tensor({x0, m0}, at::kDouble).view({1, 2}).expand({n, 2}).contiguous();
  PsldEvaluator eval(model);
  PsldStepContext ctx{0, 1, &noise};
  const auto out = sampler.step(eval, z, s, t, PsldState{}, ctx).z.to(at::kDouble);
  const auto mean = out.mean(0);
  const auto d = out - mean;
  const auto cov = (at::mm(d.t(), d) / static_cast<double>(n - 1)).contiguous();
  const auto c = cov.accessor<double, 2>();
  const double nn = static_cast<double>(n), v = std::max(law.cov.xx, law.cov.mm);
  PsldLocalError e;
  e.mean = std::max(std::abs(mean[0].item<double>() - law.mean_x), std::abs(mean[1].item<double>() - law.mean_m));
  e.cov = std::max({std::abs(c[0][0] - law.cov.xx), std::abs(c[0][1] - law.cov.xm), std::abs(c[1][1] - law.cov.mm)});
  e.mean_se = std::sqrt(v / nn);
  e.cov_se = v * std::sqrt(2 / nn);
  return e;
}

}  // namespace fewstep
