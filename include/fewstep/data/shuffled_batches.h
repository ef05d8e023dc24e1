/// @file data/shuffled_batches.h
/// @brief Mini-batches of an in-memory data set, reshuffled each epoch, with a two-integer state.
///
/// Epoch e's order is randperm(N) drawn from a generator seeded with a hash of (seed, e), so the
/// position (epoch, batch index) is the whole state: a resumed run replays the same batches
/// without storing a permutation or a generator. The last incomplete batch of an epoch is
/// dropped (every batch has exactly `batch_size` rows).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "fewstep/data/batch_source.h"

namespace fewstep {

class ShuffledBatches final : public BatchSource {
 public:
  /// x [N, ...] and optional labels [N] (undefined: none). shuffle = false keeps the data order.
  ShuffledBatches(at::Tensor x, at::Tensor labels, int64_t batch_size, uint64_t seed, bool shuffle = true);

  Batch next() override;
  State state() const override;  // {"position": int64 [epoch, batch]}
  void load_state(const State& state) override;
  std::string describe() const override;

  int64_t epoch() const { return epoch_; }
  /// Index of the next batch within the epoch.
  int64_t batch_index() const { return batch_; }
  int64_t batches_per_epoch() const { return x_.size(0) / batch_size_; }
  int64_t batch_size() const { return batch_size_; }
  /// The row order of `epoch` (int64 [N]); a pure function of (seed, epoch).
  at::Tensor permutation(int64_t epoch) const;

 private:
  at::Tensor x_, labels_;
  int64_t batch_size_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0, batch_ = 0;
  int64_t cached_epoch_ = -1;
  at::Tensor cached_perm_;
};

}  // namespace fewstep
