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

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class ConsistencyStepper final : public Stepper {
 public:
  explicit ConsistencyStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
};

}  // namespace fewstep
