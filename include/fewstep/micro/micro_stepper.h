/// @file micro/micro_stepper.h
/// @brief The solver `micro`: an exponential-integrator step whose nonlinear part is given by a
///        function, normally g_ψ of a micro-distilled sampler (micro/exponential_step.h).
///
/// From s to t: one teacher evaluation ε̂ = ε̂(x_s, s), then x_t = (α_t/α_s) x_s + r(x_s, ε̂, s, t)
/// (r may reuse the previous step's evaluation, kept in SolverState::history).
/// The registry builds it from options: `path` = a micro sampler file (micro/micro_sampler.h): r = g_ψ,
/// and the first step of every run checks that the model is the sampler's teacher; without `path`,
/// r = c ε̂ (g_ψ untrained), which is DDIM. Any other r (an exact oracle, a Python function) comes in
/// through the second constructor. One evaluation per step; declared order 1 (the learned term has no
/// a-priori order; without a file it is DDIM).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class MicroSampler;

/// r(x_s, ε̂_s, s, t): the nonlinear part of the step from s to t, shape of x. `previous` is the
/// run's previous evaluation (its time and ε̂; nullptr at the first step), which a term may reuse.
using NonlinearTerm = std::function<at::Tensor(const NoiseSchedule& schedule, const at::Tensor& x,
                                               const at::Tensor& eps, double s, double t,
                                               const HistoryEntry* previous)>;

/// g_ψ of `sampler` as a NonlinearTerm (DDIM's c ε̂ if the sampler has no residual head).
NonlinearTerm learned_nonlinear_term(std::shared_ptr<const MicroSampler> sampler);

class MicroStepper final : public Stepper {
 public:
  /// Options: path (string, optional).
  explicit MicroStepper(const Options& options = {});
  /// A stepper over any nonlinear term; `sampler` (may be null) is checked against the teacher.
  MicroStepper(NonlinearTerm term, std::shared_ptr<const MicroSampler> sampler = nullptr);
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  NonlinearTerm term_;
  std::shared_ptr<const MicroSampler> sampler_;
};

}  // namespace fewstep
