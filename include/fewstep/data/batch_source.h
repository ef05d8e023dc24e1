/// @file data/batch_source.h
/// @brief The data interface trainers consume: batches on demand plus a checkpointable position.
///
/// Trainers never see where data comes from (Fashion-MNIST, a Gaussian mixture, a user's
/// tensors); they ask for the next batch and, for exact resume, store the source's state in
/// their checkpoint. A source's state must be the *whole* of what decides its future batches
/// (a position, a generator state), so restoring it replays the same batches bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace fewstep {

/// One training batch: data x [B, ...] and, when the source has them, integer labels [B].
struct Batch {
  at::Tensor x;
  at::Tensor labels;  // undefined when the source has no labels
};

class BatchSource {
 public:
  /// Named tensors (int64 positions, uint8 generator states, ...), stored verbatim in checkpoints.
  using State = std::map<std::string, at::Tensor>;

  virtual ~BatchSource() = default;
  /// The next batch; advances the position.
  virtual Batch next() = 0;
  /// Everything that decides the batches to come.
  virtual State state() const = 0;
  /// Restores a state returned by state() of an equally configured source (ValueError otherwise).
  virtual void load_state(const State& state) = 0;
  /// One line for messages and progress output, e.g. "ShuffledBatches(n=60000, batch=128, seed=0)".
  virtual std::string describe() const = 0;
};

}  // namespace fewstep
