#include "fewstep/schedules/timesteps.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "fewstep/core/check.h"
#include "format.h"

namespace fewstep {

using detail::fmt_num;

namespace {

constexpr const char* kSpacingNames =
    "'time', 'logsnr', 'quadratic', 'karras', 'leading', 'trailing', 'linspace', 'leading_multistep'";

bool is_discrete(Spacing spacing) {
  return spacing == Spacing::Leading || spacing == Spacing::Trailing || spacing == Spacing::Linspace ||
         spacing == Spacing::LeadingMultistep;
}

/// Shared by validate_grid and the final check of every generated grid; `who` prefixes messages.
/// With `allow_final_zero` the last entry may be the σ = 0 marker 0.0 (FinalSigma::Zero).
void check_grid(const NoiseSchedule& schedule, const std::vector<double>& grid, const std::string& who,
                bool allow_final_zero = false) {
  FEWSTEP_CHECK_VALUE(grid.size() >= 2, who, ": a grid needs at least 2 times, got ", grid.size());
  const double lo = schedule.t_min() - 1e-12 * std::abs(schedule.t_min());
  const double hi = schedule.t_max() + 1e-12 * std::abs(schedule.t_max());
  for (size_t i = 0; i < grid.size(); ++i) {
    const double t = grid[i];
    if (allow_final_zero && i + 1 == grid.size() && t == 0.0) continue;  // the σ = 0 marker
    FEWSTEP_CHECK_VALUE(std::isfinite(t), who, ": grid[", i, "] must be finite, got grid[", i, "]=", fmt_num(t));
    FEWSTEP_CHECK_VALUE(t >= lo && t <= hi, who, ": grid[", i, "]=", fmt_num(t), " is outside [t_min, t_max] = [",
                        fmt_num(schedule.t_min()), ", ", fmt_num(schedule.t_max()), "] of ", schedule.repr());
    if (i > 0) {
      FEWSTEP_CHECK_VALUE(t < grid[i - 1], who, ": grid must be strictly decreasing, got grid[", i - 1,
                          "]=", fmt_num(grid[i - 1]), ", grid[", i, "]=", fmt_num(t));
    }
  }
}

/// diffusers' evaluation indices (descending) for the discrete spacings.
std::vector<int64_t> discrete_indices(Spacing spacing, int64_t n_train, int64_t steps, int64_t offset) {
  std::vector<int64_t> idx(static_cast<size_t>(steps));
  if (spacing == Spacing::Leading) {
    const int64_t ratio = n_train / steps;  // integer step ratio
    for (int64_t i = 0; i < steps; ++i) idx[static_cast<size_t>(i)] = (steps - 1 - i) * ratio + offset;
  } else if (spacing == Spacing::LeadingMultistep) {
    const int64_t ratio = n_train / (steps + 1);  // the multistep schedulers divide by steps + 1
    for (int64_t i = 0; i < steps; ++i) idx[static_cast<size_t>(i)] = (steps - i) * ratio + offset;
  } else if (spacing == Spacing::Linspace) {
    // np.linspace(0, N − 1, steps + 1): k·((N − 1)/steps), the last one exactly N − 1; then
    // rounded half to even, reversed, and the final 0 dropped.
    const double delta = static_cast<double>(n_train - 1) / static_cast<double>(steps);
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t k = steps - i;
      const double x = k == steps ? static_cast<double>(n_train - 1) : static_cast<double>(k) * delta;
      idx[static_cast<size_t>(i)] = static_cast<int64_t>(std::nearbyint(x));
    }
  } else {
    // np.round(np.arange(N, 0, -N/steps)) - 1: float ratio, ties to even (nearbyint in the
    // default rounding mode), as numpy rounds.
    const double ratio = static_cast<double>(n_train) / static_cast<double>(steps);
    for (int64_t i = 0; i < steps; ++i) {
      const double x = static_cast<double>(n_train) - static_cast<double>(i) * ratio;
      idx[static_cast<size_t>(i)] = static_cast<int64_t>(std::nearbyint(x)) - 1;
    }
  }
  return idx;
}

std::vector<double> discrete_grid(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                                  const std::optional<double>& t_start, const std::optional<double>& t_end,
                                  int64_t offset, FinalSigma final_sigma) {
  const std::string name = to_string(spacing);
  const auto n_train = schedule.num_train_steps();
  FEWSTEP_CHECK_VALUE(n_train.has_value(), "timesteps: spacing '", name,
                      "' needs a discrete schedule (VPDiscrete), got ", schedule.repr());
  FEWSTEP_CHECK_VALUE(
      !t_start.has_value(), "timesteps: t_start cannot be set with spacing '", name,
      "' (its first time is fixed by diffusers' indices), got t_start=", fmt_num(t_start.value_or(0.0)));
  const int64_t N = *n_train;
  FEWSTEP_CHECK_VALUE(steps < N, "timesteps: spacing '", name, "' needs steps < num_train_steps, got steps=", steps,
                      ", num_train_steps=", N);
  const double te = final_sigma == FinalSigma::Zero ? 0.0 : t_end.value_or(schedule.t_min());
  if (final_sigma == FinalSigma::Min) schedule.check_time(te, "t_end");

  const auto idx = discrete_indices(spacing, N, steps, offset);
  std::vector<double> grid;
  grid.reserve(static_cast<size_t>(steps) + 1);
  for (int64_t n : idx) {
    FEWSTEP_CHECK_VALUE(n >= 0 && n < N, "timesteps: spacing '", name, "' with steps=", steps, ", steps_offset=",
                        offset, " and num_train_steps=", N, " gives the evaluation index ", n,
                        ", outside [0, num_train_steps - 1]");
    grid.push_back(static_cast<double>(n + 1) / static_cast<double>(N));
  }
  // Say why rather than only "not decreasing": the last index can reach t_end for many steps.
  FEWSTEP_CHECK_VALUE(grid.back() > te, "timesteps: spacing '", name, "' with steps=", steps,
                      " and num_train_steps=", N, " puts its last evaluation at index ", idx.back(),
                      " (t=", fmt_num(grid.back()), "), which is not above t_end=", fmt_num(te),
                      "; use fewer steps or a smaller t_end");
  grid.push_back(te);
  return grid;
}

}  // namespace

Spacing parse_spacing(const std::string& name) {
  std::string key(name);
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
  if (key == "time") return Spacing::Time;
  if (key == "logsnr") return Spacing::LogSNR;
  if (key == "quadratic") return Spacing::Quadratic;
  if (key == "karras") return Spacing::Karras;
  if (key == "leading") return Spacing::Leading;
  if (key == "trailing") return Spacing::Trailing;
  if (key == "linspace") return Spacing::Linspace;
  if (key == "leading_multistep") return Spacing::LeadingMultistep;
  FEWSTEP_CHECK_VALUE(false, "spacing must be one of ", kSpacingNames, ", got spacing='", name, "'");
  return Spacing::LogSNR;  // unreachable
}

std::string to_string(Spacing spacing) {
  switch (spacing) {
    case Spacing::Time: return "time";
    case Spacing::LogSNR: return "logsnr";
    case Spacing::Quadratic: return "quadratic";
    case Spacing::Karras: return "karras";
    case Spacing::Leading: return "leading";
    case Spacing::Trailing: return "trailing";
    case Spacing::Linspace: return "linspace";
    case Spacing::LeadingMultistep: return "leading_multistep";
  }
  return "unknown";
}

std::vector<std::string> spacing_names() {
  return {"time", "logsnr", "quadratic", "karras", "leading", "trailing", "linspace", "leading_multistep"};
}

FinalSigma parse_final_sigma(const std::string& name) {
  if (name == "min" || name == "sigma_min") return FinalSigma::Min;
  if (name == "zero") return FinalSigma::Zero;
  FEWSTEP_CHECK_VALUE(false, "final_sigma must be 'min' or 'zero', got final_sigma='", name, "'");
  return FinalSigma::Min;  // unreachable
}

std::string to_string(FinalSigma final_sigma) { return final_sigma == FinalSigma::Zero ? "zero" : "min"; }

std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                              std::optional<double> t_start, std::optional<double> t_end, double rho,
                              std::optional<int64_t> steps_offset, FinalSigma final_sigma) {
  FEWSTEP_CHECK_VALUE(steps >= 1 && steps <= kMaxGridSteps, "timesteps: steps must be in [1, ", kMaxGridSteps,
                      "], got steps=", steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(rho) && rho > 0.0, "timesteps: rho must be finite and > 0, got rho=", fmt_num(rho));
  const bool leading = spacing == Spacing::Leading || spacing == Spacing::LeadingMultistep;
  FEWSTEP_CHECK_VALUE(leading || !steps_offset.has_value(), "timesteps: steps_offset applies to the 'leading' and ",
                      "'leading_multistep' spacings only, got steps_offset=", steps_offset.value_or(0),
                      " with spacing '", to_string(spacing), "'");
  const bool zero = final_sigma == FinalSigma::Zero;
  const std::string who = "timesteps(spacing='" + to_string(spacing) + "', steps=" + std::to_string(steps) + ")";

  if (is_discrete(spacing)) {
    FEWSTEP_CHECK_VALUE(!(zero && t_end.has_value()), "timesteps: t_end cannot be set with spacing '",
                        to_string(spacing), "' and final_sigma='zero' (the grid ends at sigma = 0), got t_end=",
                        fmt_num(t_end.value_or(0.0)));
    auto grid = discrete_grid(schedule, steps, spacing, t_start, t_end, steps_offset.value_or(1), final_sigma);
    check_grid(schedule, grid, who, zero);
    return grid;
  }
  if (zero) {
    // `steps` evaluation times from t_start to t_end (steps − 1 intervals), then the σ = 0 marker.
    std::vector<double> grid;
    if (steps == 1) {
      grid = {t_start.value_or(schedule.t_max())};
      schedule.check_time(grid[0], "t_start");
    } else {
      grid = timesteps(schedule, steps - 1, spacing, t_start, t_end, rho);
    }
    grid.push_back(0.0);
    check_grid(schedule, grid, who, true);
    return grid;
  }

  const double ts = t_start.value_or(schedule.t_max());
  const double te = t_end.value_or(schedule.t_min());
  schedule.check_time(ts, "t_start");
  schedule.check_time(te, "t_end");
  FEWSTEP_CHECK_VALUE(ts > te, "timesteps: t_start must be > t_end, got t_start=", fmt_num(ts),
                      ", t_end=", fmt_num(te));

  std::vector<double> grid(static_cast<size_t>(steps) + 1);
  const double lam_s = schedule.lambda(ts), lam_e = schedule.lambda(te);
  // Karras: uniform in σ̃^{1/ρ} = e^{−λ/ρ}; kept in that form so σ̃ itself never overflows.
  const double k_s = std::exp(-lam_s / rho), k_e = std::exp(-lam_e / rho);
  const double u_s = std::sqrt(ts), u_e = std::sqrt(te);
  for (int64_t i = 1; i < steps; ++i) {
    const double r = static_cast<double>(i) / static_cast<double>(steps);
    double t = 0.0;
    switch (spacing) {
      case Spacing::Time: t = ts + r * (te - ts); break;
      case Spacing::LogSNR: t = schedule.t_of_lambda(lam_s + r * (lam_e - lam_s)); break;
      case Spacing::Quadratic: {
        const double u = u_s + r * (u_e - u_s);
        t = u * u;
        break;
      }
      case Spacing::Karras: t = schedule.t_of_lambda(-rho * std::log(k_s + r * (k_e - k_s))); break;
      default: break;
    }
    grid[static_cast<size_t>(i)] = t;
  }
  // Exact end points, whatever the round trip through λ would give.
  grid.front() = ts;
  grid.back() = te;
  check_grid(schedule, grid, who);
  return grid;
}

std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, const std::string& spacing,
                              std::optional<double> t_start, std::optional<double> t_end, double rho,
                              std::optional<int64_t> steps_offset, FinalSigma final_sigma) {
  return timesteps(schedule, steps, parse_spacing(spacing), t_start, t_end, rho, steps_offset, final_sigma);
}

namespace {

// Align Your Steps, 10-step noise levels σ̃ published with arXiv 2404.14507 (project page "how to").
const std::vector<double>& ays_table(const std::string& kind) {
  static const std::vector<double> sd15{14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520,
                                        1.8841921177,  1.3943805092, 0.9642583904, 0.6523686016,
                                        0.3977456272,  0.1515232662, 0.0291671582};
  static const std::vector<double> sdxl{14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769,
                                        1.3405244945,  0.8620721141, 0.5550693289, 0.3798540708,
                                        0.2332364134,  0.1114188177, 0.0291671582};
  static const std::vector<double> svd{700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002};
  if (kind == "ays_sd15") return sd15;
  if (kind == "ays_sdxl") return sdxl;
  return svd;
}

/// n values log-linearly interpolated along a decreasing table, end points kept.
std::vector<double> loglinear_resample(const std::vector<double>& table, int64_t n) {
  if (static_cast<int64_t>(table.size()) == n) return table;
  std::vector<double> out(static_cast<size_t>(n));
  const double last = static_cast<double>(table.size() - 1);
  for (int64_t i = 0; i < n; ++i) {
    const double pos = n == 1 ? 0.0 : last * static_cast<double>(i) / static_cast<double>(n - 1);
    const size_t k = std::min(static_cast<size_t>(pos), table.size() - 2);
    const double w = pos - static_cast<double>(k);
    out[static_cast<size_t>(i)] = std::exp((1.0 - w) * std::log(table[k]) + w * std::log(table[k + 1]));
  }
  return out;
}

}  // namespace

std::vector<std::string> sigma_kinds() {
  return {"karras", "exponential", "polyexponential", "ays_sd15", "ays_sdxl", "ays_svd"};
}

std::vector<double> sigmas(const std::string& kind, int64_t steps, double sigma_min, double sigma_max, double rho,
                           FinalSigma final_sigma) {
  FEWSTEP_CHECK_VALUE(steps >= 1, "sigmas: steps must be >= 1, got steps=", steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(rho) && rho > 0.0, "sigmas: rho must be finite and > 0, got rho=", fmt_num(rho));
  const bool zero = final_sigma == FinalSigma::Zero;
  std::vector<double> out;
  if (kind == "ays_sd15" || kind == "ays_sdxl" || kind == "ays_svd") {
    out = loglinear_resample(ays_table(kind), steps + 1);
    if (zero) out.back() = 0.0;
    return out;
  }
  FEWSTEP_CHECK_VALUE(kind == "karras" || kind == "exponential" || kind == "polyexponential",
                      "sigmas: kind must be one of 'karras', 'exponential', 'polyexponential', 'ays_sd15', ",
                      "'ays_sdxl', 'ays_svd', got kind='", kind, "'");
  FEWSTEP_CHECK_VALUE(std::isfinite(sigma_min) && std::isfinite(sigma_max) && sigma_min > 0.0 && sigma_max > sigma_min,
                      "sigmas: need finite 0 < sigma_min < sigma_max, got sigma_min=", fmt_num(sigma_min),
                      ", sigma_max=", fmt_num(sigma_max));
  const int64_t n = zero ? steps : steps + 1;  // values from sigma_max to sigma_min
  out.resize(static_cast<size_t>(n));
  const double lo = std::log(sigma_min), hi = std::log(sigma_max);
  const double k_max = std::pow(sigma_max, 1.0 / rho), k_min = std::pow(sigma_min, 1.0 / rho);
  for (int64_t i = 0; i < n; ++i) {
    const double r = n == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(n - 1);
    if (kind == "karras") {
      out[static_cast<size_t>(i)] = std::pow(k_max + r * (k_min - k_max), rho);
    } else if (kind == "exponential") {
      out[static_cast<size_t>(i)] = std::exp(hi + r * (lo - hi));
    } else {
      out[static_cast<size_t>(i)] = std::exp(lo + std::pow(1.0 - r, rho) * (hi - lo));
    }
  }
  out.front() = sigma_max;
  if (n > 1) out.back() = sigma_min;
  if (zero) out.push_back(0.0);
  return out;
}

std::vector<double> timesteps_from_sigmas(const NoiseSchedule& schedule, const std::vector<double>& sigma_values,
                                          bool quantize) {
  FEWSTEP_CHECK_VALUE(sigma_values.size() >= 2, "timesteps_from_sigmas: need at least 2 sigmas, got ",
                      sigma_values.size());
  const auto n_train = schedule.num_train_steps();
  FEWSTEP_CHECK_VALUE(!quantize || n_train.has_value(), "timesteps_from_sigmas: quantize needs a discrete schedule ",
                      "(trained timesteps), got ", schedule.repr());
  const double s_lo = schedule.sigma_tilde(schedule.t_min()), s_hi = schedule.sigma_tilde(schedule.t_max());
  const bool zero = sigma_values.back() == 0.0;  // the σ = 0 marker
  const size_t n = sigma_values.size() - (zero ? 1 : 0);
  std::vector<double> grid(n);
  for (size_t i = 0; i < n; ++i) {
    const double s = sigma_values[i];
    FEWSTEP_CHECK_VALUE(std::isfinite(s) && s >= s_lo * (1.0 - 1e-6) && s <= s_hi * (1.0 + 1e-6),
                        "timesteps_from_sigmas: sigmas[", i, "]=", fmt_num(s), " is outside the schedule's range [",
                        fmt_num(s_lo), ", ", fmt_num(s_hi), "] (sigma/alpha of ", schedule.repr(), ")");
    double t = std::clamp(schedule.t_of_lambda(-std::log(s)), schedule.t_min(), schedule.t_max());
    if (s >= s_hi) t = schedule.t_max();
    if (s <= s_lo) t = schedule.t_min();
    grid[i] = t;
  }
  if (quantize) {
    // Nearest trained timestep in λ; walking up from the smallest σ, a timestep not above the one
    // below it moves one up, so the grid stays strictly decreasing with its length.
    const int64_t N = *n_train;
    auto knot_lambda = [&](int64_t k) { return schedule.lambda(static_cast<double>(k + 1) / static_cast<double>(N)); };
    int64_t below = -1;
    for (size_t j = n; j-- > 0;) {
      const double pos = grid[j] * static_cast<double>(N) - 1.0;
      const int64_t lo = std::clamp<int64_t>(static_cast<int64_t>(std::floor(pos)), 0, N - 1);
      const int64_t hi = std::min<int64_t>(lo + 1, N - 1);
      const double lambda = -std::log(sigma_values[j]);
      int64_t k = std::abs(knot_lambda(lo) - lambda) <= std::abs(knot_lambda(hi) - lambda) ? lo : hi;
      if (k <= below) k = below + 1;
      FEWSTEP_CHECK_VALUE(k < N, "timesteps_from_sigmas: quantize ran out of trained timesteps at sigmas[", j,
                          "]: more distinct levels than the schedule's ", N, " timesteps");
      below = k;
      grid[j] = static_cast<double>(k + 1) / static_cast<double>(N);
    }
  }
  if (zero) grid.push_back(0.0);
  check_grid(schedule, grid, "timesteps_from_sigmas", /*allow_final_zero=*/true);
  return grid;
}

std::vector<double> validate_grid(const NoiseSchedule& schedule, std::vector<double> grid, bool allow_final_zero) {
  check_grid(schedule, grid, "validate_grid", allow_final_zero);
  return grid;
}

}  // namespace fewstep
