/// @file data/mixture_data.h
/// @brief Training batches drawn from a GaussianMixture with the source's own generator.
///
/// Each batch is `mixture.sample_with_labels(batch_size, generator)` cast to `dtype`, labels the
/// component indices. The generator's state is the source's whole state, so checkpoints replay
/// the same draws.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <memory>
#include <string>

#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/data/batch_source.h"

namespace fewstep {

class MixtureData final : public BatchSource {
 public:
  /// Draws with `generator` (a CPU generator; the source keeps and advances it).
  MixtureData(std::shared_ptr<const GaussianMixture> mixture, int64_t batch_size, at::Generator generator,
              at::ScalarType dtype = at::kFloat);
  /// Draws with a fresh CPU generator seeded with `seed`.
  MixtureData(std::shared_ptr<const GaussianMixture> mixture, int64_t batch_size, uint64_t seed,
              at::ScalarType dtype = at::kFloat);

  Batch next() override;
  State state() const override;  // {"generator": uint8 generator state}
  void load_state(const State& state) override;
  std::string describe() const override;

  const GaussianMixture& mixture() const { return *mixture_; }
  const at::Generator& generator() const { return generator_; }

 private:
  std::shared_ptr<const GaussianMixture> mixture_;
  int64_t batch_size_;
  mutable at::Generator generator_;  // mutable: locking its mutex in state() const
  at::ScalarType dtype_;
};

}  // namespace fewstep
