#include "fewstep/schedules/schedule.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"
#include "format.h"

namespace fewstep {

using detail::fmt_num;

namespace {

constexpr double kPi = 3.14159265358979323846;

/// log(1 + e^x) without overflow or loss for large |x|.
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// VP identities in terms of the half log-SNR: α² = sigmoid(2λ), σ² = sigmoid(−2λ).
double vp_log_alpha_of_lambda(double lambda) { return -0.5 * softplus(-2.0 * lambda); }
double vp_log_sigma_of_lambda(double lambda) { return -0.5 * softplus(2.0 * lambda); }

/// log σ = ½ log(1 − α²) = ½ log(−expm1(2 log α)); exact for α → 1 where 1 − α² cancels.
double vp_log_sigma(double log_alpha) { return 0.5 * std::log(-std::expm1(2.0 * log_alpha)); }

/// d log σ/dt = −(α²/σ²) d log α/dt, with α²/σ² = 1/expm1(−2 log α).
double vp_dlog_sigma_dt(double log_alpha, double dlog_alpha) { return -dlog_alpha / std::expm1(-2.0 * log_alpha); }

// Parameter checks run in the member-initialiser list (before NoiseSchedule's generic
// check), so the messages use the names the user passed.
double checked_vp_range(const char* who, double t_min, double t_max, bool open_at_one) {
  FEWSTEP_CHECK_VALUE(std::isfinite(t_min) && t_min > 0.0, who,
                      ": t_min must be finite and > 0, got t_min=", fmt_num(t_min));
  FEWSTEP_CHECK_VALUE(std::isfinite(t_max) && t_max > t_min, who,
                      ": t_max must be finite and > t_min, got t_min=", fmt_num(t_min), ", t_max=", fmt_num(t_max));
  if (open_at_one) {
    FEWSTEP_CHECK_VALUE(t_max < 1.0, who,
                        ": t_max must be < 1 (α = 0 at t = 1 makes λ infinite), got t_max=", fmt_num(t_max));
  } else {
    FEWSTEP_CHECK_VALUE(t_max <= 1.0, who, ": t_max must be <= 1, got t_max=", fmt_num(t_max));
  }
  return t_min;
}

double checked_vp_linear(double beta_min, double beta_max, double t_min, double t_max) {
  FEWSTEP_CHECK_VALUE(std::isfinite(beta_min) && beta_min >= 0.0,
                      "VPLinear: beta_min must be finite and >= 0, got beta_min=", fmt_num(beta_min));
  FEWSTEP_CHECK_VALUE(std::isfinite(beta_max) && beta_max > beta_min,
                      "VPLinear: beta_max must be finite and > beta_min, got beta_min=", fmt_num(beta_min),
                      ", beta_max=", fmt_num(beta_max));
  return checked_vp_range("VPLinear", t_min, t_max, /*open_at_one=*/false);
}

double checked_vp_cosine(double s, double t_min, double t_max) {
  // s < 0 would give α > 1 near t = 0.
  FEWSTEP_CHECK_VALUE(std::isfinite(s) && s >= 0.0, "VPCosine: s must be finite and >= 0, got s=", fmt_num(s));
  return checked_vp_range("VPCosine", t_min, t_max, /*open_at_one=*/true);
}

double checked_ve(double sigma_min, double sigma_max) {
  FEWSTEP_CHECK_VALUE(std::isfinite(sigma_min) && sigma_min > 0.0,
                      "VE: sigma_min must be finite and > 0, got sigma_min=", fmt_num(sigma_min));
  FEWSTEP_CHECK_VALUE(std::isfinite(sigma_max) && sigma_max > sigma_min,
                      "VE: sigma_max must be finite and > sigma_min, got sigma_min=", fmt_num(sigma_min),
                      ", sigma_max=", fmt_num(sigma_max));
  return sigma_min;
}

double checked_discrete_t_min(const std::vector<double>& alphas_cumprod) {
  FEWSTEP_CHECK_VALUE(alphas_cumprod.size() >= 2, "VPDiscrete: alphas_cumprod must have at least 2 entries, got ",
                      alphas_cumprod.size());
  return 1.0 / static_cast<double>(alphas_cumprod.size());
}

void check_beta(const char* who, const char* arg, double beta) {
  FEWSTEP_CHECK_VALUE(std::isfinite(beta) && beta > 0.0 && beta < 1.0, who, ": ", arg,
                      " must be finite and in (0, 1), got ", arg, "=", fmt_num(beta));
}

void check_num_train_steps(const char* who, int64_t n) {
  FEWSTEP_CHECK_VALUE(n >= 2, who, ": num_train_steps must be >= 2, got num_train_steps=", n);
}

std::vector<double> linspace(double a, double b, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = a + (b - a) * static_cast<double>(i) / (n - 1);
  out.back() = b;
  return out;
}

std::vector<double> cumprod_one_minus(const std::vector<double>& betas) {
  std::vector<double> out(betas.size());
  double prod = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    prod *= 1.0 - betas[i];
    out[i] = prod;
  }
  return out;
}

}  // namespace

std::string to_string(ScheduleFamily family) {
  switch (family) {
    case ScheduleFamily::VP: return "vp";
    case ScheduleFamily::VE: return "ve";
    case ScheduleFamily::Flow: return "flow";
  }
  return "unknown";
}

// ---- NoiseSchedule ----

NoiseSchedule::NoiseSchedule(double t_min, double t_max) : t_min_(t_min), t_max_(t_max) {
  FEWSTEP_CHECK_VALUE(std::isfinite(t_min) && t_min > 0.0,
                      "NoiseSchedule: t_min must be finite and > 0, got t_min=", fmt_num(t_min));
  FEWSTEP_CHECK_VALUE(std::isfinite(t_max) && t_max > t_min,
                      "NoiseSchedule: t_max must be finite and > t_min, got t_min=", fmt_num(t_min),
                      ", t_max=", fmt_num(t_max));
}

double NoiseSchedule::alpha(double t) const { return std::exp(log_alpha(t)); }
double NoiseSchedule::sigma(double t) const { return std::exp(log_sigma(t)); }
double NoiseSchedule::sigma_tilde(double t) const { return std::exp(-lambda(t)); }

void NoiseSchedule::check_time(double t, const char* arg) const {
  const double lo = t_min_ - 1e-12 * std::abs(t_min_);
  const double hi = t_max_ + 1e-12 * std::abs(t_max_);
  FEWSTEP_CHECK_VALUE(std::isfinite(t) && t >= lo && t <= hi, arg, " must be a finite time in [t_min, t_max] = [",
                      fmt_num(t_min_), ", ", fmt_num(t_max_), "] of ", repr(), ", got ", arg, "=", fmt_num(t));
}

// ---- VPLinear ----

VPLinear::VPLinear(double beta_min, double beta_max, double t_min, double t_max)
    : NoiseSchedule(checked_vp_linear(beta_min, beta_max, t_min, t_max), t_max),
      beta_min_(beta_min),
      beta_max_(beta_max) {}

std::string VPLinear::repr() const {
  return "VPLinear(beta_min=" + fmt_num(beta_min_) + ", beta_max=" + fmt_num(beta_max_) +
         ", t_min=" + fmt_num(t_min()) + ", t_max=" + fmt_num(t_max()) + ")";
}

double VPLinear::log_alpha(double t) const { return -0.25 * t * t * (beta_max_ - beta_min_) - 0.5 * t * beta_min_; }
double VPLinear::log_sigma(double t) const { return vp_log_sigma(log_alpha(t)); }
double VPLinear::dlog_alpha_dt(double t) const { return -0.5 * beta(t); }
double VPLinear::dlog_sigma_dt(double t) const { return vp_dlog_sigma_dt(log_alpha(t), dlog_alpha_dt(t)); }

double VPLinear::t_of_lambda(double lambda) const {
  // a t² + b t = L with L = −log α(λ) ≥ 0; the root 2L / (b + √(b² + 4aL)) has no cancellation.
  const double L = 0.5 * softplus(-2.0 * lambda);
  if (L == 0.0) return 0.0;     // λ = +∞
  if (std::isinf(L)) return L;  // λ = −∞ (∞/∞ below)
  const double a = 0.25 * (beta_max_ - beta_min_);
  const double b = 0.5 * beta_min_;
  return 2.0 * L / (b + std::sqrt(b * b + 4.0 * a * L));
}

// ---- VPCosine ----
// θ(t) = k (t + s) with k = π / (2(1+s)); α = cos θ(t) / cos θ(0).

VPCosine::VPCosine(double s, double t_min, double t_max)
    : NoiseSchedule(checked_vp_cosine(s, t_min, t_max), t_max),
      s_(s),
      log_alpha_0_(std::log(std::cos(0.5 * kPi * s / (1.0 + s)))) {}

std::string VPCosine::repr() const {
  return "VPCosine(s=" + fmt_num(s_) + ", t_min=" + fmt_num(t_min()) + ", t_max=" + fmt_num(t_max()) + ")";
}

double VPCosine::log_alpha(double t) const {
  const double k = 0.5 * kPi / (1.0 + s_);
  if (t <= 0.5) {
    // cos(θ0 + d)/cos θ0 = 1 − 2 sin²(d/2) − tan θ0 sin d: no cancellation as α → 1.
    const double d = k * t;
    const double half = std::sin(0.5 * d);
    return std::log1p(-2.0 * half * half - std::tan(k * s_) * std::sin(d));
  }
  // cos θ(t) = sin(k (1 − t)): accurate as α → 0 near t = 1.
  return std::log(std::sin(k * (1.0 - t))) - log_alpha_0_;
}

double VPCosine::log_sigma(double t) const { return vp_log_sigma(log_alpha(t)); }

double VPCosine::dlog_alpha_dt(double t) const {
  const double k = 0.5 * kPi / (1.0 + s_);
  return -k / std::tan(k * (1.0 - t));  // −k tan θ(t)
}

double VPCosine::dlog_sigma_dt(double t) const { return vp_dlog_sigma_dt(log_alpha(t), dlog_alpha_dt(t)); }

double VPCosine::t_of_lambda(double lambda) const {
  // Solve for d = θ(t) − θ0 through sin d and cos d written without cancellation:
  // with u = α, cos θ = u c0, sin θ = r = √(σ² + u² s0²), so
  // sin d = c0 σ² / (r + u s0), cos d = u c0² + s0 r.
  const double k = 0.5 * kPi / (1.0 + s_);
  const double theta0 = k * s_;
  const double c0 = std::cos(theta0), s0 = std::sin(theta0);
  const double u = std::exp(vp_log_alpha_of_lambda(lambda));
  const double sig2 = std::exp(2.0 * vp_log_sigma_of_lambda(lambda));
  const double r = std::sqrt(sig2 + u * u * s0 * s0);
  const double sin_d = c0 * sig2 / (r + u * s0);
  const double cos_d = u * c0 * c0 + s0 * r;
  return std::atan2(sin_d, cos_d) / k;
}

// ---- VPDiscrete ----

DiscreteInterpolation parse_discrete_interpolation(const std::string& name) {
  if (name == "log_alpha") return DiscreteInterpolation::LogAlpha;
  if (name == "log_sigma") return DiscreteInterpolation::LogSigma;
  if (name == "sigma") return DiscreteInterpolation::Sigma;
  FEWSTEP_CHECK_VALUE(false, "VPDiscrete: interpolation must be 'log_alpha', 'log_sigma' or 'sigma', got interpolation='",
                      name, "'");
  return DiscreteInterpolation::LogAlpha;  // unreachable
}

std::string to_string(DiscreteInterpolation interpolation) {
  switch (interpolation) {
    case DiscreteInterpolation::LogAlpha: return "log_alpha";
    case DiscreteInterpolation::LogSigma: return "log_sigma";
    case DiscreteInterpolation::Sigma: return "sigma";
  }
  return "unknown";
}

VPDiscrete::VPDiscrete(std::vector<double> alphas_cumprod, std::string origin, DiscreteInterpolation interpolation)
    : NoiseSchedule(checked_discrete_t_min(alphas_cumprod), 1.0),
      alphas_cumprod_(std::move(alphas_cumprod)),
      origin_(std::move(origin)),
      interpolation_(interpolation) {
  const auto& ac = alphas_cumprod_;
  for (size_t n = 0; n < ac.size(); ++n) {
    // ᾱ = 1 would put σ = 0 (λ = ∞) at t_min, which no grid or solver could use.
    FEWSTEP_CHECK_VALUE(std::isfinite(ac[n]) && ac[n] > 0.0 && ac[n] < 1.0, "VPDiscrete: alphas_cumprod[", n,
                        "] must be finite and in (0, 1), got alphas_cumprod[", n, "]=", fmt_num(ac[n]));
    if (n > 0) {
      FEWSTEP_CHECK_VALUE(ac[n] < ac[n - 1],
                          "VPDiscrete: alphas_cumprod must be strictly decreasing, got alphas_cumprod[", n - 1,
                          "]=", fmt_num(ac[n - 1]), ", alphas_cumprod[", n, "]=", fmt_num(ac[n]));
    }
  }
  knots_.resize(ac.size());
  for (size_t n = 0; n < ac.size(); ++n) {
    const double log_alpha = 0.5 * std::log(ac[n]);
    const double log_sigma = 0.5 * std::log1p(-ac[n]);
    switch (interpolation_) {
      case DiscreteInterpolation::LogAlpha: knots_[n] = log_alpha; break;
      case DiscreteInterpolation::LogSigma: knots_[n] = log_alpha - log_sigma; break;  // λ_n
      case DiscreteInterpolation::Sigma: knots_[n] = -std::exp(log_sigma - log_alpha); break;  // −σ̃_n
    }
  }
}

std::shared_ptr<VPDiscrete> VPDiscrete::from_betas(const std::vector<double>& betas,
                                                   DiscreteInterpolation interpolation) {
  FEWSTEP_CHECK_VALUE(betas.size() >= 2, "VPDiscrete.from_betas: betas must have at least 2 entries, got ",
                      betas.size());
  for (size_t n = 0; n < betas.size(); ++n) {
    FEWSTEP_CHECK_VALUE(std::isfinite(betas[n]) && betas[n] > 0.0 && betas[n] < 1.0, "VPDiscrete.from_betas: betas[", n,
                        "] must be finite and in (0, 1), got betas[", n, "]=", fmt_num(betas[n]));
  }
  return std::make_shared<VPDiscrete>(cumprod_one_minus(betas), "betas", interpolation);
}

std::shared_ptr<VPDiscrete> VPDiscrete::from_alphas_cumprod(const std::vector<double>& alphas_cumprod,
                                                            DiscreteInterpolation interpolation) {
  return std::make_shared<VPDiscrete>(alphas_cumprod, "alphas_cumprod", interpolation);
}

std::shared_ptr<VPDiscrete> VPDiscrete::ddpm_linear(int64_t num_train_steps, double beta_start, double beta_end) {
  const char* who = "VPDiscrete.ddpm_linear";
  check_num_train_steps(who, num_train_steps);
  check_beta(who, "beta_start", beta_start);
  check_beta(who, "beta_end", beta_end);
  auto betas = linspace(beta_start, beta_end, num_train_steps);
  return std::make_shared<VPDiscrete>(cumprod_one_minus(betas), "ddpm_linear(beta_start=" + fmt_num(beta_start) +
                                                                    ", beta_end=" + fmt_num(beta_end) + ")");
}

std::shared_ptr<VPDiscrete> VPDiscrete::scaled_linear(int64_t num_train_steps, double beta_start, double beta_end) {
  const char* who = "VPDiscrete.scaled_linear";
  check_num_train_steps(who, num_train_steps);
  check_beta(who, "beta_start", beta_start);
  check_beta(who, "beta_end", beta_end);
  auto betas = linspace(std::sqrt(beta_start), std::sqrt(beta_end), num_train_steps);
  for (double& b : betas) b *= b;
  return std::make_shared<VPDiscrete>(cumprod_one_minus(betas), "scaled_linear(beta_start=" + fmt_num(beta_start) +
                                                                    ", beta_end=" + fmt_num(beta_end) + ")");
}

std::string VPDiscrete::repr() const {
  std::string out = "VPDiscrete(N=" + std::to_string(knots_.size()) + ", origin=" + origin_;
  if (interpolation_ != DiscreteInterpolation::LogAlpha) out += ", interpolation=" + to_string(interpolation_);
  return out + ")";
}

namespace {
/// Segment k in [0, N−2] holding fractional knot position pos (= t N − 1); end segments extrapolate.
size_t segment_of(double pos, size_t n) {
  if (!(pos >= 1.0)) return 0;  // also NaN
  const double k = std::floor(pos);
  return k >= static_cast<double>(n - 2) ? n - 2 : static_cast<size_t>(k);
}
}  // namespace

double VPDiscrete::knot_value(double t) const {
  const size_t n = knots_.size();
  const double pos = t * static_cast<double>(n) - 1.0;
  const size_t k = segment_of(pos, n);
  return knots_[k] + (pos - static_cast<double>(k)) * (knots_[k + 1] - knots_[k]);
}

double VPDiscrete::log_alpha(double t) const {
  const double v = knot_value(t);
  switch (interpolation_) {
    case DiscreteInterpolation::LogAlpha: return v;
    case DiscreteInterpolation::LogSigma: return vp_log_alpha_of_lambda(v);
    case DiscreteInterpolation::Sigma: return -0.5 * std::log1p(v * v);  // α = 1/√(1 + σ̃²)
  }
  return v;
}

double VPDiscrete::log_sigma(double t) const {
  if (interpolation_ == DiscreteInterpolation::LogSigma) return vp_log_sigma_of_lambda(knot_value(t));
  return vp_log_sigma(log_alpha(t));
}

double VPDiscrete::dlog_alpha_dt(double t) const {
  // Right-hand derivative at a knot (the segment starting there), times d log α / d(knot value).
  const size_t n = knots_.size();
  const size_t k = segment_of(t * static_cast<double>(n) - 1.0, n);
  const double slope = (knots_[k + 1] - knots_[k]) * static_cast<double>(n);
  switch (interpolation_) {
    case DiscreteInterpolation::LogAlpha: return slope;
    case DiscreteInterpolation::LogSigma: {  // d log α/dλ = σ² = 1/(1 + e^{2λ})
      const double lambda = knot_value(t);
      return slope * std::exp(vp_log_sigma_of_lambda(lambda) * 2.0);
    }
    case DiscreteInterpolation::Sigma: {  // v = −σ̃: d log α/dv = −v/(1 + v²)
      const double v = knot_value(t);
      return slope * (-v / (1.0 + v * v));
    }
  }
  return slope;
}

double VPDiscrete::dlog_sigma_dt(double t) const { return vp_dlog_sigma_dt(log_alpha(t), dlog_alpha_dt(t)); }

double VPDiscrete::t_of_lambda(double lambda) const {
  // λ is monotone in the interpolated quantity, which is piecewise linear in t: invert that exactly.
  double target = lambda;
  switch (interpolation_) {
    case DiscreteInterpolation::LogAlpha: target = vp_log_alpha_of_lambda(lambda); break;
    case DiscreteInterpolation::LogSigma: target = lambda; break;
    case DiscreteInterpolation::Sigma: target = -std::exp(-lambda); break;
  }
  if (std::isnan(target)) return target;
  const auto& la = knots_;
  const size_t n = la.size();
  size_t k;
  if (target >= la[0]) {
    k = 0;
  } else if (target <= la[n - 1]) {
    k = n - 2;
  } else {
    size_t lo = 0, hi = n - 1;  // invariant: la[lo] > target > la[hi]... or equal at lo
    while (hi - lo > 1) {
      const size_t mid = lo + (hi - lo) / 2;
      if (la[mid] >= target) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    k = lo;
  }
  const double frac = (target - la[k]) / (la[k + 1] - la[k]);
  return (static_cast<double>(k) + 1.0 + frac) / static_cast<double>(n);
}

// ---- VE ----

VE::VE(double sigma_min, double sigma_max) : NoiseSchedule(checked_ve(sigma_min, sigma_max), sigma_max) {}

std::string VE::repr() const { return "VE(sigma_min=" + fmt_num(t_min()) + ", sigma_max=" + fmt_num(t_max()) + ")"; }

double VE::log_sigma(double t) const { return std::log(t); }
double VE::t_of_lambda(double lambda) const { return std::exp(-lambda); }

// ---- FlowMatching ----

FlowMatching::FlowMatching(double t_min, double t_max)
    : NoiseSchedule(checked_vp_range("FlowMatching", t_min, t_max, /*open_at_one=*/false), t_max) {}

std::string FlowMatching::repr() const {
  return "FlowMatching(t_min=" + fmt_num(t_min()) + ", t_max=" + fmt_num(t_max()) + ")";
}

double FlowMatching::log_alpha(double t) const { return std::log1p(-t); }
double FlowMatching::log_sigma(double t) const { return std::log(t); }
double FlowMatching::dlog_alpha_dt(double t) const { return -1.0 / (1.0 - t); }

double FlowMatching::t_of_lambda(double lambda) const {
  // (1 − t)/t = e^λ  ⇒  t = sigmoid(−λ), written to avoid overflow for either sign of λ.
  if (lambda >= 0.0) {
    const double e = std::exp(-lambda);
    return e / (1.0 + e);
  }
  return 1.0 / (1.0 + std::exp(lambda));
}

}  // namespace fewstep
