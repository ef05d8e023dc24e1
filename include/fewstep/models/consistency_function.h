/// @file models/consistency_function.h
/// @brief The consistency function f_θ(x, t) = c_skip(t) x + c_out(t) F_θ(c_in(t) x, c_noise(t))
/// (Song et al. 2023, "Consistency Models", arXiv 2303.01469, eq. (3) and Appendix C), on any schedule.
///
/// In the VE/EDM form (α = 1, σ = t) the paper's scalings with σ_d the data standard deviation and
/// ε = σ_min the boundary are
///   c_skip(σ) = σ_d² / ((σ − ε)² + σ_d²),   c_out(σ) = σ_d (σ − ε) / √(σ² + σ_d²),
///   c_in(σ)   = 1 / √(σ² + σ_d²).
/// For a schedule with α ≠ 1 the same scalings are applied at the VE-equivalent noise level
/// σ̃ = σ_t/α_t (x_t/α_t is a VE state with noise σ̃), with the network input normalised by the
/// standard deviation of x_t itself:
///   c_skip = σ_d² / ((σ̃ − σ̃_min)² + σ_d²),  c_out = σ_d (σ̃ − σ̃_min) / √(σ̃² + σ_d²),
///   c_in = 1 / √(σ_t² + α_t² σ_d²)   (= 1/√(σ² + σ_d²) on VE),
/// with σ̃_min = σ̃(t_min). At t = t_min, c_skip = 1 and c_out = 0 exactly, so the boundary
/// condition f(x, t_min) = x holds exactly (x · 1 + 0 · F, for any finite F), not approximately.
/// The output estimates x_{t_min} (≈ x_0 up to the boundary noise).
///
/// c_noise(t) is the network's own time input (models/denoiser.h's network_time with the given
/// time_input and time_scale): a reparametrisation of the paper's ¼ ln σ that lets a consistency
/// student start from a teacher network of the library's conventions.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

struct ConsistencyParameterization {
  double sigma_data = 0.5;  ///< σ_d (0.5 for images in [−1, 1], the paper's value)
  double t_min = 0.0;       ///< boundary time ε; 0 = the schedule's t_min
  TimeInput time_input = TimeInput::T;  ///< c_noise: the network's time input
  double time_scale = 1.0;
  /// ValueError naming the field.
  void validate() const;
};

struct ConsistencyScalings {
  double c_skip, c_out, c_in;
};

/// The scalings at host time t (t_min <= t <= t_max). ValueError naming `t` outside the range.
ConsistencyScalings consistency_scalings(const NoiseSchedule& schedule, const ConsistencyParameterization& p,
                                         double t);

/// The network F of a consistency function: F(c_in x, c_noise) → a tensor of x's shape.
using ConsistencyNetwork = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t_input)>;

/// f(x, t) for a batch with per-row host times t ([B] float64 CPU tensor), differentiable through
/// `net`. ValueError naming the argument for shape mismatches.
at::Tensor consistency_function(const ConsistencyNetwork& net, const NoiseSchedule& schedule,
                                const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t);
/// The same for a TorchScript module forward(x, t) → F.
at::Tensor consistency_function(const torch::jit::Module& net, const NoiseSchedule& schedule,
                                const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t);

/// The consistency model as a Denoiser predicting x0 = f(x, t): what the `consistency` sampler and
/// `fewstep sample` run. Takes the network by shared pointer (kept alive by the Denoiser).
Denoiser consistency_denoiser(ScriptNet net, SchedulePtr schedule, const ConsistencyParameterization& p);
/// The same for any network (e.g. a Python module); `description` names it in messages.
Denoiser consistency_denoiser(ConsistencyNetwork net, SchedulePtr schedule, const ConsistencyParameterization& p,
                              std::string description = "consistency model");

}  // namespace fewstep
