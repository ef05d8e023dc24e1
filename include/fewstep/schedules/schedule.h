/// @file schedules/schedule.h
/// @brief Noise schedules: the forward marginal x_t = α_t x_0 + σ_t ε and its half log-SNR.
///
/// All maths is float64 on the host. A schedule gives log α(t), log σ(t), their time
/// derivatives, λ(t) = log(α_t/σ_t) (strictly decreasing in t) and its inverse t(λ).
/// Families (docs/design.md §1):
///  - VP (α² + σ² = 1): linear-β continuous (Song et al. 2021, DPM-Solver eq. (§A)),
///    cosine (Nichol & Dhariwal 2021, s = 0.008), discrete from betas/alphas_cumprod
///    (DDPM linear 1e-4..0.02 × 1000, Stable-Diffusion scaled linear) with log α
///    interpolated piecewise-linearly in t at t_n = (n+1)/N (DPM-Solver's convention).
///  - VE/EDM (α = 1, σ = t; Karras et al. 2022).
///  - Flow matching / rectified flow (α = 1 − t, σ = t; Lipman et al. 2023, Liu et al. 2023).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fewstep {

enum class ScheduleFamily { VP, VE, Flow };
std::string to_string(ScheduleFamily family);

/// Base class of every schedule. Subclasses implement the five virtual maths functions;
/// the rest derives from them. Times outside [t_min, t_max] are not rejected here (solvers
/// evaluate on validated grids); use `check_time` where user input enters.
class NoiseSchedule {
 public:
  virtual ~NoiseSchedule() = default;

  /// Short name ("vp_linear", "vp_cosine", "vp_discrete", "ve", "flow").
  virtual std::string name() const = 0;
  /// Full description with parameters, e.g. "VPLinear(beta_min=0.1, beta_max=20, t_min=0.001, t_max=1)".
  virtual std::string repr() const = 0;
  virtual ScheduleFamily family() const = 0;

  virtual double log_alpha(double t) const = 0;
  virtual double log_sigma(double t) const = 0;
  /// d log α / dt — the drift coefficient f(t) of the forward SDE.
  virtual double dlog_alpha_dt(double t) const = 0;
  /// d log σ / dt.
  virtual double dlog_sigma_dt(double t) const = 0;
  /// Inverse of λ(t); closed form where one exists, monotone interpolation otherwise.
  virtual double t_of_lambda(double lambda) const = 0;
  /// dα/dt and dσ/dt. The defaults are α · d log α/dt and σ · d log σ/dt; a schedule where α
  /// reaches 0 (flow matching at t = 1) overrides them with their finite values.
  virtual double dalpha_dt(double t) const { return alpha(t) * dlog_alpha_dt(t); }
  virtual double dsigma_dt(double t) const { return sigma(t) * dlog_sigma_dt(t); }

  /// Number of training timesteps of a discrete schedule (for "leading"/"trailing" grids
  /// and the "index" time input); nullopt for continuous schedules.
  virtual std::optional<int64_t> num_train_steps() const { return std::nullopt; }

  double alpha(double t) const;
  double sigma(double t) const;
  /// Half log-SNR λ(t) = log α_t − log σ_t.
  double lambda(double t) const { return log_alpha(t) - log_sigma(t); }
  /// dλ/dt (negative).
  double dlambda_dt(double t) const { return dlog_alpha_dt(t) - dlog_sigma_dt(t); }
  /// σ̃ = σ/α = e^{−λ}: the noise level of the equivalent VE process x/α.
  double sigma_tilde(double t) const;

  double t_min() const { return t_min_; }
  double t_max() const { return t_max_; }
  double lambda_min() const { return lambda(t_max_); }
  double lambda_max() const { return lambda(t_min_); }

  /// ValueError naming `arg` unless t is finite and within [t_min, t_max] (with a
  /// relative slack of 1e-12 for round-off).
  void check_time(double t, const char* arg) const;

 protected:
  NoiseSchedule(double t_min, double t_max);

 private:
  double t_min_;
  double t_max_;
};

using SchedulePtr = std::shared_ptr<const NoiseSchedule>;

/// VP with linear β(t) = β_min + t(β_max − β_min): log α = −(β_max−β_min)t²/4 − β_min t/2.
class VPLinear final : public NoiseSchedule {
 public:
  explicit VPLinear(double beta_min = 0.1, double beta_max = 20.0, double t_min = 1e-3, double t_max = 1.0);
  std::string name() const override { return "vp_linear"; }
  std::string repr() const override;
  ScheduleFamily family() const override { return ScheduleFamily::VP; }
  double log_alpha(double t) const override;
  double log_sigma(double t) const override;
  double dlog_alpha_dt(double t) const override;
  double dlog_sigma_dt(double t) const override;
  double t_of_lambda(double lambda) const override;
  double beta(double t) const { return beta_min_ + t * (beta_max_ - beta_min_); }
  double beta_min() const { return beta_min_; }
  double beta_max() const { return beta_max_; }

 private:
  double beta_min_, beta_max_;
};

/// VP cosine: α(t) = cos(π/2 · (t+s)/(1+s)) / cos(π/2 · s/(1+s)). t_max defaults to
/// 0.9946 (as in DPM-Solver) because α → 0 at t = 1.
class VPCosine final : public NoiseSchedule {
 public:
  explicit VPCosine(double s = 0.008, double t_min = 1e-3, double t_max = 0.9946);
  std::string name() const override { return "vp_cosine"; }
  std::string repr() const override;
  ScheduleFamily family() const override { return ScheduleFamily::VP; }
  double log_alpha(double t) const override;
  double log_sigma(double t) const override;
  double dlog_alpha_dt(double t) const override;
  double dlog_sigma_dt(double t) const override;
  double t_of_lambda(double lambda) const override;
  double s() const { return s_; }

 private:
  double s_;
  double log_alpha_0_;  // log cos(π/2 · s/(1+s))
};

/// How a discrete schedule is continued between its knots (VPDiscrete). The knots are exact
/// under all three; they differ only between integer indices:
///  - LogAlpha ("log_alpha", default): log α piecewise linear in t (DPM-Solver's convention);
///  - LogSigma ("log_sigma"): log σ̃ = −λ piecewise linear, σ̃ = σ/α (k-diffusion's and diffusers'
///    sigma-to-timestep map, used with Karras/exponential sigmas);
///  - Sigma ("sigma"): σ̃ piecewise linear (diffusers' EulerDiscrete/HeunDiscrete sigmas at
///    fractional timesteps, `np.interp`).
enum class DiscreteInterpolation { LogAlpha, LogSigma, Sigma };
/// "log_alpha", "log_sigma", "sigma" (ValueError otherwise).
DiscreteInterpolation parse_discrete_interpolation(const std::string& name);
std::string to_string(DiscreteInterpolation interpolation);

/// VP from a discrete DDPM schedule of N steps. Step n (0-based) sits at t_n = (n+1)/N with
/// log α_n = ½ log ᾱ_n; between knots the schedule follows `DiscreteInterpolation` (default log α
/// piecewise linear in t), and t(λ) is its exact inverse (monotone). Range [1/N, 1].
class VPDiscrete final : public NoiseSchedule {
 public:
  static std::shared_ptr<VPDiscrete> from_betas(const std::vector<double>& betas,
                                                DiscreteInterpolation interpolation = DiscreteInterpolation::LogAlpha);
  static std::shared_ptr<VPDiscrete> from_alphas_cumprod(
      const std::vector<double>& alphas_cumprod,
      DiscreteInterpolation interpolation = DiscreteInterpolation::LogAlpha);
  /// DDPM's linear betas: linspace(beta_start, beta_end, N).
  static std::shared_ptr<VPDiscrete> ddpm_linear(int64_t num_train_steps = 1000, double beta_start = 1e-4,
                                                 double beta_end = 0.02);
  /// Stable Diffusion's "scaled_linear": linspace(√beta_start, √beta_end, N)².
  static std::shared_ptr<VPDiscrete> scaled_linear(int64_t num_train_steps = 1000, double beta_start = 0.00085,
                                                   double beta_end = 0.012);

  std::string name() const override { return "vp_discrete"; }
  std::string repr() const override;
  ScheduleFamily family() const override { return ScheduleFamily::VP; }
  double log_alpha(double t) const override;
  double log_sigma(double t) const override;
  double dlog_alpha_dt(double t) const override;
  double dlog_sigma_dt(double t) const override;
  double t_of_lambda(double lambda) const override;
  std::optional<int64_t> num_train_steps() const override { return static_cast<int64_t>(knots_.size()); }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  DiscreteInterpolation interpolation() const { return interpolation_; }

  /// Use the factories; public for std::make_shared.
  VPDiscrete(std::vector<double> alphas_cumprod, std::string origin,
             DiscreteInterpolation interpolation = DiscreteInterpolation::LogAlpha);

 private:
  /// The interpolated quantity at t (log α, λ or −σ̃; decreasing in t).
  double knot_value(double t) const;
  std::vector<double> alphas_cumprod_;
  std::vector<double> knots_;  // log α_n, λ_n or −σ̃_n: strictly decreasing
  std::string origin_;
  DiscreteInterpolation interpolation_;
};

/// VE / EDM: α = 1, σ = t on [sigma_min, sigma_max] (Karras et al. 2022 defaults 0.002, 80).
class VE final : public NoiseSchedule {
 public:
  explicit VE(double sigma_min = 0.002, double sigma_max = 80.0);
  std::string name() const override { return "ve"; }
  std::string repr() const override;
  ScheduleFamily family() const override { return ScheduleFamily::VE; }
  double log_alpha(double) const override { return 0.0; }
  double log_sigma(double t) const override;
  double dlog_alpha_dt(double) const override { return 0.0; }
  double dlog_sigma_dt(double t) const override { return 1.0 / t; }
  double t_of_lambda(double lambda) const override;
};

/// Flow matching / rectified flow: α = 1 − t, σ = t. The default range [1e-3, 0.999] keeps λ finite
/// (x_T ~ N(0, I) at t = 0.999 has α = 1e-3); t_max = 1 (α = 0, λ = −∞: pure noise, where diffusers'
/// FlowMatchEulerDiscrete starts) is allowed for flow- and x0-predicting models, and there only DDIM
/// (which on this schedule is exactly Euler in t) and solvers whose first step is DDIM can start.
class FlowMatching final : public NoiseSchedule {
 public:
  explicit FlowMatching(double t_min = 1e-3, double t_max = 0.999);
  std::string name() const override { return "flow"; }
  std::string repr() const override;
  ScheduleFamily family() const override { return ScheduleFamily::Flow; }
  double log_alpha(double t) const override;
  double log_sigma(double t) const override;
  double dlog_alpha_dt(double t) const override;
  double dlog_sigma_dt(double t) const override { return 1.0 / t; }
  double t_of_lambda(double lambda) const override;
  double dalpha_dt(double) const override { return -1.0; }
  double dsigma_dt(double) const override { return 1.0; }
};

}  // namespace fewstep
