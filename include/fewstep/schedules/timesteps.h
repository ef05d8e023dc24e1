/// @file schedules/timesteps.h
/// @brief Time grids: steps+1 strictly decreasing float64 times from t_start to t_end.
///
/// Spacings (DPM-Solver §3.4 / appendix D, Karras et al. 2022 eq. (5), diffusers):
///  - "time":      uniform in t.
///  - "logsnr":    uniform in λ (DPM-Solver's "logSNR").
///  - "quadratic": uniform in √t, then squared (DPM-Solver's "time_quadratic").
///  - "karras":    σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ with σ̃ = e^{−λ}, ρ = 7.
///  - "leading":   discrete schedules only; evaluation indices (steps−1−i)·⌊N/steps⌋ + 1
///                 (diffusers "leading" with steps_offset = 1, Stable Diffusion's setting),
///                 then the end point.
///  - "trailing":  discrete schedules only; indices round_half_even(N − i·N/steps) − 1 (diffusers
///                 "trailing"), then the end point.
/// Discrete index n maps to t = (n+1)/N. The end point of leading/trailing is t_end
/// (default t_min = index 0); t_start cannot be set for them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"

namespace fewstep {

enum class Spacing { Time, LogSNR, Quadratic, Karras, Leading, Trailing };

/// "time", "logsnr", "quadratic", "karras", "leading", "trailing" (ValueError otherwise).
Spacing parse_spacing(const std::string& name);
std::string to_string(Spacing spacing);

/// Grid of steps+1 times, t_start (default t_max) down to t_end (default t_min).
std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, Spacing spacing = Spacing::LogSNR,
                              std::optional<double> t_start = std::nullopt,
                              std::optional<double> t_end = std::nullopt, double rho = 7.0);
std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, const std::string& spacing,
                              std::optional<double> t_start = std::nullopt,
                              std::optional<double> t_end = std::nullopt, double rho = 7.0);

/// Validates an explicit grid: at least 2 points, finite, strictly decreasing, inside the
/// schedule's range. Returns it unchanged; ValueError names the first offending entry.
std::vector<double> validate_grid(const NoiseSchedule& schedule, std::vector<double> grid);

}  // namespace fewstep
