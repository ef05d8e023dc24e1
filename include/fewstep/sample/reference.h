/// @file sample/reference.h
/// @brief Float64 reference solve of the probability-flow ODE: adaptive Dormand–Prince 5(4) in λ.
///
/// The ODE is integrated in the half log-SNR λ = log(α/σ), where it is smooth for every
/// schedule family, on the variable y = x/σ. With x = α x_0 + σ ε the data form of the
/// probability-flow ODE (docs/design.md §1) is
///     dy/dλ = e^λ x̂_0(σ(t(λ)) y, t(λ)),
/// integrated from λ(t_start) up to λ(t_end); the result is x = σ(t_end) y. The right-hand
/// side is bounded (x̂_0 is) and tends to 0 at low SNR, so no stiffness comes from the schedule.
///
/// Method: the embedded Runge–Kutta pair of Dormand & Prince (1980), "A family of embedded
/// Runge–Kutta formulae", J. Comp. Appl. Math. 6, 19–26 (Hairer, Nørsett & Wanner, Solving
/// ODEs I, §II.5, Table 5.2): 7 stages, first-same-as-last, 5th-order solution with a
/// 4th-order error estimate. Step control as in HNW §II.4: error norm = max over the batch of
/// the RMS over each sample's coordinates of err/(atol + rtol·max(|y|, |y_new|)); a step is
/// accepted when the norm is ≤ 1; the next step is h·clamp(0.9·norm^{−1/5}, 0.2, 5) (no growth
/// right after a rejection); the first step is chosen by HNW's starting-step algorithm
/// (one extra evaluation) unless `first_step` is given.
///
/// All samples share the step sequence: one model call per stage for the whole batch.
/// Computation is float64 on x_T's device, under inference mode; the model sees float64 input.
/// The evaluation count is nfe = 1 + [first_step = 0] + 6·(accepted + rejected).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "fewstep/models/denoiser.h"

namespace fewstep {

struct ReferenceOptions {
  double rtol = 1e-10;       ///< relative tolerance (> 0)
  double atol = 1e-10;       ///< absolute tolerance on y = x/σ (> 0)
  int64_t max_steps = 100000;  ///< attempted steps (accepted + rejected) before giving up
  double first_step = 0;     ///< initial step in λ; 0 = choose automatically
};

struct ReferenceResult {
  at::Tensor x;          ///< solution at t_end, float64, x_T's shape and device
  int64_t nfe = 0;       ///< model evaluations
  int64_t accepted = 0;  ///< accepted steps
  int64_t rejected = 0;  ///< rejected steps
};

/// Solves the probability-flow ODE of `model` from x_T at t_start down to t_end (t_start > t_end,
/// both inside the schedule's range). x_T is [batch, ...]; error norms are per sample.
/// ValueError for invalid arguments; RuntimeError when max_steps is reached, the step size
/// underflows, or the model returns non-finite values.
ReferenceResult reference_solve(const Denoiser& model, const at::Tensor& x_T, double t_start, double t_end,
                                const ReferenceOptions& options = {});

}  // namespace fewstep
