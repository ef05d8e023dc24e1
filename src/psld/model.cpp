#include "fewstep/psld/model.h"

#include <c10/core/InferenceMode.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/psld/mixture.h"

namespace fewstep {

PsldModel::PsldModel(ScoreFn score, PsldProcess process, std::string description)
    : score_(std::move(score)), process_(std::move(process)), description_(std::move(description)) {}

PsldModel PsldModel::exact(std::shared_ptr<const PsldMixture> mixture) {
  FEWSTEP_CHECK_VALUE(mixture != nullptr, "PsldModel.exact: mixture must not be null");
  PsldProcess process = mixture->process();
  return PsldModel([mixture](const at::Tensor& z, double t) { return mixture->score(z, t); }, process,
                   "exact PSLD mixture (K=" + std::to_string(mixture->data().components()) +
                       ", D=" + std::to_string(mixture->dim()) + ")");
}

PsldModel PsldModel::eps_network(EpsNetwork network, PsldProcess process, double time_scale, std::string description) {
  FEWSTEP_CHECK_VALUE(static_cast<bool>(network), "PsldModel.eps_network: network must be callable");
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale > 0, "PsldModel.eps_network: time_scale must be positive, got ",
                      time_scale);
  auto fn = [network, process, time_scale](const at::Tensor& z, double t) {
    auto tt = at::full({z.size(0)}, t * time_scale, z.options());
    auto eps = network(z, tt);
    FEWSTEP_CHECK_VALUE(eps.sizes() == z.sizes(), "PsldModel.eps_network: the network returned shape ", eps.sizes(),
                        " for input ", z.sizes(), "; expected ε̂ of the state's shape");
    return process.score_from_eps(eps, t);
  };
  return PsldModel(fn, process, std::move(description));
}

PsldModel PsldModel::script(ScriptNet module, PsldProcess process, double time_scale) {
  FEWSTEP_CHECK_VALUE(module != nullptr, "PsldModel.script: module must not be null");
  auto net = [module](const at::Tensor& z, const at::Tensor& t) {
    c10::InferenceMode guard;
    return forward_network(*module, z, t, at::Tensor(), at::Tensor(), "PsldModel.script");
  };
  return eps_network(net, std::move(process), time_scale, "TorchScript eps network");
}

PsldModel PsldModel::torchscript(const std::string& path, PsldProcess process, double time_scale) {
  auto module = load_network(path, "PsldModel.torchscript");
  auto model = script(module, std::move(process), time_scale);
  model.description_ = "torchscript='" + path + "' (eps)";
  return model;
}

PsldModel PsldModel::direct(ScoreFn score, PsldProcess process, std::string description) {
  FEWSTEP_CHECK_VALUE(static_cast<bool>(score), "PsldModel.direct: score must be callable");
  return PsldModel(std::move(score), std::move(process), std::move(description));
}

}  // namespace fewstep
