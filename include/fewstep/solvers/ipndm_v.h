/// @file solvers/ipndm_v.h
/// @brief iPNDM, variable-step form: Adams–Bashforth on ε̂ in ρ = σ/α with the weights of the actual,
/// non-uniform steps (Zhang & Chen 2022, arXiv 2204.13902, ρAB-DEIS; the iPNDM of solvers/ipndm.h with
/// exact interpolation weights). Options: max_order (1–4, default 4; declared order = max_order) and
/// weights:
///  - "exact" (default): the integral of the Lagrange interpolant through the last p evaluations in ρ;
///  - "official": the closed forms of the authors' variable-step sampler (zju-pi/diff-sampler,
///    ipndm_v_sampler), for cross-checks. They equal the exact weights for p ≤ 2 and on equal steps,
///    but for p ≥ 3 their auxiliary term is (1 − h_n/(3(h_n + h_{n−1})) · Q)/2 with
///    Q = h_n(h_n + h_{n−1})/(h_{n−1}(h_{n−1} + h_{n−2})), where the exact integral of the quadratic
///    interpolant needs (1 − h_n/(3(h_n + h_{n−1}))) · Q/2; on non-uniform steps they are then not
///    exact for ε̂ quadratic in ρ. For p = 4 they are not the Adams–Bashforth weights even on equal
///    steps (57/24, −65/24, 43/24, −11/24 instead of 55/24, −59/24, 37/24, −9/24: exact for
///    quadratics, not for cubics).
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
  bool official_weights_;
  StepperTraits traits_;
};

}  // namespace fewstep
