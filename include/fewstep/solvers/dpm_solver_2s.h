/// @file solvers/dpm_solver_2s.h
/// @brief Singlestep DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927, Algorithm 1), noise prediction.
///
/// With h = λ_t − λ_s, s_1 = t_λ(λ_s + r_1 h) and ε̂_s = ε̂(x_s, s):
///   u   = (α_{s_1}/α_s) x_s − σ_{s_1} (e^{r_1 h} − 1) ε̂_s          (DPM-Solver-1 to s_1)
///   D   = ε̂(u, s_1) − ε̂_s
///   x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂_s − c D, with
///     variant "dpmsolver" (Alg. 1, default): c = σ_t (e^h − 1) / (2 r_1),
///     variant "taylor": c = σ_t ((e^h − 1)/h − 1) / r_1, the exact integral of the first-order
///       Taylor expansion of ε̂ in λ (the paper's derivation; the official code's 'taylor').
/// Both are second order; r_1 = 1/2 by default. Two evaluations per step. The DPM-Solver-1
/// and -2 updates are exposed for DPM-Solver-fast, which mixes orders.
#pragma once

#include <string>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// How a singlestep DPM-Solver combines its intermediate evaluations (see the file comment).
enum class DpmSolverVariant { DpmSolver, Taylor };
/// "dpmsolver" or "taylor"; ValueError naming `owner` otherwise.
DpmSolverVariant parse_dpm_solver_variant(const std::string& name, const std::string& owner);
std::string to_string(DpmSolverVariant variant);

/// The time of half log-SNR `lambda` inside [t, s], clamped against round-off of t(λ).
double intermediate_time(const NoiseSchedule& schedule, double lambda, double s, double t);

/// Result of one singlestep update: x at t and the data prediction of its last evaluation.
struct SinglestepUpdate {
  at::Tensor x;
  at::Tensor x0;
};

/// DPM-Solver-1 (= DDIM) in noise form: (α_t/α_s) x − σ_t (e^h − 1) ε̂_s.
at::Tensor dpm_solver_1_update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps_s, double s,
                               double t);
/// DPM-Solver-2 from s to t given the model output at (x, s); evaluates once more, at s_1.
SinglestepUpdate dpm_solver_2_update(ModelEvaluator& model, const at::Tensor& x, const DenoiserOutput& at_s, double s,
                                     double t, double r1, DpmSolverVariant variant);

class DpmSolver2SStepper final : public Stepper {
 public:
  explicit DpmSolver2SStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  DpmSolverVariant variant_;
  double r1_;
};

}  // namespace fewstep
