/// @file core/noise.h
/// @brief The one noise convention: x_T from per-sample seeds, and step noise from streams derived
///        from the same seeds (docs/sampling.md, "Noise").
///
/// Every random draw takes an explicit generator (no global RNG). Two ways to make a run reproducible:
///  - per-sample seeds: sample i's x_T is `randn_per_sample(shape, {seed_i})` (a float64 draw on the
///    CPU from a generator seeded with seed_i, then cast to the wanted dtype and device) and its step
///    noise comes from its own stream, a CPU generator seeded with `step_noise_seed(seed_i)`. A sample
///    then depends on its seed only — not on its batch, its position or the device — and its step
///    noise is never the x_T draw;
///  - one generator: x_T is the caller's, and step noise is `at::randn(x.sizes(), generator, x.options())`
///    drawn on x's device, batch-wide, in the order of the steps.
/// The CPU generator (mt19937) keeps the low 32 bits of a seed, so seeds that agree modulo 2^32 give the
/// same stream.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fewstep {

/// The seed of stream `stream` of `seed`: SplitMix64's output for the counter `stream`, i.e. its mix
/// function applied to seed + stream · 0x9E3779B97F4A7C15 (mod 2^64) (Steele, Lea & Flood 2014, "Fast
/// splittable pseudorandom number generators", OOPSLA). Distinct streams of one seed are
/// statistically independent.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

/// The stream id of per-sample step noise in `derive_seed`.
constexpr uint64_t kStepNoiseStream = 1;

/// The seed of sample `seed`'s step-noise stream: derive_seed(seed, kStepNoiseStream), mixed again
/// (seed ← derive_seed(seed', kStepNoiseStream)) while its low 32 bits equal seed's, so that the step
/// stream is never the x_T stream of the same seed.
uint64_t step_noise_seed(uint64_t seed);

class NoiseSampler {
 public:
  /// Draws from the default generator of x's device.
  NoiseSampler() = default;
  /// Draws from `generator` (on x's device, like at::randn with a generator).
  explicit NoiseSampler(at::Generator generator) : generator_(std::move(generator)) {}
  /// Step noise of samples with per-sample seeds: row i from a CPU generator seeded with
  /// step_noise_seed(seeds[i]), drawn in float64 and cast to x's dtype and device.
  static NoiseSampler per_sample(const std::vector<uint64_t>& seeds);
  /// The one way a run's step noise is set up: per-sample seeds, else the generator, else the
  /// default generator. ValueError if both are given.
  static NoiseSampler make(const std::vector<uint64_t>& seeds, const std::optional<at::Generator>& generator);

  /// Standard normal noise shaped like x (ValueError if per-sample seeds do not match x's batch).
  at::Tensor randn_like(const at::Tensor& x);
  bool is_per_sample() const { return !per_sample_.empty(); }

 private:
  std::optional<at::Generator> generator_;
  std::vector<at::Generator> per_sample_;
};

/// Initial noise x_T of shape [seeds.size(), *shape] where row i depends only on seeds[i]: drawn in
/// float64 on the CPU from a generator seeded with seeds[i], then cast to `options`.
at::Tensor randn_per_sample(at::IntArrayRef sample_shape, const std::vector<uint64_t>& seeds,
                            const at::TensorOptions& options);

}  // namespace fewstep
