/// @file solvers/ipndm_v.h
/// @brief iPNDM, variable-step form: Adams–Bashforth on ε̂ in ρ = σ/α with the weights of the actual,
/// non-uniform steps (Zhang & Chen 2022, arXiv 2204.13902, ρAB-DEIS; the iPNDM of solvers/ipndm.h with
/// exact interpolation weights). Option: max_order (1–4, default 4); declared order = max_order.
#pragma once

#include "fewstep/solvers/ipndm.h"

namespace fewstep {

class IpndmVStepper final : public Stepper {
 public:
  explicit IpndmVStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  int64_t max_order_;
  StepperTraits traits_;
};

}  // namespace fewstep
