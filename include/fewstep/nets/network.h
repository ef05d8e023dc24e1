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
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "fewstep/core/device.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

/// Shared handle: the trainer, the EMA and a Denoiser can hold the same module.
using ScriptNet = std::shared_ptr<torch::jit::Module>;

/// Number of parameter elements of a module (recursive over submodules; buffers excluded).
int64_t parameter_count(const torch::jit::Module& module);

/// Extra files stored beside the code and weights of a TorchScript archive (name → content).
using ArchiveExtraFiles = std::map<std::string, std::string>;

/// The bytes of `module` as a TorchScript archive (what torch.jit.save writes), made in memory.
/// RuntimeError naming `path` (used in messages only) if the serialiser fails.
std::string serialize_network(const torch::jit::Module& module, const std::string& path,
                              const ArchiveExtraFiles& extra_files = {});

/// Writes `module` as a TorchScript archive, atomically (core/atomic_file.h): serialised in memory,
/// then written to a temporary sibling, fsynced and renamed, so a reader never sees a half-written
/// model and a full disk is an error naming `path` that leaves no temporary file. Returns the
/// SHA-256 (hex) of the bytes written.
std::string save_network(const torch::jit::Module& module, const std::string& path,
                         const ArchiveExtraFiles& extra_files = {});

/// Loads a TorchScript archive (torch::jit::load) in eval mode. The module stays on the device it
/// was saved from. ValueError naming `who` and the path if the file is missing, is not a loadable
/// archive or has no forward method.
ScriptNet load_network(const std::string& path, const char* who);

/// A TorchScript archive read from its bytes, with what came with it.
struct LoadedNetwork {
  ScriptNet module;            ///< eval mode
  std::string sha256;          ///< of the file's bytes (hex)
  ArchiveExtraFiles extra_files;  ///< the requested extra files ("" when absent)
};

/// Reads `path` once, hashes the bytes and loads the archive from them (no second read between
/// check and use). With `expected_sha256` non-empty, a file whose SHA-256 differs is refused
/// (ValueError naming `who`, the path and `recorded_in`, where the checksum came from) before the
/// archive is parsed. `extra_files` names the extra files to read. `require_forward`: refuse a
/// module without a forward method.
/// `placement` (core/device.h): the device the archive's tensors are mapped to as it is read (a file
/// saved from a GPU loads on a CPU-only machine) and the floating dtype its parameters and buffers are
/// converted to; unset fields keep what the file holds.
LoadedNetwork load_network_checked(const std::string& path, const char* who, const std::string& expected_sha256 = "",
                                   const std::string& recorded_in = "", const std::vector<std::string>& extra_files = {},
                                   bool require_forward = true, const Placement& placement = {});
/// The same from bytes already read (`path` is used in messages only).
LoadedNetwork load_network_bytes(const std::string& bytes, const std::string& path, const char* who,
                                 const std::vector<std::string>& extra_files = {}, bool require_forward = true,
                                 const Placement& placement = {});

/// SHA-256 over the records of a TorchScript archive (name and content, sorted by name), except
/// the extra files named in `skip_extra` and the archive's per-write serialisation id: a checksum
/// of the code, constants and weights that the archive can carry inside one of those extra files.
/// ValueError naming `path` if the bytes are not a readable archive.
std::string archive_records_sha256(const std::string& bytes, const std::string& path,
                                   const std::vector<std::string>& skip_extra);

/// The parameters of `module` (recursive) that require grad, in registration order: what a trainer
/// hands its optimiser.
std::vector<at::Tensor> trainable_parameters(const torch::jit::Module& module);

/// How copy_weights treats shapes: the same in both, or (ZeroPadded) the source's no larger along any
/// dimension, filling the leading block of the target's tensor whose rest becomes zero (a layer that
/// gained inputs, whose new weights start at zero).
enum class WeightShapes { Same, ZeroPadded };

/// Copies every parameter and buffer of `source` into the tensor of the same dotted name in `target`
/// (in place, no grad). `target` may have more tensors (they keep their values: e.g. a student with
/// an extra guidance input); ValueError naming the tensor if `source` has one `target` lacks or of
/// another shape (see WeightShapes).
void copy_weights(const torch::jit::Module& source, torch::jit::Module& target,
                  WeightShapes shapes = WeightShapes::Same);

/// module.forward(x, t[, y][, w]) → Tensor: y (class labels) and w (guidance weight) are passed only
/// when defined (y as None if only w is given). TypeError naming `who` if the result is not a tensor.
at::Tensor forward_network(const torch::jit::Module& module, const at::Tensor& x, const at::Tensor& t,
                           const at::Tensor& y, const at::Tensor& w, const char* who);

/// While alive, TorchScript's graph executor runs unoptimised. The profiling executor re-plans a
/// method after warm-up runs; unoptimised, every call runs the same eager kernels, so training step k
/// is the same computation in a fresh (resumed) process. Every trainer's forward/backward runs under one.
class ScopedUnoptimizedExecutor {
 public:
  ScopedUnoptimizedExecutor();
  ~ScopedUnoptimizedExecutor();
  ScopedUnoptimizedExecutor(const ScopedUnoptimizedExecutor&) = delete;
  ScopedUnoptimizedExecutor& operator=(const ScopedUnoptimizedExecutor&) = delete;

 private:
  bool previous_;
};

/// Runs fn with the global CPU generator (the one TorchScript dropout draws from) seeded with
/// `seed`, then restores the generator's state: equal seeds give equal dropout masks (two passes
/// that must share them, as in consistency training), and the caller's global RNG stream is left
/// as it was.
at::Tensor with_dropout_seed(uint64_t seed, const std::function<at::Tensor()>& fn);

}  // namespace fewstep
