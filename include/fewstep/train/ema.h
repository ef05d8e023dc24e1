/// @file train/ema.h
/// @brief Exponential moving average of a network's weights, itself a TorchScript module.
///
/// After each optimiser step, θ_ema ← d·θ_ema + (1 − d)·θ for every parameter (d = decay;
/// Polyak averaging as used by DDPM and most diffusion trainers); buffers are copied. The
/// average lives in a deep copy of the network, so it is evaluated, wrapped in a Denoiser or
/// saved as a TorchScript archive exactly like the network. Its parameters do not require grad.
#pragma once

#include <string>
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/train/checkpoint.h"

namespace fewstep {

/// One averaging step over tensor lists (the networks' parameters and buffers in matching order):
/// average ← decay·average + (1 − decay)·current for the parameters, buffers copied. What Ema::update does
/// for a TorchScript module, and what the Python training loop does for an nn.Module. ValueError naming
/// the position for lists of other lengths or shapes.
void ema_update(const std::vector<at::Tensor>& average, const std::vector<at::Tensor>& current,
                const std::vector<at::Tensor>& average_buffers, const std::vector<at::Tensor>& buffers, double decay);

class Ema {
 public:
  /// Starts from a deep copy of `source`. decay ∈ [0, 1] (ValueError otherwise).
  Ema(const torch::jit::Module& source, double decay);

  /// One averaging step towards `source` (same architecture as the copy).
  void update(const torch::jit::Module& source);
  /// Resets the average to `source`'s current weights.
  void reset(const torch::jit::Module& source);

  double decay() const { return decay_; }
  const ScriptNet& module() const { return module_; }

  void save(Checkpoint& checkpoint, const std::string& prefix) const;
  void load(const Checkpoint& checkpoint, const std::string& prefix);

 private:
  ScriptNet module_;
  double decay_;
};

}  // namespace fewstep
