/// @file micro/step_size.h
/// @brief h_φ, the learned step size of micro-distillation, and its place in the
///        adaptive-controller slot (control/controller.h).
///
/// A run has a budget of N steps (N teacher evaluations): the differentiable surrogate for the step
/// count that docs/design.md §1 asks for is this budget, whose step sizes h_φ places (a λN² penalty is not
/// differentiable in N; here N is chosen by the user and the benchmark sweeps it). Step i of N, from
/// λ_i with R = λ_end − λ_i left and k = N − i steps remaining, has size in λ
///     Δλ_i = R/k · (1 + a · (2u − 1)),   u = sigmoid(mean_b h_φ(f_b)),   a = spread ∈ [0, 1),
/// so every step lies in [(1 − a)R/k, (1 + a)R/k] ⊂ (0, R) and the last step (k = 1) lands exactly on
/// λ_end: h_φ can never overshoot, stall or exceed the budget. An untrained h_φ (zero output layer)
/// gives u = ½, the uniform log-SNR grid (DPM-Solver's default).
///
/// Features f_b of sample b (the network sees (x_t, t, e_t) through these summaries):
///     [(λ_i − λ_start)/(λ_end − λ_start), i/N, 1/k, log(rms(e_b) + 1e-6)/10, rms(x_b)]
/// with e = x̂_0(t_{i−1}) − x̂_0(t_{i−2}), the change of the teacher's data prediction between the two
/// latest evaluations (0 for i < 2). The decision for the step from t_i is made before the
/// evaluation at t_i (that is the slot's timing: a controller decides after an attempt), so e reuses
/// evaluations already made and costs nothing. The batch steps together (one teacher call per step
/// for all samples), so the per-sample logits are averaged: the grid is a property of the batch, as
/// with the PID controller's max over the batch. Everything stays differentiable (λ_i, x and e), so
/// in training (micro/unroll.h) gradients reach h_φ through where its steps land and through what
/// its inputs become.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "fewstep/control/controller.h"
#include "fewstep/nets/network.h"

namespace fewstep {

/// Number of features above.
constexpr int64_t kStepSizeFeatures = 5;

/// Features [B, 5] in x's dtype; e may be undefined (no change yet); lambda is a 0-dim tensor.
at::Tensor step_size_features(const at::Tensor& x, const at::Tensor& e, const at::Tensor& lambda, double lambda_start,
                              double lambda_end, int64_t index, int64_t budget);

/// Δλ_i above as a 0-dim tensor in `remaining`'s dtype (differentiable in `remaining` and in the head's
/// parameters). head null: the uniform share R/k. k = budget − index ≥ 1. `batch_mean` (optional)
/// replaces mean_b of the logits: data-parallel training passes the mean over every process's rows
/// (train/micro_trainer.h), so the grid is the whole batch's.
at::Tensor propose_step(const torch::jit::Module* head, const at::Tensor& features, const at::Tensor& remaining,
                        int64_t index, int64_t budget, double spread,
                        const std::function<at::Tensor(const at::Tensor&)>& batch_mean = {});

/// h_φ in the controller slot: accepts every attempt, needs no error estimate, takes exactly
/// `budget` steps from t_start to t_end. ControllerState is unused (everything is in ControlInput).
class LearnedStepController final : public StepController {
 public:
  /// head may be null (uniform log-SNR grid). ValueError for budget < 1 or spread outside [0, 1).
  LearnedStepController(ScriptNet head, int64_t budget, double spread);

  std::string describe() const override;
  bool requires_error_estimate() const override { return false; }
  int64_t max_steps() const override { return budget_; }
  ControlProposal start(const ControlStart& start) const override;
  ControlDecision decide(const ControlInput& input, ControllerState state) const override;

  int64_t budget() const { return budget_; }
  double spread() const { return spread_; }

 private:
  double next_time(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& e, double t, double t_start,
                   double t_end, int64_t index) const;
  ScriptNet head_;
  int64_t budget_;
  double spread_;
};

}  // namespace fewstep
