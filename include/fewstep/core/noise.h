/// @file core/noise.h
/// @brief Where stochastic steppers get their Gaussian noise: a generator, or one per sample.
///
/// Every random draw takes an explicit generator (k-diffusion's weak spot is the global RNG).
/// With per-sample seeds each sample owns a generator, so its noise — and therefore the
/// sample itself — does not depend on which batch it is in or on its position. Per-sample draws
/// are made on the CPU in float64 and then moved to x's device and dtype, so they are also
/// identical across devices.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fewstep {

class NoiseSampler {
 public:
  /// Draws from the default generator of x's device.
  NoiseSampler() = default;
  /// Draws from `generator` (on x's device, like at::randn with a generator).
  explicit NoiseSampler(at::Generator generator) : generator_(std::move(generator)) {}
  /// One CPU generator per sample, seeded with seeds[i].
  static NoiseSampler per_sample(const std::vector<uint64_t>& seeds);

  /// Standard normal noise shaped like x (ValueError if per-sample seeds do not match x's batch).
  at::Tensor randn_like(const at::Tensor& x);
  bool is_per_sample() const { return !per_sample_.empty(); }

 private:
  std::optional<at::Generator> generator_;
  std::vector<at::Generator> per_sample_;
};

/// Initial noise x_T of shape [seeds.size(), *shape] where row i depends only on seeds[i].
at::Tensor randn_per_sample(at::IntArrayRef sample_shape, const std::vector<uint64_t>& seeds,
                            const at::TensorOptions& options);

}  // namespace fewstep
