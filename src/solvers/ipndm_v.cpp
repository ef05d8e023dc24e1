#include "fewstep/solvers/ipndm_v.h"

namespace fewstep {

IpndmVStepper::IpndmVStepper(const Options& options) : max_order_(ipndm_max_order(options, "solver 'ipndm_v'")) {
  traits_ = StepperTraits::named("ipndm_v",
      "iPNDM, variable-step: Adams-Bashforth on eps in rho = sigma/alpha with the weights of the actual steps, "
      "orders up to 4 (Zhang & Chen 2022, arXiv 2204.13902)")
      .with_order(static_cast<int>(max_order_))
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options({"max_order"});
}

StepResult IpndmVStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                               const StepContext& /*ctx*/) const {
  return ipndm_step(model, x, s, t, std::move(state), max_order_, true);
}

}  // namespace fewstep
