/// @file train/rng_bundle.h
/// @brief The named CPU generators of a training run, seeded from one seed and checkpointable.
///
/// Every random draw of a trainer goes through one of these generators (never the global RNG),
/// so the run is a function of its seed, and storing their states (at::Generator::get_state)
/// in the checkpoint makes resumed runs draw exactly what an uninterrupted run would. Each
/// stream's seed is a hash of (seed, name): adding a stream does not shift the others.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <map>
#include <string>

#include "fewstep/train/checkpoint.h"

namespace fewstep {

class RngBundle {
 public:
  explicit RngBundle(uint64_t seed);

  /// The generator named `name`, created on first use.
  at::Generator& get(const std::string& name);
  uint64_t seed() const { return seed_; }

  /// Writes "<prefix>/<name>" = state (uint8) for every generator created so far.
  void save(Checkpoint& checkpoint, const std::string& prefix) const;
  /// Restores every stored stream (creating it if needed); ValueError if a stored state is invalid.
  void load(const Checkpoint& checkpoint, const std::string& prefix);

 private:
  uint64_t seed_;
  std::map<std::string, at::Generator> generators_;
};

}  // namespace fewstep
