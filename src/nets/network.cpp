#include "fewstep/nets/network.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "fewstep/core/check.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/core/sha256.h"
#include "script_builder.h"

namespace fewstep {

int64_t parameter_count(const torch::jit::Module& module) { return nets_detail::count_parameters(module); }

std::string serialize_network(const torch::jit::Module& module, const std::string& path,
                              const ArchiveExtraFiles& extra_files) {
  // In memory: torch's file writer throws from its destructor when the disk fills up (which
  // terminates the process); a string stream cannot fail that way, and atomic_write_bytes turns
  // ENOSPC into an error naming the file.
  std::ostringstream out(std::ios::binary);
  std::string error;
  try {
    torch::jit::ExtraFilesMap extra(extra_files.begin(), extra_files.end());
    // Files hold CPU tensors, so a network trained on a GPU loads on any machine (loaders map it
    // to the device asked for).
    bool on_cpu = true;
    for (const at::Tensor& p : module.parameters()) on_cpu = on_cpu && p.device().is_cpu();
    for (const at::Tensor& b : module.buffers()) on_cpu = on_cpu && b.device().is_cpu();
    if (on_cpu) {
      module.save(out, extra);
    } else {
      torch::jit::Module copy = module.clone();
      copy.to(at::kCPU);
      copy.save(out, extra);
    }
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK(error.empty(), "cannot serialise the network for '", path, "': ", error);
  return std::move(out).str();
}

std::string save_network(const torch::jit::Module& module, const std::string& path,
                         const ArchiveExtraFiles& extra_files) {
  const std::string bytes = serialize_network(module, path, extra_files);
  atomic_write_bytes(path, bytes.data(), bytes.size());
  return sha256_hex(bytes);
}

std::vector<at::Tensor> trainable_parameters(const torch::jit::Module& module) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : module.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

void copy_weights(const torch::jit::Module& source, torch::jit::Module& target, WeightShapes shapes) {
  std::map<std::string, at::Tensor> dst;
  for (const auto& p : target.named_parameters(/*recurse=*/true)) dst[p.name] = p.value;
  for (const auto& b : target.named_buffers(/*recurse=*/true)) dst[b.name] = b.value;
  at::NoGradGuard no_grad;
  auto copy_one = [&dst, shapes](const std::string& name, const at::Tensor& value) {
    const auto it = dst.find(name);
    FEWSTEP_CHECK_VALUE(it != dst.end(), "copy_weights: the target network has no tensor '", name,
                        "' (different architecture)");
    at::Tensor out = it->second;
    bool fits = out.sizes() == value.sizes();
    if (shapes == WeightShapes::ZeroPadded && out.dim() == value.dim()) {
      fits = true;
      for (int64_t d = 0; d < value.dim(); ++d) fits = fits && value.size(d) <= out.size(d);
    }
    FEWSTEP_CHECK_VALUE(fits, "copy_weights: tensor '", name, "' has shape ", value.sizes(), " in the source and ",
                        out.sizes(), " in the target");
    if (out.sizes() == value.sizes()) {
      out.copy_(value);
      return;
    }
    at::Tensor block = out;
    for (int64_t d = 0; d < value.dim(); ++d) block = block.narrow(d, 0, value.size(d));
    out.zero_();
    block.copy_(value);
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

LoadedNetwork load_network_checked(const std::string& path, const char* who, const std::string& expected_sha256,
                                   const std::string& recorded_in, const std::vector<std::string>& extra_files,
                                   bool require_forward, const Placement& placement) {
  const std::string bytes = read_file(path, std::string(who) + ": path");
  const std::string sha256 = sha256_hex(bytes);
  FEWSTEP_CHECK_VALUE(expected_sha256.empty() || sha256 == expected_sha256, who, ": '", path,
                      "' is corrupted or was replaced: its SHA-256 is ", sha256, " but ", recorded_in,
                      " records ", expected_sha256, " (re-export the model, or restore the file)");
  LoadedNetwork out = load_network_bytes(bytes, path, who, extra_files, require_forward, placement);
  out.sha256 = sha256;
  return out;
}

LoadedNetwork load_network_bytes(const std::string& bytes, const std::string& path, const char* who,
                                 const std::vector<std::string>& extra_files, bool require_forward,
                                 const Placement& placement) {
  LoadedNetwork out;
  out.sha256 = sha256_hex(bytes);
  out.module = std::make_shared<torch::jit::Module>();
  torch::jit::ExtraFilesMap extra;
  for (const auto& name : extra_files) extra[name] = "";
  std::string error;
  try {
    // Tensors go to placement.device as they are read (map_location), else stay on the device they
    // were saved from; the caller passes x on that device.
    std::istringstream in(bytes, std::ios::binary);
    *out.module = torch::jit::load(in, placement.device, extra);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK_VALUE(error.empty(), who, ": path '", path, "' is not a TorchScript archive (torch.jit.save format): ", error);
  FEWSTEP_CHECK_VALUE(!require_forward || out.module->find_method("forward").has_value(), who, ": the module at path '",
                      path, "' has no forward method; expected forward(x, t) -> Tensor");
  out.module->eval();
  if (placement.dtype) out.module->to(*placement.dtype);  // floating parameters and buffers only
  out.extra_files.insert(extra.begin(), extra.end());
  return out;
}

ScriptNet load_network(const std::string& path, const char* who) { return load_network_checked(path, who).module; }

std::string archive_records_sha256(const std::string& bytes, const std::string& path,
                                   const std::vector<std::string>& skip_extra) {
  std::string error;
  Sha256 h;
  h.field("fewstep.torchscript_records.sha256.v1");
  try {
    std::istringstream in(bytes, std::ios::binary);
    caffe2::serialize::PyTorchStreamReader reader(&in);
    std::vector<std::string> names = reader.getAllRecords();
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      bool skip = name == ".data/serialization_id";
      for (const std::string& extra : skip_extra) skip = skip || name == "extra/" + extra;
      if (skip) continue;
      auto [data, size] = reader.getRecord(name);
      h.field(name);
      h.field(std::string(static_cast<const char*>(data.get()), size));
    }
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK_VALUE(error.empty(), "path '", path, "' is not a readable TorchScript archive: ", error);
  return h.hex_digest();
}

}  // namespace fewstep
