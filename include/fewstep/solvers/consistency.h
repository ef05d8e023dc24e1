/// @file solvers/consistency.h
/// @brief Multistep consistency sampling (Song et al. 2023, Algorithm 1), as the solver `consistency`.
///
/// On a grid τ_0 = T > τ_1 > ... > τ_N = ε (ε: the consistency function's boundary, normally the
/// schedule's t_min), step n evaluates the model once at (x, τ_n) and takes its data prediction
/// x̂ = f(x, τ_n) (for a consistency model f itself; for any other denoiser its x̂_0). Except at the
/// last step, it re-noises x̂ to the next time with fresh noise z ~ N(0, I) from the driver's generator:
///   x_{τ_{n+1}} = (α_{n+1}/α_ε) x̂ + √(σ_{n+1}² − (α_{n+1}/α_ε)² σ_ε²) z,
/// i.e. x̂ is read as a sample at ε (a consistency model's output lives there) and moved forward by
/// the forward process from ε to τ_{n+1}. On VE (α = 1, σ = t) this is the paper's
/// x̂ + √(τ_{n+1}² − ε²) z. The last step returns x̂ itself. One evaluation per step: one step is
/// one-step generation, more steps trade evaluations for quality; the intermediate times are the
/// grid's (any explicit grid, e.g. the paper's hand-picked ones).
#pragma once

#include <optional>
#include <vector>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// The noise level σ̃ = σ/α where a consistency sampler starts by default: EDM's σ_max (Karras et
/// al. 2022, arXiv 2206.00364, §5), the top of the range ECT (arXiv 2406.14548) and sCM
/// (arXiv 2410.11081) train and sample on. Their lognormal draw of σ̃ (P_mean −1.1, P_std 2) puts
/// 0.3% of its mass above 80, so a schedule that reaches higher (VP linear: σ̃(t = 1) ≈ 152) has its
/// top barely trained; docs/distillation.md ("Where a consistency sampler starts") measures it.
constexpr double kConsistencyStartSigma = 80.0;

/// A consistency model's sampling grid: the time of `start_sigma` (clamped to the schedule's
/// range, so a start above σ̃(t_max) is t_max; nullopt: t_max), then the times of the
/// `intermediate_sigmas` (where multistep sampling re-noises; one per extra step, strictly
/// decreasing and below the start), then `t_end` (default t_min: the consistency function's
/// boundary ε). steps = intermediate_sigmas.size() + 1. ValueError names a level that is not
/// positive and finite, out of order, or outside the schedule's range.
std::vector<double> consistency_timesteps(const NoiseSchedule& schedule, std::optional<double> start_sigma,
                                          const std::vector<double>& intermediate_sigmas = {},
                                          std::optional<double> t_end = std::nullopt);

class ConsistencyStepper final : public Stepper {
 public:
  explicit ConsistencyStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
