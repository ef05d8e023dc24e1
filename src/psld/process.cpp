#include "fewstep/psld/process.h"

#include <cmath>
#include <sstream>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// Shape [B, 1, 1, ...] of a per-sample coefficient broadcast against a state of `like`'s rank.
at::Tensor per_sample(const std::vector<double>& values, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = static_cast<int64_t>(values.size());
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble)).view(shape).to(like.options());
}

}  // namespace

void PsldConfig::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(beta_min) && beta_min > 0, "PsldConfig.beta_min must be positive, got ", beta_min);
  FEWSTEP_CHECK_VALUE(std::isfinite(beta_max) && beta_max > 0, "PsldConfig.beta_max must be positive, got ", beta_max);
  FEWSTEP_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0, "PsldConfig.gamma (Γ) must be >= 0, got ", gamma);
  FEWSTEP_CHECK_VALUE(std::isfinite(nu) && nu >= 0, "PsldConfig.nu (ν) must be >= 0, got ", nu);
  FEWSTEP_CHECK_VALUE(gamma > 0 && nu > 0,
                      "PsldConfig: Γ and ν must both be positive (noise in x and m keeps Σ_t invertible), got gamma=",
                      gamma, ", nu=", nu);
  if (mass_inverse) {
    FEWSTEP_CHECK_VALUE(std::isfinite(*mass_inverse) && *mass_inverse > 0,
                        "PsldConfig.mass_inverse (M⁻¹) must be positive, got ", *mass_inverse);
  } else {
    FEWSTEP_CHECK_VALUE(gamma != nu, "PsldConfig: critical damping M⁻¹ = (Γ − ν)²/4 needs Γ != ν, got gamma=nu=", nu,
                        "; set mass_inverse");
  }
  FEWSTEP_CHECK_VALUE(kappa >= 0 && kappa < 1, "PsldConfig.kappa (m_0 ~ N(0, κM)) must be in [0, 1), got ", kappa);
  FEWSTEP_CHECK_VALUE(std::isfinite(t_max) && t_max > 0, "PsldConfig.t_max must be positive, got ", t_max);
  FEWSTEP_CHECK_VALUE(t_min > 0 && t_min < t_max, "PsldConfig.t_min must be in (0, t_max=", t_max, "), got ", t_min);
}

std::string PsldConfig::repr() const {
  std::ostringstream s;
  s << "PSLD(beta_min=" << beta_min << ", beta_max=" << beta_max << ", gamma=" << gamma << ", nu=" << nu
    << ", M_inv=" << (mass_inverse ? *mass_inverse : (gamma - nu) * (gamma - nu) / 4) << ", kappa=" << kappa
    << ", t_min=" << t_min << ", t_max=" << t_max << ")";
  return s.str();
}

PsldProcess::PsldProcess(PsldConfig config) : config_(std::move(config)) {
  config_.validate();
  m_inv_ = config_.mass_inverse ? *config_.mass_inverse : (config_.gamma - config_.nu) * (config_.gamma - config_.nu) / 4;
}

double PsldProcess::beta(double t) const { return config_.beta_min + t * (config_.beta_max - config_.beta_min); }

double PsldProcess::beta_integral(double t) const {
  return config_.beta_min * t + 0.5 * t * t * (config_.beta_max - config_.beta_min);
}

Mat2 PsldProcess::transition(double b) const {
  // A = ½[[−Γ, M⁻¹], [−1, −ν]] = τ I + N with τ = −(Γ + ν)/4 and N² = q I.
  const double g = config_.gamma, n = config_.nu;
  const double tau = -(g + n) / 4;
  const double n11 = (n - g) / 4, n12 = m_inv_ / 2, n21 = -0.5, n22 = (g - n) / 4;
  const double q = n11 * n11 + n12 * n21;  // N² = (n11² + n12 n21) I since n22 = −n11
  double c, s;
  const double qb2 = q * b * b;
  if (std::abs(qb2) < 1e-8) {  // series: cosh and sinh(r b)/r to O(q² b⁴)
    c = 1 + qb2 / 2;
    s = b * (1 + qb2 / 6);
  } else if (q > 0) {
    const double r = std::sqrt(q);
    c = std::cosh(r * b);
    s = std::sinh(r * b) / r;
  } else {
    const double r = std::sqrt(-q);
    c = std::cos(r * b);
    s = std::sin(r * b) / r;
  }
  const double e = std::exp(tau * b);
  return Mat2{e * (c + s * n11), e * s * n12, e * s * n21, e * (c + s * n22)};
}

namespace {
// Σ∞ − Φ diag(d1, d2) Φᵀ.
Cov2 stationary_minus(const Mat2& p, double mass, double d1, double d2) {
  return Cov2{1.0 - (p.a11 * p.a11 * d1 + p.a12 * p.a12 * d2), -(p.a11 * p.a21 * d1 + p.a12 * p.a22 * d2),
              mass - (p.a21 * p.a21 * d1 + p.a22 * p.a22 * d2)};
}
}  // namespace

Cov2 PsldProcess::noise_covariance(double b) const {
  FEWSTEP_CHECK_VALUE(b >= 0, "noise_covariance: integrated beta b must be >= 0, got ", b);
  return stationary_minus(transition(b), mass(), 1.0, mass());
}

Cov2 PsldProcess::kernel_covariance(double t) const {
  FEWSTEP_CHECK_VALUE(t >= 0 && t <= config_.t_max * (1 + 1e-12), "kernel_covariance: t must be in [0, t_max=",
                      config_.t_max, "], got ", t);
  return stationary_minus(transition(beta_integral(t)), mass(), 1.0, mass() * (1 - config_.kappa));
}

Mat2 PsldProcess::kernel_cholesky(double t) const {
  const Cov2 c = kernel_covariance(t);
  const double det = c.xx * c.mm - c.xm * c.xm;
  FEWSTEP_CHECK_VALUE(c.xx > 0 && det > 0, "kernel_cholesky: Σ_t is not positive definite at t=", t,
                      " (xx=", c.xx, ", det=", det, "); use t >= t_min");
  const double l11 = std::sqrt(c.xx);
  const double l21 = c.xm / l11;
  return Mat2{l11, 0.0, l21, std::sqrt(det / c.xx)};
}

std::pair<at::Tensor, at::Tensor> split_state(const at::Tensor& z, const char* who) {
  FEWSTEP_CHECK_VALUE(z.dim() >= 2 && z.size(1) % 2 == 0, who,
                      ": the PSLD state z = cat(x, m) needs an even channel dimension 1, got shape ", z.sizes());
  auto parts = z.chunk(2, 1);
  return {parts[0], parts[1]};
}

at::Tensor PsldProcess::perturb(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t) const {
  FEWSTEP_CHECK_VALUE(x0.dim() >= 2, "perturb: x0 must be [B, C, ...], got shape ", x0.sizes());
  FEWSTEP_CHECK_VALUE(eps.dim() == x0.dim() && eps.size(1) == 2 * x0.size(1) && eps.size(0) == x0.size(0),
                      "perturb: eps must have x0's shape with twice the channels, got ", eps.sizes(), " for x0 ",
                      x0.sizes());
  auto th = t.to(at::kCPU, at::kDouble).contiguous().view({-1});
  FEWSTEP_CHECK_VALUE(th.numel() == x0.size(0), "perturb: t must hold one time per sample (", x0.size(0), "), got ",
                      th.numel());
  const double* tp = th.data_ptr<double>();
  std::vector<double> p11(th.numel()), p21(th.numel()), l11(th.numel()), l21(th.numel()), l22(th.numel());
  for (int64_t i = 0; i < th.numel(); ++i) {
    const Mat2 p = transition(beta_integral(tp[i]));
    const Mat2 l = kernel_cholesky(tp[i]);
    p11[i] = p.a11, p21[i] = p.a21, l11[i] = l.a11, l21[i] = l.a21, l22[i] = l.a22;
  }
  auto [ex, em] = split_state(eps, "perturb");
  auto x = per_sample(p11, x0) * x0 + per_sample(l11, x0) * ex;
  auto m = per_sample(p21, x0) * x0 + per_sample(l21, x0) * ex + per_sample(l22, x0) * em;
  return at::cat({x, m}, 1);
}

at::Tensor PsldProcess::perturb(const at::Tensor& x0, const at::Tensor& eps, double t) const {
  return perturb(x0, eps, at::full({x0.size(0)}, t, at::TensorOptions().dtype(at::kDouble)));
}

at::Tensor PsldProcess::score_from_eps(const at::Tensor& eps, double t) const {
  auto [ex, em] = split_state(eps, "score_from_eps");
  const Mat2 l = kernel_cholesky(t);
  // L⁻ᵀ = [[1/l11, −l21/(l11 l22)], [0, 1/l22]].
  auto sx = ex * (-1.0 / l.a11) + em * (l.a21 / (l.a11 * l.a22));
  auto sm = em * (-1.0 / l.a22);
  return at::cat({sx, sm}, 1);
}

at::Tensor PsldProcess::eps_from_score(const at::Tensor& score, double t) const {
  auto [sx, sm] = split_state(score, "eps_from_score");
  const Mat2 l = kernel_cholesky(t);
  // ε = −Lᵀ s, Lᵀ = [[l11, l21], [0, l22]].
  return at::cat({-(sx * l.a11 + sm * l.a21), -(sm * l.a22)}, 1);
}

at::Tensor PsldProcess::denoise(const at::Tensor& z, const at::Tensor& score, double t) const {
  auto [zx, zm] = split_state(z, "denoise");
  auto [sx, sm] = split_state(score, "denoise (score)");
  const Cov2 c = kernel_covariance(t);
  const Mat2 p = transition(beta_integral(t));
  return (zx + sx * c.xx + sm * c.xm) / p.a11;
}

at::Tensor PsldProcess::prior_sample(int64_t n, at::IntArrayRef data_shape, std::optional<at::Generator> generator,
                                     at::ScalarType dtype) const {
  FEWSTEP_CHECK_VALUE(n > 0, "prior_sample: n must be positive, got ", n);
  FEWSTEP_CHECK_VALUE(!data_shape.empty(), "prior_sample: data_shape must be [C, ...], got an empty shape");
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), data_shape.begin(), data_shape.end());
  auto opts = at::TensorOptions().dtype(at::kDouble);
  auto x = at::randn(shape, generator, opts);
  auto m = at::randn(shape, generator, opts) * std::sqrt(mass());
  return at::cat({x, m}, 1).to(dtype);
}

}  // namespace fewstep
