#include "fewstep/train/checkpoint.h"

#include <torch/script.h>

#include <set>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

std::string where(const std::string& source) { return source.empty() ? "checkpoint" : "checkpoint '" + source + "'"; }

}  // namespace

void save_module_state(Checkpoint& checkpoint, const std::string& prefix, const torch::jit::Module& module) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) checkpoint.set_tensor(prefix + "/" + p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) checkpoint.set_tensor(prefix + "/" + b.name, b.value);
}

void load_module_state(const Checkpoint& checkpoint, const std::string& prefix, torch::jit::Module& module) {
  std::set<std::string> expected;
  auto restore = [&](const std::string& name, const at::Tensor& target) {
    const std::string key = prefix + "/" + name;
    expected.insert(key);
    FEWSTEP_CHECK_VALUE(checkpoint.contains(key), where(checkpoint.source()), " has no tensor '", key,
                        "': it was written for a different network");
    const at::Tensor& value = checkpoint.tensor(key);
    FEWSTEP_CHECK_VALUE(value.sizes() == target.sizes(), where(checkpoint.source()), " tensor '", key, "' has shape ",
                        value.sizes(), ", the module expects ", target.sizes());
    at::NoGradGuard no_grad;
    const_cast<at::Tensor&>(target).copy_(value);
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) restore(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) restore(b.name, b.value);
  for (const std::string& key : checkpoint.tensor_keys(prefix + "/")) {
    FEWSTEP_CHECK_VALUE(expected.count(key) > 0, where(checkpoint.source()), " holds tensor '", key,
                        "' that the module does not have: it was written for a different network");
  }
}

}  // namespace fewstep
