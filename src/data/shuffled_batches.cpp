#include "fewstep/data/shuffled_batches.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <sstream>
#include <utility>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// SplitMix64 finaliser: neighbouring (seed, epoch) pairs give unrelated generator seeds.
uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

ShuffledBatches::ShuffledBatches(at::Tensor x, at::Tensor labels, int64_t batch_size, uint64_t seed, bool shuffle)
    : x_(std::move(x)), labels_(std::move(labels)), batch_size_(batch_size), seed_(seed), shuffle_(shuffle) {
  FEWSTEP_CHECK_VALUE(x_.defined() && x_.dim() >= 1,
                      "ShuffledBatches: x must be a tensor with a leading sample "
                      "dimension, got ",
                      x_.defined() ? std::to_string(x_.dim()) + "-D" : std::string("undefined"));
  FEWSTEP_CHECK_VALUE(batch_size_ >= 1 && batch_size_ <= x_.size(0), "ShuffledBatches: batch_size must be in [1, ",
                      x_.size(0), "] (the number of samples), got ", batch_size_);
  FEWSTEP_CHECK_VALUE(!labels_.defined() || (labels_.dim() == 1 && labels_.size(0) == x_.size(0)),
                      "ShuffledBatches: labels must have shape [", x_.size(0), "], got ", labels_.sizes());
}

at::Tensor ShuffledBatches::permutation(int64_t epoch) const {
  const int64_t n = x_.size(0);
  if (!shuffle_) return at::arange(n, at::kLong);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(mix64(seed_ ^ mix64(static_cast<uint64_t>(epoch))));
  return at::randperm(n, gen, at::kLong);
}

Batch ShuffledBatches::next() {
  if (batch_ >= batches_per_epoch()) {
    ++epoch_;
    batch_ = 0;
  }
  if (cached_epoch_ != epoch_) {
    cached_perm_ = permutation(epoch_).to(x_.device());
    cached_epoch_ = epoch_;
  }
  const at::Tensor rows = cached_perm_.narrow(0, batch_ * batch_size_, batch_size_);
  ++batch_;
  Batch out;
  out.x = x_.index_select(0, rows);
  if (labels_.defined()) out.labels = labels_.index_select(0, rows.to(labels_.device()));
  return out;
}

BatchSource::State ShuffledBatches::state() const {
  return {{"position", at::tensor(std::vector<int64_t>{epoch_, batch_}, at::kLong)}};
}

void ShuffledBatches::load_state(const State& state) {
  const auto it = state.find("position");
  FEWSTEP_CHECK_VALUE(it != state.end(), "ShuffledBatches.load_state: state has no 'position' entry");
  const at::Tensor p = it->second;
  FEWSTEP_CHECK_VALUE(p.defined() && p.scalar_type() == at::kLong && p.numel() == 2,
                      "ShuffledBatches.load_state: 'position' must be int64 [epoch, batch], got ",
                      p.defined() ? p.sizes() : at::IntArrayRef{});
  const at::Tensor host = p.to(at::kCPU).contiguous();
  const int64_t epoch = host.data_ptr<int64_t>()[0], batch = host.data_ptr<int64_t>()[1];
  FEWSTEP_CHECK_VALUE(epoch >= 0 && batch >= 0 && batch <= batches_per_epoch(),
                      "ShuffledBatches.load_state: position (epoch ", epoch, ", batch ", batch,
                      ") is out of range for ", batches_per_epoch(), " batches per epoch");
  epoch_ = epoch;
  batch_ = batch;
}

std::string ShuffledBatches::describe() const {
  std::ostringstream s;
  s << "ShuffledBatches(n=" << x_.size(0) << ", batch_size=" << batch_size_ << ", seed=" << seed_
    << (shuffle_ ? "" : ", shuffle=false") << ")";
  return s.str();
}

}  // namespace fewstep
