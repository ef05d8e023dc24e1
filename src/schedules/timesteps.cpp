#include "fewstep/schedules/timesteps.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "fewstep/core/check.h"
#include "format.h"

namespace fewstep {

using detail::fmt_num;

namespace {

constexpr const char* kSpacingNames = "'time', 'logsnr', 'quadratic', 'karras', 'leading', 'trailing'";

/// Shared by validate_grid and the final check of every generated grid; `who` prefixes messages.
void check_grid(const NoiseSchedule& schedule, const std::vector<double>& grid, const std::string& who) {
  FEWSTEP_CHECK_VALUE(grid.size() >= 2, who, ": a grid needs at least 2 times, got ", grid.size());
  const double lo = schedule.t_min() - 1e-12 * std::abs(schedule.t_min());
  const double hi = schedule.t_max() + 1e-12 * std::abs(schedule.t_max());
  for (size_t i = 0; i < grid.size(); ++i) {
    const double t = grid[i];
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
std::vector<int64_t> discrete_indices(Spacing spacing, int64_t n_train, int64_t steps) {
  std::vector<int64_t> idx(static_cast<size_t>(steps));
  if (spacing == Spacing::Leading) {
    const int64_t ratio = n_train / steps;  // integer step ratio, steps_offset = 1
    for (int64_t i = 0; i < steps; ++i) idx[static_cast<size_t>(i)] = (steps - 1 - i) * ratio + 1;
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
                                  const std::optional<double>& t_start, const std::optional<double>& t_end) {
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
  const double te = t_end.value_or(schedule.t_min());
  schedule.check_time(te, "t_end");

  const auto idx = discrete_indices(spacing, N, steps);
  std::vector<double> grid;
  grid.reserve(static_cast<size_t>(steps) + 1);
  for (int64_t n : idx) grid.push_back(static_cast<double>(n + 1) / static_cast<double>(N));
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
  }
  return "unknown";
}

std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                              std::optional<double> t_start, std::optional<double> t_end, double rho) {
  FEWSTEP_CHECK_VALUE(steps >= 1, "timesteps: steps must be >= 1, got steps=", steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(rho) && rho > 0.0, "timesteps: rho must be finite and > 0, got rho=", fmt_num(rho));
  const std::string who = "timesteps(spacing='" + to_string(spacing) + "', steps=" + std::to_string(steps) + ")";

  if (spacing == Spacing::Leading || spacing == Spacing::Trailing) {
    auto grid = discrete_grid(schedule, steps, spacing, t_start, t_end);
    check_grid(schedule, grid, who);
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
                              std::optional<double> t_start, std::optional<double> t_end, double rho) {
  return timesteps(schedule, steps, parse_spacing(spacing), t_start, t_end, rho);
}

std::vector<double> validate_grid(const NoiseSchedule& schedule, std::vector<double> grid) {
  check_grid(schedule, grid, "validate_grid");
  return grid;
}

}  // namespace fewstep
