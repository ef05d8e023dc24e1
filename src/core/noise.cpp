#include "fewstep/core/noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {
at::Tensor draw_rows(std::vector<at::Generator>& generators, at::IntArrayRef sample_shape,
                     const at::TensorOptions& options) {
  std::vector<at::Tensor> rows;
  rows.reserve(generators.size());
  for (auto& g : generators) rows.push_back(at::randn(sample_shape, g, at::TensorOptions().dtype(at::kDouble)));
  return at::stack(rows).to(options);
}
}  // namespace

NoiseSampler NoiseSampler::per_sample(const std::vector<uint64_t>& seeds) {
  FEWSTEP_CHECK_VALUE(!seeds.empty(), "NoiseSampler::per_sample: seeds must not be empty");
  NoiseSampler sampler;
  for (uint64_t s : seeds) sampler.per_sample_.push_back(at::make_generator<at::CPUGeneratorImpl>(s));
  return sampler;
}

at::Tensor NoiseSampler::randn_like(const at::Tensor& x) {
  if (per_sample_.empty()) {
    return at::randn(x.sizes(), generator_, x.options());
  }
  FEWSTEP_CHECK_VALUE(x.dim() >= 1 && x.size(0) == static_cast<int64_t>(per_sample_.size()),
                      "per-sample seeds: got ", per_sample_.size(), " seeds for a batch of shape ", x.sizes(),
                      "; pass one seed per sample");
  return draw_rows(per_sample_, x.sizes().slice(1), x.options());
}

at::Tensor randn_per_sample(at::IntArrayRef sample_shape, const std::vector<uint64_t>& seeds,
                            const at::TensorOptions& options) {
  FEWSTEP_CHECK_VALUE(!seeds.empty(), "randn_per_sample: seeds must not be empty");
  std::vector<at::Generator> generators;
  for (uint64_t s : seeds) generators.push_back(at::make_generator<at::CPUGeneratorImpl>(s));
  return draw_rows(generators, sample_shape, options);
}

}  // namespace fewstep
