/// @file micro/unroll.h
/// @brief The differentiable N-step run of a micro-distilled sampler, for training on unrolled
///        trajectories (the coupling of g_ψ and h_φ).
///
/// It runs exactly what MicroSampler::sample runs (the same step, the same LearnedStepController
/// arithmetic, tested to agree to round-off), but keeps the step positions as tensors: λ_{i+1} =
/// λ_i + Δλ_i with Δλ_i from h_φ (micro/step_size.h; the uniform share without a head), so
///     loss = ‖x_0^pred − x_0^true‖²
/// has gradients with respect to g_ψ (through every step), h_φ (through where the steps land: the
/// linear factor, DDIM coefficient and g_ψ's (λ_s, h) inputs are differentiable in λ), and x (through
/// the teacher's x input when `teacher_grad`). The teacher takes its time as a number (t_i = t(λ_i)),
/// so moving λ_i would otherwise miss that ε̂ is evaluated at another time — a term as large as the
/// others, without which h_φ's gradient is biased (it made step-size training diverge here). With
/// `time_gradient`, each evaluation whose λ_i carries a gradient is paired with one more teacher call
/// at λ_i + δ (no autograd), and ε̂ enters as ε̂ + (λ_i − sg(λ_i)) · (ε̂(x_i, λ_i + δ) − ε̂(x_i, λ_i))/δ:
/// the same value, with the forward-difference ∂ε̂/∂λ in its gradient. Training only: sampling never
/// makes these calls.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "fewstep/micro/micro_sampler.h"
#include "fewstep/models/denoiser.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

struct UnrollSpec {
  const torch::jit::Module* residual = nullptr;   ///< N_ψ; null: DDIM nonlinear term
  /// Previous evaluations the residual head reuses (MicroHeadConfig::previous_evaluations: 0 to 3).
  int64_t history = 0;
  const torch::jit::Module* step_size = nullptr;  ///< h_φ's head; null: uniform log-SNR grid
  MicroMode mode = MicroMode::Joint;  ///< StepSize: DEIS-2 (λ) step (residual ignored)
  int64_t budget = 10;                ///< N steps = N teacher evaluations
  double spread = 0.75;
  double t_start = 1.0;
  double t_end = 1e-3;
  /// Backpropagate through the teacher's x input (exact gradient); false treats each ε̂ as a constant
  /// of the step (cheaper: no teacher backward; g_ψ's own x input and the linear part still carry it).
  bool teacher_grad = true;
  /// Differentiate through the teacher's time input by a forward difference (one more call per step
  /// whose position h_φ chose); δ in λ.
  bool time_gradient = true;
  double time_delta = 1e-3;
  /// The mean of h_φ's per-sample logits (micro/step_size.h's propose_step); empty: the batch's own.
  std::function<at::Tensor(const at::Tensor&)> batch_mean;
};

struct UnrollResult {
  at::Tensor x;                ///< x_0^pred
  std::vector<at::Tensor> lambdas;  ///< λ_0 … λ_N (0-dim float64; differentiable where h_φ placed them)
  std::vector<double> times;   ///< t_0 … t_N
  int64_t nfe = 0;             ///< teacher evaluations of the sampler (= budget)
  int64_t extra_evaluations = 0;  ///< time-gradient calls (training only)
};

/// ValueError for budget < 1, spread outside [0, 1), or t_start ≤ t_end.
UnrollResult unroll_micro(const Denoiser& teacher, const at::Tensor& x_T, const UnrollSpec& spec);

}  // namespace fewstep
