#include "fewstep/solvers/ipndm_v.h"

#include "fewstep/core/check.h"

namespace fewstep {

IpndmVStepper::IpndmVStepper(const Options& options) {
  const std::string owner = "solver 'ipndm_v'";
  options.check_known({"max_order", "weights"}, owner);
  max_order_ = ipndm_max_order(options, owner);
  const std::string weights = options.get_string("weights", "exact");
  FEWSTEP_CHECK_VALUE(weights == "exact" || weights == "official", owner, ": weights must be 'exact' or 'official', got '",
                      weights, "'");
  official_weights_ = weights == "official";
  traits_ = StepperTraits::named("ipndm_v",
      "iPNDM, variable-step: Adams-Bashforth on eps in rho = sigma/alpha with the weights of the actual steps, "
      "orders up to 4 (Zhang & Chen 2022, arXiv 2204.13902)")
      .with_order(static_cast<int>(max_order_))
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options({"max_order", "weights"});
}

StepResult IpndmVStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                               const StepContext& /*ctx*/) const {
  return ipndm_step(model, x, s, t, std::move(state), max_order_,
                    official_weights_ ? IpndmWeights::Official : IpndmWeights::Exact);
}

}  // namespace fewstep
