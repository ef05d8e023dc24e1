#include "fewstep/train/rng_bundle.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"

namespace fewstep {

namespace {

// FNV-1a of the name, then a SplitMix64 round with the seed.
uint64_t stream_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ULL;
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (h | 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

RngBundle::RngBundle(uint64_t seed) : seed_(seed) {}

at::Generator& RngBundle::get(const std::string& name) {
  auto it = generators_.find(name);
  if (it == generators_.end()) {
    it = generators_.emplace(name, at::make_generator<at::CPUGeneratorImpl>(stream_seed(seed_, name))).first;
  }
  return it->second;
}

void RngBundle::save(Checkpoint& checkpoint, const std::string& prefix) const {
  for (const auto& [name, gen] : generators_) {
    at::Generator g = gen;  // handle copy: mutex() is non-const
    std::lock_guard<std::mutex> lock(g.mutex());
    checkpoint.set_tensor(prefix + "/" + name, g.get_state());
  }
}

void RngBundle::load(const Checkpoint& checkpoint, const std::string& prefix) {
  const std::string head = prefix + "/";
  for (const std::string& key : checkpoint.tensor_keys(head)) {
    at::Generator& g = get(key.substr(head.size()));
    std::lock_guard<std::mutex> lock(g.mutex());
    try {
      g.set_state(checkpoint.tensor(key));
    } catch (const c10::Error& e) {
      FEWSTEP_CHECK_VALUE(false, "RngBundle.load: tensor '", key, "' of checkpoint '", checkpoint.source(),
                          "' is not a CPU generator state: ", e.what_without_backtrace());
    }
  }
}

}  // namespace fewstep
