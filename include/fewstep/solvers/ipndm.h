/// @file solvers/ipndm.h
/// @brief iPNDM: improved pseudo numerical method (Zhang & Chen 2022, arXiv 2204.13902, §5 and
/// App. on iPNDM; after PNDM, Liu et al. 2022, arXiv 2202.09778): explicit Adams–Bashforth on ε̂ in
/// the time variable ρ = σ/α = e^{−λ}, with lower orders during warm-up instead of PNDM's Runge–Kutta
/// start.
///
/// With y = x/α the probability-flow ODE is dy/dρ = ε̂(x, t) (EDM's dx/dσ = (x − D)/σ for α = 1,
/// Karras et al. 2022, arXiv 2206.00364, eq. 4). From s to t, with ε̂_j the predictions at
/// s = s_0 > s_1 > … (most recent first) and p = min(max_order, steps taken + 1):
///   y_t = y_s + (ρ_t − ρ_s) Σ_{j<p} b_j ε̂_j,  i.e.  x_t = (α_t/α_s) x_s + α_t (ρ_t − ρ_s) Σ_j b_j ε̂_j,
/// with ρ_t − ρ_s = e^{−λ_s} (e^{−h} − 1), h = λ_t − λ_s. p = 1 is DDIM.
///  - `ipndm`: the fixed Adams–Bashforth weights of equal steps, b = (1), (3, −1)/2, (23, −16, 5)/12,
///    (55, −59, 37, −9)/24, used on any grid as the iPNDM sampler does. On a grid that is not uniform
///    in ρ their error per step is O(h · Δh) with Δh = O(h²) on a smooth grid: second order.
///  - `ipndm_v` (solvers/ipndm_v.h): the variable-step form, b_j = the integral over [ρ_t, ρ_s] of the
///    Lagrange basis polynomial of node ρ_{s_j}, divided by ρ_t − ρ_s (exact for ε̂ polynomial of
///    degree < p in ρ, on any grid); the weights are `deis_coefficients` with variable ρ
///    (solvers/deis.h: ρAB-DEIS), extended to 4 nodes.
/// The single first-order (Euler) warm-up step costs O(h²) globally, but at t ≈ t_max the flow is
/// nearly linear in ρ and that term is small in practice. Option: max_order (1–4, default 4);
/// declared order = max_order for `ipndm_v`, min(max_order, 2) for `ipndm`.
#pragma once

#include <vector>

#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// The fixed Adams–Bashforth weights b_j of order p (1–4), most recent evaluation first.
const std::vector<double>& adams_bashforth_weights(int64_t order);

/// How an iPNDM step weighs its evaluations.
enum class IpndmWeights { Fixed, Exact, Official };

/// One iPNDM step (every form): evaluates at (x, s), extrapolates with up to `max_order` evaluations.
StepResult ipndm_step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                      int64_t max_order, IpndmWeights weights);

/// Reads and checks the max_order option of `owner`.
int64_t ipndm_max_order(const Options& options, const std::string& owner);

class IpndmStepper final : public Stepper {
 public:
  explicit IpndmStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  int64_t max_order_;
  StepperTraits traits_;
};

}  // namespace fewstep
