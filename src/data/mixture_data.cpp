#include "fewstep/data/mixture_data.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <sstream>
#include <utility>

#include "fewstep/core/check.h"

namespace fewstep {

MixtureData::MixtureData(std::shared_ptr<const GaussianMixture> mixture, int64_t batch_size, at::Generator generator,
                         at::ScalarType dtype)
    : mixture_(std::move(mixture)), batch_size_(batch_size), generator_(std::move(generator)), dtype_(dtype) {
  FEWSTEP_CHECK_VALUE(mixture_ != nullptr, "MixtureData: mixture must not be null");
  FEWSTEP_CHECK_VALUE(batch_size_ >= 1, "MixtureData: batch_size must be >= 1, got ", batch_size_);
  FEWSTEP_CHECK_VALUE(generator_.defined() && generator_.device().is_cpu(),
                      "MixtureData: generator must be a defined CPU generator");
  FEWSTEP_CHECK_TYPE(at::isFloatingType(dtype_), "MixtureData: dtype must be floating point, got ", dtype_);
}

MixtureData::MixtureData(std::shared_ptr<const GaussianMixture> mixture, int64_t batch_size, uint64_t seed,
                         at::ScalarType dtype)
    : MixtureData(std::move(mixture), batch_size, at::make_generator<at::CPUGeneratorImpl>(seed), dtype) {}

Batch MixtureData::next() {
  auto [x, labels] = mixture_->sample_with_labels(batch_size_, generator_);
  return {x.to(dtype_), labels};
}

BatchSource::State MixtureData::state() const {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  return {{"generator", generator_.get_state()}};
}

void MixtureData::load_state(const State& state) {
  const auto it = state.find("generator");
  FEWSTEP_CHECK_VALUE(it != state.end() && it->second.defined(),
                      "MixtureData.load_state: state has no 'generator' entry");
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_state(it->second);
}

std::string MixtureData::describe() const {
  std::ostringstream s;
  s << "MixtureData(dim=" << mixture_->dim() << ", components=" << mixture_->components()
    << ", batch_size=" << batch_size_ << ")";
  return s.str();
}

}  // namespace fewstep
