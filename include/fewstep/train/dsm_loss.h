/// @file train/dsm_loss.h
/// @brief Denoising score matching: noised inputs, native targets and the loss weightings.
///
/// For data x_0, noise ε ~ N(0, I) and per-sample times t: x_t = α_t x_0 + σ_t ε and the network
/// regresses the native target a_t x_0 + b_t ε of its prediction type (fewstep::native_from_x0_eps:
/// ε, x_0, v = α ε − σ x_0, score −ε/σ, flow α̇ x_0 + σ̇ ε). At fixed x_t an error e in x̂_0 is
/// an error (a_t − b_t α_t/σ_t)·e in the native output (since ε̂ − ε = −(α/σ)(x̂_0 − x_0)), so
///   ‖native error‖² = c_t ‖x̂_0 error‖²,  c_t = (a_t − b_t α_t/σ_t)²
/// (c = SNR for ε, 1 for x_0, (α² + σ²)²/σ² = SNR + 1 for v under VP, SNR/σ² for score).
/// The weightings are defined on the x̂_0-error scale, SNR = α²/σ²:
///   uniform        w = c_t             the plain MSE of the native output ("simple" loss, Ho et al. 2020)
///   truncated_snr  w = max(SNR, 1)     Salimans & Ho 2022 (progressive distillation)
///   min_snr        w = min(SNR, γ)     Hang et al. 2023 (Min-SNR-γ, γ = 5 by default)
/// and the per-sample loss is w/c_t · mean((output − target)²) = w · mean((x̂_0 − x_0)²).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

enum class LossWeighting { Uniform, TruncatedSNR, MinSNR };

/// "uniform", "truncated_snr", "min_snr" (ValueError otherwise).
LossWeighting parse_loss_weighting(const std::string& name);
std::string to_string(LossWeighting weighting);

/// c_t above: ‖native error‖² / ‖x̂_0 error‖² at time t for networks predicting `prediction`.
double native_error_scale(Prediction prediction, const NoiseSchedule& schedule, double t);
/// w above: the weight of the per-sample x̂_0 mean squared error.
double x0_loss_weight(LossWeighting weighting, Prediction prediction, const NoiseSchedule& schedule, double t,
                      double min_snr_gamma = 5.0);

struct DsmOptions {
  Prediction prediction = Prediction::Eps;
  TimeInput time_input = TimeInput::T;  // what the network receives as t (see Denoiser)
  double time_scale = 1.0;
  LossWeighting weighting = LossWeighting::Uniform;
  double min_snr_gamma = 5.0;
  /// ValueError naming the field.
  void validate() const;
};

/// What one DSM step feeds the network and compares it with.
struct DsmInputs {
  at::Tensor x_t;      // α x_0 + σ ε, x_0's shape and dtype
  at::Tensor t_input;  // [B] network time input, x_0's dtype
  at::Tensor target;   // native target, x_0's shape
  at::Tensor weight;   // [B] w/c_t, multiplies the per-sample native MSE
};

/// x0 [B, ...], eps like x0, t [B] float64 times (host) inside the schedule's range.
DsmInputs dsm_inputs(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t, const NoiseSchedule& schedule,
                     const DsmOptions& options);
/// mean_b weight_b · mean_j (output − target)²_{b,j}: a scalar that autograd differentiates.
at::Tensor dsm_loss(const at::Tensor& output, const DsmInputs& inputs);

}  // namespace fewstep
