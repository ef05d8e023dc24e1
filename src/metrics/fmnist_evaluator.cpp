#include "fewstep/metrics/fmnist_evaluator.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "fewstep/core/check.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/metrics/class_histogram.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"

namespace fewstep {

namespace {

constexpr int64_t kClasses = 10;
constexpr int64_t kTrainImages = 60000;
constexpr const char* kCacheFormat = "fewstep.fmnist_stats.v1";

// What the cached statistics depend on, as one line: the classifier's content (SHA-256 of its
// bytes), the data set's location and the floor's seed; its SHA-256 names the file.
std::string cache_key(const std::string& classifier, const FmnistEvaluatorOptions& o) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  const std::string data = fsys::absolute(o.data_dir.empty() ? fashion_mnist_directory() : o.data_dir, ec)
                               .lexically_normal()
                               .string();
  return std::string(kCacheFormat) + "|classifier_sha256=" + sha256_file(classifier) + "|data=" + data +
         "|floor_seed=" + std::to_string(o.floor_seed);
}

std::string cache_file_name(const std::string& key) { return "fmnist-stats-" + sha256_hex(key).substr(0, 32) + ".pt"; }

void check_images(const at::Tensor& images, int64_t min_n) {
  FEWSTEP_CHECK_VALUE(images.defined() && images.dim() == 4 && images.size(1) == 1 && images.size(2) == 28 &&
                          images.size(3) == 28 && images.size(0) >= min_n,
                      "images should be a tensor [N, 1, 28, 28] with N >= ", min_n, " (pixels in [-1, 1]), got ",
                      images.defined() ? images.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_TYPE(images.is_floating_point(), "images should be a floating-point tensor with pixels in [-1, 1], got ",
                     images.scalar_type());
}

}  // namespace

struct FmnistEvaluator::Impl {
  std::string path;
  FmnistEvaluatorOptions options;
  torch::jit::Module net;
  std::mutex mutex;
  GaussianStats test_stats;
  at::Tensor test_counts;
  double test_accuracy = 0.0;
  int64_t feature_dim = 0;
  // Floors: features and predicted classes of the first rows of a fixed train permutation.
  at::Tensor floor_features, floor_classes;
  std::map<int64_t, std::pair<double, double>> floors;  // n → (fd, class KL)
  std::string key, cache_file;
  bool from_cache = false;

  bool load_cache() {
    if (cache_file.empty() || !std::ifstream(cache_file).good()) return false;
    try {
      const TensorArchive c = TensorArchive::load(cache_file);
      if (!c.contains("key") || c.string("key") != key) return false;
      test_stats = GaussianStats{c.tensor("test/mean"), c.tensor("test/cov"), c.integer("test/count")};
      test_counts = c.tensor("test/class_counts");
      test_accuracy = c.tensor("test/accuracy").item<double>();
      feature_dim = test_stats.mean.size(0);
      if (c.contains("floor/features")) {
        floor_features = c.tensor("floor/features");
        floor_classes = c.tensor("floor/classes");
      }
      return true;
    } catch (const c10::Error&) {
      return false;  // unreadable or from another version: recomputed and rewritten
    }
  }

  void save_cache() const {
    if (cache_file.empty()) return;
    TensorArchive c;
    c.set_string("format", kCacheFormat);
    c.set_string("key", key);
    c.set_tensor("test/mean", test_stats.mean);
    c.set_tensor("test/cov", test_stats.cov);
    c.set_int("test/count", test_stats.count);
    c.set_tensor("test/class_counts", test_counts);
    c.set_tensor("test/accuracy", at::scalar_tensor(test_accuracy, at::kDouble));
    if (floor_features.defined()) {
      c.set_tensor("floor/features", floor_features);
      c.set_tensor("floor/classes", floor_classes);
    }
    try {
      std::filesystem::create_directories(std::filesystem::path(cache_file).parent_path());
      c.save(cache_file);
    } catch (const std::exception&) {
      // A cache that cannot be written only costs time.
    }
  }

  // Features and logits of images, batch by batch, on the CPU in float32, clamped to [−1, 1].
  std::pair<at::Tensor, at::Tensor> run(const at::Tensor& images, bool want_logits) const {
    c10::InferenceMode guard;
    const int64_t n = images.size(0);
    std::vector<at::Tensor> feats, logits;
    const torch::jit::Method features = net.get_method("features");
    const torch::jit::Method head = net.get_method("head");
    for (int64_t start = 0; start < n; start += options.batch) {
      const int64_t m = std::min(options.batch, n - start);
      const at::Tensor x = images.narrow(0, start, m).detach().to(at::kCPU, at::kFloat).clamp(-1.0, 1.0).contiguous();
      const c10::IValue f = features({x});
      FEWSTEP_CHECK_TYPE(f.isTensor() && f.toTensor().dim() == 2 && f.toTensor().size(0) == m, "classifier '", path,
                         "': features(x) should return a tensor [B, D]");
      feats.push_back(f.toTensor());
      if (want_logits) {
        const c10::IValue l = head({f.toTensor()});
        FEWSTEP_CHECK_TYPE(l.isTensor() && l.toTensor().dim() == 2 && l.toTensor().size(1) == kClasses,
                           "classifier '", path, "': head(features) should return logits [B, 10]");
        logits.push_back(l.toTensor());
      }
    }
    return {at::cat(feats, 0), want_logits ? at::cat(logits, 0) : at::Tensor()};
  }

  std::pair<double, double> floor(int64_t n) {
    FEWSTEP_CHECK_VALUE(n >= 2 && n <= kTrainImages, "the floor needs 2 <= n <= ", kTrainImages,
                        " (training images), got n = ", n);
    if (auto it = floors.find(n); it != floors.end()) return it->second;
    const int64_t have = floor_features.defined() ? floor_features.size(0) : 0;
    if (have < n) {
      const FashionMnist train = load_fashion_mnist("train", options.data_dir);
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.floor_seed);
      const at::Tensor rows = at::randperm(train.images.size(0), gen, at::kLong).narrow(0, have, n - have);
      auto [f, l] = run(train.images.index_select(0, rows), true);
      floor_features = have == 0 ? f : at::cat({floor_features, f}, 0);
      floor_classes = have == 0 ? l.argmax(1) : at::cat({floor_classes, l.argmax(1)}, 0);
      save_cache();
    }
    const double fd = frechet_distance(gaussian_stats(floor_features.narrow(0, 0, n)), test_stats);
    const double kl = class_histogram_kl(test_counts, class_histogram(floor_classes.narrow(0, 0, n), kClasses),
                                         options.pseudo_count);
    return floors[n] = {fd, kl};
  }
};

FmnistEvaluator::FmnistEvaluator(const std::string& classifier_path, FmnistEvaluatorOptions options)
    : impl_(std::make_unique<Impl>()) {
  FEWSTEP_CHECK_VALUE(options.batch >= 1, "FmnistEvaluatorOptions.batch must be >= 1, got ", options.batch);
  FEWSTEP_CHECK_VALUE(std::isfinite(options.pseudo_count) && options.pseudo_count >= 0.0,
                      "FmnistEvaluatorOptions.pseudo_count must be finite and >= 0, got ", options.pseudo_count);
  Impl& s = *impl_;
  s.path = classifier_path;
  s.options = std::move(options);
  FEWSTEP_CHECK_VALUE(std::ifstream(classifier_path).good(), "classifier_path '", classifier_path,
                      "' does not exist or cannot be read (fewstep ships models/fmnist-classifier.pt; "
                      "'fewstep train-classifier' trains one)");
  try {
    s.net = torch::jit::load(classifier_path, at::kCPU);
  } catch (const c10::Error& e) {
    FEWSTEP_CHECK_VALUE(false, "classifier_path '", classifier_path, "' cannot be loaded as TorchScript: ",
                        e.what_without_backtrace());
  }
  FEWSTEP_CHECK_VALUE(s.net.find_method("features").has_value() && s.net.find_method("head").has_value(),
                      "classifier_path '", classifier_path,
                      "' is not a fewstep classifier: it needs features(x) and head(features) methods "
                      "(see nets/classifier.h)");
  s.net.eval();

  if (!s.options.cache_dir.empty()) {
    s.key = cache_key(classifier_path, s.options);
    s.cache_file = (std::filesystem::path(s.options.cache_dir) / cache_file_name(s.key)).string();
    s.from_cache = s.load_cache();
    if (s.from_cache) return;
  }
  const FashionMnist test = load_fashion_mnist("test", s.options.data_dir);
  auto [f, logits] = s.run(test.images, true);
  s.feature_dim = f.size(1);
  s.test_stats = gaussian_stats(f);
  const at::Tensor predicted = logits.argmax(1);
  s.test_counts = class_histogram(predicted, kClasses);
  s.test_accuracy = predicted.eq(test.labels).to(at::kDouble).mean().item<double>();
  s.save_cache();
}

FmnistEvaluator::~FmnistEvaluator() = default;

FmnistReport FmnistEvaluator::evaluate(const at::Tensor& images, bool with_floor) {
  check_images(images, 2);
  const auto t0 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  Impl& s = *impl_;
  {
    c10::InferenceMode guard;
    FEWSTEP_CHECK_VALUE(at::isfinite(images.detach()).all().item<bool>(), "images contain NaN or Inf values");
  }
  auto [f, logits] = s.run(images, true);
  FmnistReport r;
  r.n = images.size(0);
  r.fd = frechet_distance(gaussian_stats(f), s.test_stats);
  r.class_counts = class_histogram(logits, kClasses);
  r.class_kl = class_histogram_kl(s.test_counts, r.class_counts, s.options.pseudo_count);
  {
    c10::InferenceMode guard;
    r.mean_confidence = at::softmax(logits.to(at::kDouble), 1).amax(1).mean().item<double>();
  }
  r.fd_floor = r.class_kl_floor = NAN;
  if (with_floor && r.n <= kTrainImages) std::tie(r.fd_floor, r.class_kl_floor) = s.floor(r.n);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

at::Tensor FmnistEvaluator::features(const at::Tensor& images) const {
  check_images(images, 1);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->run(images, false).first;
}

at::Tensor FmnistEvaluator::logits(const at::Tensor& images) const {
  check_images(images, 1);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->run(images, true).second;
}

double FmnistEvaluator::fd_floor(int64_t n) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->floor(n).first;
}

double FmnistEvaluator::class_kl_floor(int64_t n) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->floor(n).second;
}

double FmnistEvaluator::test_accuracy() const { return impl_->test_accuracy; }
const GaussianStats& FmnistEvaluator::test_stats() const { return impl_->test_stats; }
at::Tensor FmnistEvaluator::test_class_counts() const { return impl_->test_counts.clone(); }
int64_t FmnistEvaluator::feature_dim() const { return impl_->feature_dim; }
const std::string& FmnistEvaluator::classifier_path() const { return impl_->path; }
const FmnistEvaluatorOptions& FmnistEvaluator::options() const { return impl_->options; }
const std::string& FmnistEvaluator::cache_file() const { return impl_->cache_file; }
bool FmnistEvaluator::loaded_from_cache() const { return impl_->from_cache; }

}  // namespace fewstep
