/// @file micro/exponential_step.h
/// @brief The exponential-integrator step of micro-distillation (docs/micro.md; the exact linear factor of docs/design.md §1),
///        written in the half log-SNR λ with tensors, so gradients reach the step sizes.
///
/// The exact probability-flow step from s to t < s (noise form, docs/design.md §1) is
///     x_t = (α_t/α_s) x_s + r(x_s; s, t),      r = −α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂(x_λ, λ) dλ,
/// with the linear factor α_t/α_s > 1 going backward (an exp(−½β̄Δt) factor would have the wrong sign; docs/design.md §1).
/// Micro-distillation learns the nonlinear residual r. Freezing ε̂ at its value at s gives DDIM:
///     r_DDIM = c · ε̂_s,   c = σ_t − (α_t/α_s) σ_s  (< 0),
/// and the exact r differs from it by O(h²), h = λ_t − λ_s. The learned term is therefore
///     g_ψ(x_s, ε̂_s, λ_s, h) = c · (ε̂_s + h · N_ψ(x_s, ε̂_s, λ_s, h)),
/// with N_ψ the residual head (nets/micro_heads.h), whose output layer starts at zero: an untrained
/// g_ψ is exactly DDIM, and N_ψ learns an O(1) quantity (≈ dε̂/dλ / 2 for small h) at every h.
///
/// α and σ are closed-form functions of λ in every family (VP: α² = sigmoid(2λ); VE: α = 1,
/// σ = e^{−λ}; flow: α = sigmoid(λ), σ = sigmoid(−λ)), so everything here is differentiable in λ.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "fewstep/schedules/schedule.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

/// α(λ) and σ(λ) for `family` (tensors of any shape, differentiable).
at::Tensor alpha_of_lambda(ScheduleFamily family, const at::Tensor& lambda);
at::Tensor sigma_of_lambda(ScheduleFamily family, const at::Tensor& lambda);

/// Per-sample step geometry: λ_s and λ_t are [B] tensors (or scalars broadcast to the batch).
struct ExponentialStep {
  at::Tensor linear;  ///< α_t/α_s, [B]
  at::Tensor ddim;    ///< c = σ_t − (α_t/α_s) σ_s, [B]
  at::Tensor h;       ///< λ_t − λ_s, [B]
};
ExponentialStep exponential_step(ScheduleFamily family, const at::Tensor& lambda_s, const at::Tensor& lambda_t);

/// An evaluation before the current one, for residual heads with history (MicroHeadConfig::history):
/// its ε̂ and its λ.
struct PreviousEvaluation {
  at::Tensor eps;
  at::Tensor lambda;  ///< [B] or 0-dim
};

/// g_ψ above: c · (ε̂ + h · N_ψ(x, ε̂, λ_s, h)); with `residual_head` null, DDIM's c · ε̂.
/// With history (`previous_evaluations` ≥ 1, MicroHeadConfig::previous_evaluations; our extension,
/// off by default): the step also reuses the previous evaluation, which costs nothing, and g_ψ
/// corrects the two-step DEIS term instead of DDIM's,
///     g_ψ = r_DEIS2(ε̂, ε̂_prev) + c · h · N_ψ(x, ε̂, ε̂ − ε̂_prev, λ_s, h, h_prev),
/// whose error is O(h³) rather than O(h²); an untrained head with history is DEIS-2 (DDIM at the
/// first step, where h_prev = 0). With 2, N_ψ also takes d2 = ε̂_prev − ε̂_prev2 and h_prev2 = λ_prev −
/// λ_prev2, with 3 also d3 and h_prev3 (up to MicroHeadConfig::max_history_depth); the base term stays
/// DEIS-2. `before` lists the run's evaluations before this one, most recent last (only the last
/// `previous_evaluations` are read). Where it holds fewer (a run's first
/// steps), the oldest one there is stands in for the missing ones, and the current one when it is
/// empty, so the missing differences and step lengths are 0. x and eps are [B, ...]; λ's are [B] or 0-dim.
at::Tensor micro_nonlinear_term(const torch::jit::Module* residual_head, int64_t previous_evaluations,
                                ScheduleFamily family, const at::Tensor& x, const at::Tensor& eps,
                                const at::Tensor& lambda_s, const at::Tensor& lambda_t,
                                const std::vector<PreviousEvaluation>& before = {});

/// x_t = (α_t/α_s) x + g_ψ(...): the micro-distilled step.
at::Tensor micro_update(const torch::jit::Module* residual_head, int64_t previous_evaluations, ScheduleFamily family,
                        const at::Tensor& x, const at::Tensor& eps, const at::Tensor& lambda_s,
                        const at::Tensor& lambda_t, const std::vector<PreviousEvaluation>& before = {});

/// The exact residual r = x_t − (α_t/α_s) x_s, given the exact x_t (training targets), and the
/// weight 1/c² that makes errors in it errors in ε units (comparable across step sizes).
at::Tensor exact_residual(ScheduleFamily family, const at::Tensor& x_s, const at::Tensor& x_t,
                          const at::Tensor& lambda_s, const at::Tensor& lambda_t);

/// Two-step DEIS in λ (= the library's `deis` with order 2, variable "lambda"; DPM-Solver-2M in noise
/// form), differentiable in the λ's: ε̂ interpolated linearly through (λ_prev, ε̂_prev), (λ_s, ε̂_s):
///     x_t = (α_t/α_s) x_s − α_t e^{−λ_s} [ (1 − e^{−h}) ε̂_s + (1 − e^{−h}(1 + h)) D ],
///     D = (ε̂_s − ε̂_prev)/(λ_s − λ_prev).
/// With eps_prev undefined, or λ_prev = λ_s, it is DDIM (the first step of a run). The step-size-only
/// baseline of micro-distillation (h_φ with the DEIS step) trains through this.
at::Tensor deis2_lambda_update(ScheduleFamily family, const at::Tensor& x, const at::Tensor& eps,
                               const at::Tensor& eps_prev, const at::Tensor& lambda_prev, const at::Tensor& lambda_s,
                               const at::Tensor& lambda_t);
/// Its nonlinear part (the update minus (α_t/α_s) x), shape of eps.
at::Tensor deis2_nonlinear_term(ScheduleFamily family, const at::Tensor& eps, const at::Tensor& eps_prev,
                                const at::Tensor& lambda_prev, const at::Tensor& lambda_s, const at::Tensor& lambda_t);

}  // namespace fewstep
