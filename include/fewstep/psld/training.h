/// @file psld/training.h
/// @brief A small PSLD trainer: HSM loss (psld/hsm_loss.h), AdamW with warm-up + cosine decay,
/// gradient clipping and an EMA, over any BatchSource. Used for the shipped 16-D mixture model
/// and by the tests; the network is any TorchScript module forward(z, t) → ε̂ (e.g. nets/mlp.h
/// with dim = 2D).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/psld/process.h"
#include "fewstep/train/batch_source.h"

namespace fewstep {

struct PsldTrainOptions {
  int64_t steps = 3000;
  double lr = 1e-3;
  int64_t warmup = 200;
  double min_lr = 0.0;
  double ema = 0.999;
  double grad_clip = 1.0;
  uint64_t seed = 0;  ///< generator of t and ε
  /// ValueError naming the field.
  void validate() const;
};

struct PsldTrainResult {
  std::vector<double> losses;  ///< one per step
  ScriptNet ema;               ///< the EMA network (what gets shipped)
  double seconds = 0;
};

/// Trains `network` in place. `on_step(step, loss)` is called after every step when set.
PsldTrainResult train_psld(const ScriptNet& network, BatchSource& data, const PsldProcess& process,
                           const PsldTrainOptions& options,
                           const std::function<void(int64_t, double)>& on_step = {});

}  // namespace fewstep
