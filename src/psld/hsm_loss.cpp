#include "fewstep/psld/hsm_loss.h"

#include "fewstep/core/check.h"

namespace fewstep {

HsmInputs hsm_inputs(const PsldProcess& process, const at::Tensor& x0, at::Generator generator) {
  FEWSTEP_CHECK_VALUE(x0.dim() >= 2 && x0.size(0) > 0, "hsm_inputs: x0 must be [B, C, ...] with B > 0, got shape ",
                      x0.sizes());
  const int64_t n = x0.size(0);
  auto dbl = at::TensorOptions().dtype(at::kDouble);
  auto t = at::rand({n}, generator, dbl) * (process.t_max() - process.t_min()) + process.t_min();
  auto shape = x0.sizes().vec();
  shape[1] *= 2;
  auto eps = at::randn(shape, generator, dbl).to(x0.options());
  auto z = process.perturb(x0, eps, t);
  return HsmInputs{z, t.to(x0.options()), eps};
}

at::Tensor hsm_loss(const at::Tensor& eps_pred, const HsmInputs& inputs) {
  FEWSTEP_CHECK_VALUE(eps_pred.sizes() == inputs.eps.sizes(), "hsm_loss: eps_pred has shape ", eps_pred.sizes(),
                      ", expected the target's ", inputs.eps.sizes());
  return (eps_pred - inputs.eps).pow(2).mean();
}

}  // namespace fewstep
