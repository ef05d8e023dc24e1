#include "fewstep/core/noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

std::vector<at::Generator> cpu_generators(const std::vector<uint64_t>& seeds, bool step_streams) {
  std::vector<at::Generator> generators;
  generators.reserve(seeds.size());
  for (uint64_t s : seeds)
    generators.push_back(at::make_generator<at::CPUGeneratorImpl>(step_streams ? step_noise_seed(s) : s));
  return generators;
}

at::Tensor draw_rows(std::vector<at::Generator>& generators, at::IntArrayRef sample_shape,
                     const at::TensorOptions& options) {
  const at::ScalarType dtype = at::typeMetaToScalarType(options.dtype());
  FEWSTEP_CHECK_TYPE(at::isFloatingType(dtype), "standard normal noise needs a real floating-point dtype (float32, "
                     "float64, ...), got ", dtype);
  std::vector<at::Tensor> rows;
  rows.reserve(generators.size());
  for (auto& g : generators) rows.push_back(at::randn(sample_shape, g, at::TensorOptions().dtype(at::kDouble)));
  return at::stack(rows).to(options);
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + stream * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t step_noise_seed(uint64_t seed) {
  constexpr uint64_t kLow32 = 0xFFFFFFFFull;
  uint64_t derived = derive_seed(seed, kStepNoiseStream);
  while (((derived ^ seed) & kLow32) == 0) derived = derive_seed(derived, kStepNoiseStream);
  return derived;
}

NoiseSampler NoiseSampler::per_sample(const std::vector<uint64_t>& seeds) {
  FEWSTEP_CHECK_VALUE(!seeds.empty(), "NoiseSampler::per_sample: seeds must not be empty");
  NoiseSampler sampler;
  sampler.per_sample_ = cpu_generators(seeds, /*step_streams=*/true);
  return sampler;
}

NoiseSampler NoiseSampler::make(const std::vector<uint64_t>& seeds, const std::optional<at::Generator>& generator) {
  FEWSTEP_CHECK_VALUE(seeds.empty() || !generator.has_value(), "pass either generator= or seeds=, not both");
  if (!seeds.empty()) return per_sample(seeds);
  return generator ? NoiseSampler(*generator) : NoiseSampler();
}

at::Tensor NoiseSampler::randn_like(const at::Tensor& x) {
  if (per_sample_.empty()) return at::randn(x.sizes(), generator_, x.options());
  FEWSTEP_CHECK_VALUE(x.dim() >= 1 && x.size(0) == static_cast<int64_t>(per_sample_.size()),
                      "per-sample seeds: got ", per_sample_.size(), " seeds for a batch of shape ", x.sizes(),
                      "; pass one seed per sample");
  return draw_rows(per_sample_, x.sizes().slice(1), x.options());
}

at::Tensor randn_per_sample(at::IntArrayRef sample_shape, const std::vector<uint64_t>& seeds,
                            const at::TensorOptions& options) {
  FEWSTEP_CHECK_VALUE(!seeds.empty(), "randn_per_sample: seeds must not be empty");
  auto generators = cpu_generators(seeds, /*step_streams=*/false);
  return draw_rows(generators, sample_shape, options);
}

}  // namespace fewstep
