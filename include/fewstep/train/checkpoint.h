/// @file train/checkpoint.h
/// @brief Trainers' checkpoints: a TensorArchive (core/tensor_archive.h) holding every part of a
/// trainer's state, and the helpers that store a TorchScript module's weights in one.
#pragma once

#include <string>

#include "fewstep/core/tensor_archive.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

/// A trainer's state dict on disk (train/trainer.h).
using Checkpoint = TensorArchive;

/// Stores every parameter and buffer of `module` (recursively) under "<prefix>/<dotted name>".
void save_module_state(Checkpoint& checkpoint, const std::string& prefix, const torch::jit::Module& module);
/// Copies them back in place; ValueError naming the tensor if one is missing or has another shape,
/// or if the checkpoint holds tensors the module does not have (a different architecture).
void load_module_state(const Checkpoint& checkpoint, const std::string& prefix, torch::jit::Module& module);

}  // namespace fewstep
