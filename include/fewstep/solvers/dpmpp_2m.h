/// @file solvers/dpmpp_2m.h
/// @brief DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2), non-uniform steps.
///
/// With h_i = λ_{t_i} − λ_{t_{i−1}}, r_i = h_{i−1}/h_i and D = (1 + 1/(2 r_i)) x̂_{i−1} − 1/(2 r_i) x̂_{i−2}:
///   x_{t_i} = (σ_{t_i}/σ_{t_{i−1}}) x_{t_{i−1}} − α_{t_i} (e^{−h_i} − 1) D.
/// The first step is DDIM (no history yet). Options:
///  - lower_order_final (default true): on grids with fewer than `lower_order_final_steps`
///    (default 10) steps, the last step is first order, as the official implementation does;
///    it stabilises very few-step sampling.
#pragma once

#include "fewstep/solvers/lower_order_final.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

class DpmSolverPP2MStepper final : public Stepper {
 public:
  explicit DpmSolverPP2MStepper(const Options& options = {});
  const StepperTraits& traits() const override;
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  LowerOrderFinal lower_order_final_;
};

}  // namespace fewstep
