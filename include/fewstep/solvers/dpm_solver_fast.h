/// @file solvers/dpm_solver_fast.h
/// @brief DPM-Solver-fast (Lu et al. 2022, arXiv 2206.00927, the step-size schedule section): singlestep
/// DPM-Solver-3 steps, finished by lower orders so that exactly N evaluations are spent.
///
/// For a budget of N evaluations: K = ⌊N/3⌋ + 1 steps, uniform in λ, with orders
///   N mod 3 = 0: [3, …, 3, 2, 1]   N mod 3 = 1: [3, …, 3, 1]   N mod 3 = 2: [3, …, 3, 2]
/// (K − 2, K − 1 and K − 1 third-order steps), using the DPM-Solver-1/2/3 updates of
/// dpm_solver_2s.h / dpm_solver_3s.h with the paper's r's (1/2; 1/3, 2/3).
///
/// A request with steps = N (sample/request.h: fs.sample, fewstep sample --steps, the C++ `sample`)
/// reads N as the budget: the stepper's `plan` returns the K-step grid and the stepper {nfe: N},
/// whose option fixes the orders. For
/// spacing "logsnr" the grid is K steps uniform in λ (the paper); for other spacings it is the
/// N-step grid of that spacing sampled at the step boundaries 0, o_1, o_1 + o_2, … (as the
/// official code does). Options:
///  - variant: "dpmsolver" (default) | "taylor", as for dpm_solver_2s/3s.
///  - nfe: the budget N, whose plan the grid must have (K steps); 0 (default) means "no
///    budget": on an explicit K-step grid the orders are then [3, …, 3, 2] (the plan of
///    N = 3K − 1), which keeps the method third order as the grid is refined. A plan ending
///    with a first-order step (N mod 3 ≠ 2) has a global error O(h²) asymptotically; it is
///    meant for the few-step regime, as in the paper.
#pragma once

#include <vector>

#include "fewstep/solvers/dpm_solver_2s.h"

namespace fewstep {

/// The order of each step of DPM-Solver-fast for a budget of `nfe` >= 1 evaluations.
std::vector<int> dpm_solver_fast_orders(int64_t nfe);

class DpmSolverFastStepper final : public Stepper {
 public:
  explicit DpmSolverFastStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;
  /// `steps` is the budget N; see the file comment.
  std::optional<StepPlan> plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                               std::optional<double> t_start, std::optional<double> t_end) const override;
  int64_t nfe_for_steps(int64_t steps) const override { return steps; }

 private:
  /// Order of step `index` of a run of `num_steps` steps (−1: unknown length, order 3).
  int order_of(int64_t index, int64_t num_steps) const;

  DpmSolverVariant variant_;
  int64_t nfe_;
};

}  // namespace fewstep
