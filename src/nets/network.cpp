#include "fewstep/nets/network.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>

#include <exception>
#include <fstream>
#include <map>
#include <mutex>

#include "fewstep/core/check.h"
#include "fewstep/core/atomic_file.h"
#include "script_builder.h"

namespace fewstep {

int64_t parameter_count(const torch::jit::Module& module) { return nets_detail::count_parameters(module); }

void save_network(const torch::jit::Module& module, const std::string& path) {
  atomic_write(path, [&module](const std::string& temp_path) { module.save(temp_path); });
}

std::vector<at::Tensor> trainable_parameters(const torch::jit::Module& module) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : module.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

void copy_weights(const torch::jit::Module& source, torch::jit::Module& target) {
  std::map<std::string, at::Tensor> dst;
  for (const auto& p : target.named_parameters(/*recurse=*/true)) dst[p.name] = p.value;
  for (const auto& b : target.named_buffers(/*recurse=*/true)) dst[b.name] = b.value;
  at::NoGradGuard no_grad;
  auto copy_one = [&dst](const std::string& name, const at::Tensor& value) {
    const auto it = dst.find(name);
    FEWSTEP_CHECK_VALUE(it != dst.end(), "copy_weights: the target network has no tensor '", name,
                        "' (different architecture)");
    FEWSTEP_CHECK_VALUE(it->second.sizes() == value.sizes(), "copy_weights: tensor '", name, "' has shape ",
                        value.sizes(), " in the source and ", it->second.sizes(), " in the target");
    at::Tensor(it->second).copy_(value);
  };
  for (const auto& p : source.named_parameters(/*recurse=*/true)) copy_one(p.name, p.value);
  for (const auto& b : source.named_buffers(/*recurse=*/true)) copy_one(b.name, b.value);
}

at::Tensor forward_network(const torch::jit::Module& module, const at::Tensor& x, const at::Tensor& t,
                           const at::Tensor& y, const at::Tensor& w, const char* who) {
  std::vector<c10::IValue> args = {x, t};
  if (y.defined() || w.defined()) args.emplace_back(y.defined() ? c10::IValue(y) : c10::IValue());
  if (w.defined()) args.emplace_back(w);
  const c10::IValue out = module.get_method("forward")(std::move(args));
  FEWSTEP_CHECK_TYPE(out.isTensor(), who, ": forward(x, t", y.defined() || w.defined() ? ", y" : "",
                     w.defined() ? ", w" : "", ") returned ", out.tagKind(), ", expected a Tensor");
  return out.toTensor();
}

ScopedUnoptimizedExecutor::ScopedUnoptimizedExecutor() : previous_(torch::jit::getGraphExecutorOptimize()) {
  torch::jit::setGraphExecutorOptimize(false);
}
ScopedUnoptimizedExecutor::~ScopedUnoptimizedExecutor() { torch::jit::setGraphExecutorOptimize(previous_); }

at::Tensor with_dropout_seed(uint64_t seed, const std::function<at::Tensor()>& fn) {
  at::Generator global = at::detail::getDefaultCPUGenerator();
  at::Tensor saved;
  {
    std::lock_guard<std::mutex> lock(global.mutex());
    saved = global.get_state();
    global.set_current_seed(seed);
  }
  struct Restore {  // also when fn throws
    at::Generator& gen;
    const at::Tensor& state;
    ~Restore() {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
  } restore{global, saved};
  return fn();
}

ScriptNet load_network(const std::string& path, const char* who) {
  {
    std::ifstream probe(path, std::ios::binary);
    FEWSTEP_CHECK_VALUE(probe.good(), who, ": cannot open path '", path,
                        "' (missing or unreadable file); expected a TorchScript archive saved with torch.jit.save");
  }
  auto module = std::make_shared<torch::jit::Module>();
  std::string error;
  try {
    // Parameters stay on the device they were saved from; the caller passes x on that device
    // (or calls torch.jit.load(..., map_location=...) + save beforehand).
    *module = torch::jit::load(path);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK_VALUE(error.empty(), who, ": path '", path, "' is not a loadable TorchScript archive: ", error);
  FEWSTEP_CHECK_VALUE(module->find_method("forward").has_value(), who, ": the module at path '", path,
                      "' has no forward method; expected forward(x, t) -> Tensor");
  module->eval();
  return module;
}

}  // namespace fewstep
