/// @file schedules/timesteps.h
/// @brief Time grids: steps+1 strictly decreasing float64 times from t_start to t_end.
///
/// Spacings (DPM-Solver §3.4 / appendix D, Karras et al. 2022 eq. (5), diffusers):
///  - "time":      uniform in t.
///  - "logsnr":    uniform in λ (DPM-Solver's "logSNR").
///  - "quadratic": uniform in √t, then squared (DPM-Solver's "time_quadratic").
///  - "karras":    σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ with σ̃ = e^{−λ}, ρ = 7.
///  - "leading":   discrete schedules only; evaluation indices (steps−1−i)·⌊N/steps⌋ + offset
///                 (diffusers' DDIM/Euler "leading"; steps_offset defaults to 1, Stable
///                 Diffusion's setting), then the end point.
///  - "leading_multistep": discrete only; indices (steps−i)·⌊N/(steps+1)⌋ + offset (the
///                 "leading" of diffusers' multistep schedulers: DPMSolverMultistep, UniPC, DEIS).
///  - "linspace":  discrete only; indices round_half_even((N−1)(steps−i)/steps) (the multistep
///                 schedulers' default "linspace": round(linspace(0, N−1, steps+1)) without 0).
///  - "trailing":  discrete schedules only; indices round_half_even(N − i·N/steps) − 1 (diffusers
///                 "trailing"), then the end point.
/// Discrete index n maps to t = (n+1)/N. The end point of the discrete spacings is t_end
/// (default t_min = index 0); t_start cannot be set for them.
///
/// The final step (diffusers' `final_sigmas_type`, docs/interop.md):
///  - FinalSigma::Min  ("min", default): the grid ends at t_end (σ_min of the schedule).
///  - FinalSigma::Zero ("zero"): the grid ends with the marker t = 0, a last step to σ = 0. It
///    costs one evaluation at the previous grid time and returns that evaluation's x̂_0, which
///    is where every first-order step to σ = 0 lands (DDIM, DPM-Solver(++), Euler in σ). A
///    discrete spacing keeps its `steps` evaluation times and replaces the end point by 0 (t_end
///    cannot be set); a continuous spacing spreads `steps` evaluation times from t_start to t_end
///    (steps − 1 intervals; t_end is then the last evaluation time) and appends 0. Either way the grid has steps + 1 entries and costs `steps`
///    evaluations with a one-evaluation-per-step solver. Only the sampling driver reads the
///    marker: `validate_grid` accepts it only when asked to.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"

namespace fewstep {

enum class Spacing { Time, LogSNR, Quadratic, Karras, Leading, Trailing, Linspace, LeadingMultistep };

/// "time", "logsnr", "quadratic", "karras", "leading", "trailing", "linspace",
/// "leading_multistep" (ValueError otherwise).
Spacing parse_spacing(const std::string& name);
std::string to_string(Spacing spacing);
/// Every spacing name, in the order above.
std::vector<std::string> spacing_names();

enum class FinalSigma { Min, Zero };
/// "min" or "zero" (diffusers' "sigma_min" is accepted for "min"); ValueError otherwise.
FinalSigma parse_final_sigma(const std::string& name);
std::string to_string(FinalSigma final_sigma);

/// The most steps a grid (and a sampling request's steps= or nfe=) may have: far more than any
/// sampler needs, and small enough that the grid (8 bytes a step) is allocated at once; a larger
/// value is a ValueError naming it before anything is allocated (docs/reliability.md).
constexpr int64_t kMaxGridSteps = 1'000'000;

/// Grid of steps+1 times, t_start (default t_max) down to t_end (default t_min), or down to the
/// σ = 0 marker 0.0 with FinalSigma::Zero. `steps_offset` (default 1) applies to the "leading"
/// spacings only (ValueError otherwise).
std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, Spacing spacing = Spacing::LogSNR,
                              std::optional<double> t_start = std::nullopt,
                              std::optional<double> t_end = std::nullopt, double rho = 7.0,
                              std::optional<int64_t> steps_offset = std::nullopt,
                              FinalSigma final_sigma = FinalSigma::Min);
std::vector<double> timesteps(const NoiseSchedule& schedule, int64_t steps, const std::string& spacing,
                              std::optional<double> t_start = std::nullopt,
                              std::optional<double> t_end = std::nullopt, double rho = 7.0,
                              std::optional<int64_t> steps_offset = std::nullopt,
                              FinalSigma final_sigma = FinalSigma::Min);

/// Validates an explicit grid: at least 2 points, finite, strictly decreasing, inside the
/// schedule's range, except that with `allow_final_zero` the last entry may be the σ = 0 marker
/// 0.0. Returns it unchanged; ValueError names the first offending entry.
std::vector<double> validate_grid(const NoiseSchedule& schedule, std::vector<double> grid,
                                  bool allow_final_zero = false);
/// The σ face: noise-level schedules as k-diffusion users know them, in σ̃ = σ/α = e^{−λ} (the
/// VE noise level; σ itself for VE/EDM models). steps+1 decreasing values from sigma_max to
/// sigma_min, or with FinalSigma::Zero `steps` values from sigma_max to sigma_min followed by 0
/// (k-diffusion's get_sigmas_*(steps) with its appended zero). Kinds:
///  - "karras":          (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5);
///  - "exponential":     uniform in log σ;
///  - "polyexponential": log σ = log σ_min + (1 − i/(n−1))^ρ (log σ_max − log σ_min) (ρ = 1: exponential);
///  - "ays_sd15", "ays_sdxl", "ays_svd": the published 10-step Align Your Steps tables (Sabour et
///    al. 2024, arXiv 2404.14507) for Stable Diffusion 1.5, SDXL and Stable Video Diffusion,
///    interpolated log-linearly to other step counts as the paper's recipe does; sigma_min/max
///    are not used (the tables fix them), and FinalSigma::Zero replaces the last value by 0.
std::vector<double> sigmas(const std::string& kind, int64_t steps, double sigma_min = 0.002, double sigma_max = 80.0,
                           double rho = 7.0, FinalSigma final_sigma = FinalSigma::Min);
/// The kinds `sigmas` accepts.
std::vector<std::string> sigma_kinds();

/// Times of `schedule` at the noise levels σ̃ (decreasing; a final 0 becomes the σ = 0 marker):
/// t = t(λ = −log σ̃), the schedule's exact inverse. With `quantize` (discrete schedules only) each
/// time moves to the trained timestep whose λ is nearest; going up from the smallest σ̃, a timestep
/// not above the one below it moves one up, so no two grid points coincide and the step count
/// stays (sigma schedules are densest at small σ). ValueError
/// for a σ̃ outside the schedule's range (relative slack 1e-6) or for quantize on a continuous
/// schedule.
std::vector<double> timesteps_from_sigmas(const NoiseSchedule& schedule, const std::vector<double>& sigmas,
                                          bool quantize = false);

/// True if the grid ends with the σ = 0 marker (FinalSigma::Zero).
inline bool ends_at_zero(const std::vector<double>& grid) { return !grid.empty() && grid.back() == 0.0; }

}  // namespace fewstep
