/// @file solvers/edm_churn.h
/// @brief EDM stochastic sampling: Euler / Heun with noise "churn" (Karras et al. 2022, Algorithm 2).
///
/// Before each step from t_i, with N the number of steps of the grid:
///   γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ̃_i ≤ S_tmax else 0,   σ̂ = σ̃_i (1 + γ_i),
///   x̂ = x_i + √(σ̂² − σ̃_i²) S_noise z,
/// then one Euler (`euler_churn`) or Heun (`heun_churn`) step of the probability-flow ODE from σ̂ to t_{i+1}
/// (the same updates in t as solvers/euler.h and solvers/heun.h). Karras et al. state it for VE (x, σ). For any
/// schedule the churn is applied in the equivalent VE variables y = x/α, σ̃ = σ/α = e^{−λ}: the time t̂ with
/// σ̃(t̂) = σ̂ is t(λ_i − log(1 + γ_i)), and x̂ = α(t̂) (x_i/α(t_i) + √(σ̂² − σ̃_i²) S_noise z), which maps a
/// sample of p_{t_i} to a sample of p_{t̂} (for S_noise = 1). S_tmin, S_tmax are therefore compared with σ̃
/// (= σ on VE/EDM). σ̂ is capped at σ̃(t_max) so that t̂ stays in the schedule's range (no churn at t_max).
/// Options: s_churn (default 80, Karras et al.'s ImageNet-64 setting), s_tmin (0), s_tmax (∞), s_noise (1).
/// With s_churn = 0 no noise is drawn and the steppers are exactly `euler` / `heun`. Churn needs the grid
/// length N (fixed grids only). Traits: the registry lists the defaults; an instance with s_churn = 0 reports
/// stochastic = false. `order` is that of the ODE update (churn injects O(1/N) noise per step).
#pragma once

#include <limits>
#include <utility>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// The churn parameters of Algorithm 2, validated from options.
struct ChurnParams {
  double s_churn = 80.0;
  double s_tmin = 0.0;
  double s_tmax = std::numeric_limits<double>::infinity();
  double s_noise = 1.0;
  static ChurnParams from_options(const Options& options, const char* solver);
};

/// Moves (x, s) to (x̂, t̂) as above; returns x and s unchanged (no draw) when γ = 0.
std::pair<at::Tensor, double> edm_churn(const NoiseSchedule& schedule, const at::Tensor& x, double s,
                                        const ChurnParams& params, const StepContext& ctx, const char* solver);

class EulerChurnStepper final : public Stepper {
 public:
  explicit EulerChurnStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  ChurnParams params_;
  StepperTraits traits_;
};

class HeunChurnStepper final : public Stepper {
 public:
  explicit HeunChurnStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  ChurnParams params_;
  StepperTraits traits_;
};

}  // namespace fewstep
