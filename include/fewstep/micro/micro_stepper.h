/// @file micro/micro_stepper.h
/// @brief The solver `micro`: an exponential-integrator step whose nonlinear part is given by a
///        function, normally g_ψ of a micro-distilled sampler (micro/exponential_step.h).
///
/// From s to t: one teacher evaluation ε̂ = ε̂(x_s, s), then x_t = (α_t/α_s) x_s + r(x_s, ε̂, s, t)
/// (r may reuse the previous steps' evaluations, kept in SolverState::history).
/// The registry builds it from options: `path` = a micro sampler file (micro/micro_sampler.h). With a
/// file, the stepper is that sampler: r = g_ψ (DEIS-2 in λ for a step-size-only sampler), the first
/// step of every run checks that the model is the sampler's teacher, and its `plan` reads a request's
/// `steps` as the sampler's budget of teacher evaluations — with a step-size head, h_φ places the steps
/// (LearnedStepController) — so fs.sample(teacher, x_T, solver="micro", path=file, steps=N) and
/// MicroSampler::sample(teacher, x_T, N) are one sampler. Without `path`, r = c ε̂ (g_ψ untrained),
/// which is DDIM, on the request's grid. Any other r (an exact oracle, a Python function) comes in
/// through the NonlinearTerm constructor. One evaluation per step; declared order 1 (the learned term
/// has no a-priori order; without a file it is DDIM).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class MicroSampler;

/// r(x_s, ε̂_s, s, t): the nonlinear part of the step from s to t, shape of x. `history` holds the
/// run's previous evaluations (time and ε̂; most recent last, at most two, empty at the first step),
/// which a term may reuse.
using NonlinearTerm = std::function<at::Tensor(const NoiseSchedule& schedule, const at::Tensor& x,
                                               const at::Tensor& eps, double s, double t,
                                               const std::vector<HistoryEntry>& history)>;

/// g_ψ of `sampler` as a NonlinearTerm (DDIM's c ε̂ if the sampler has no residual head).
NonlinearTerm learned_nonlinear_term(std::shared_ptr<const MicroSampler> sampler);

class MicroStepper final : public Stepper {
 public:
  /// Options: path (string, optional).
  explicit MicroStepper(const Options& options = {});
  /// The stepper of a micro-distilled sampler (see the file comment).
  explicit MicroStepper(std::shared_ptr<const MicroSampler> sampler);
  /// A stepper over any nonlinear term; `sampler` (may be null) is checked against the teacher.
  MicroStepper(NonlinearTerm term, std::shared_ptr<const MicroSampler> sampler = nullptr);
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
  /// With a sampler: its plan for a budget of `steps` teacher evaluations (MicroSampler::plan).
  std::optional<StepPlan> plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                               std::optional<double> t_start, std::optional<double> t_end) const override;

 private:
  NonlinearTerm term_;                      ///< null for a step-size-only sampler (then `inner_` steps)
  std::shared_ptr<const Stepper> inner_;    ///< DEIS-2 in λ, the step of a step-size-only sampler
  std::shared_ptr<const MicroSampler> sampler_;
};

}  // namespace fewstep
