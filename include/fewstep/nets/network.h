/// @file nets/network.h
/// @brief The handle of fewstep's reference networks: a TorchScript module built in C++.
///
/// LibTorch cannot script C++ `torch::nn` modules, so each reference network is a
/// `torch::jit::Module` whose parameters are registered from C++ (initialised with an explicit
/// generator) and whose `forward(x, t)` is compiled from TorchScript source written with
/// functional ops (torch.conv2d, torch.group_norm, torch.linear, ...). One definition then
/// serves everything: C++ training through `module.parameters()` (autograd runs through the
/// interpreter), `module.save(path)` writes a real TorchScript archive that Python's
/// `torch.jit.load` and `fewstep::Denoiser::torchscript` load unchanged, and the forward code
/// is readable in Python as `module.code`.
///
/// Time input: t as a scalar or [B] tensor (continuous t by default; see TimeInput in
/// models/denoiser.h), broadcast to the batch and cast to x's dtype inside the network.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

/// Shared handle: the trainer, the EMA and a Denoiser can hold the same module.
using ScriptNet = std::shared_ptr<torch::jit::Module>;

/// Number of parameter elements of a module (recursive over submodules; buffers excluded).
int64_t parameter_count(const torch::jit::Module& module);

/// Writes `module` as a TorchScript archive, atomically (temporary file in the same directory,
/// fsync, rename): a reader never sees a half-written model.
void save_network(const torch::jit::Module& module, const std::string& path);

}  // namespace fewstep
