/// @file metrics/fmnist_evaluator.h
/// @brief FD-FMNIST and class-histogram KL of generated Fashion-MNIST images.
///
/// No Inception weights are reachable, so fewstep measures image quality with its own
/// Fashion-MNIST classifier (nets/classifier.h, shipped as models/fmnist-classifier.pt with its
/// test accuracy on a card beside it):
///  - **FD-FMNIST**: the Fréchet distance (metrics/frechet.h) between Gaussians fitted to the
///    classifier's penultimate-layer features of the samples and of the 10000 test images.
///    Values are comparable only within fewstep, with the same classifier file and the same n.
///  - **FD floor**: the same distance for n *training* images (a fixed random subset: the first n
///    rows of a permutation drawn with `floor_seed`) against the test set, i.e. what a perfect
///    generator would score. FD estimated from n samples is biased upwards by roughly a term
///    ∝ 1/n (noisy covariance estimates), so the floor is computed at the same n as the
///    evaluated sample and must be printed beside every FD.
///  - **class KL**: KL(p_test ‖ p_samples) of the classifier's predicted-class histograms
///    (metrics/class_histogram.h, pseudo-count ½), with its floor from the same n train images.
///  - **mean confidence**: the mean over samples of the largest softmax probability (sharp,
///    recognisable samples score near the test set's value).
/// Images are expected as [N, 1, 28, 28] with pixels in [−1, 1] (the scaling of
/// data/fashion_mnist.h); values outside are clamped to [−1, 1] first, as they would be when
/// the samples are written out as 8-bit images. The classifier runs on the CPU in float32 under
/// inference mode, `batch` images at a time; inputs on another device are copied to the CPU.
///
/// The constructor loads the classifier and the test split and computes the test features,
/// statistics, predicted-class histogram and accuracy once. The training split is loaded on the
/// first floor request; floor features are kept for the largest n seen and floors per n.
/// With a `cache_dir`, the test statistics and the floor features are also stored in
/// `<cache_dir>/fmnist-stats-<hash>.pt`, keyed by the classifier's content (SHA-256 of the file),
/// the data directory and floor_seed, so later evaluators (other processes)
/// skip the classifier passes over the test and training images.
/// One evaluator may be used from several threads (calls are serialised by a mutex).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "fewstep/metrics/frechet.h"

namespace fewstep {

struct FmnistEvaluatorOptions {
  std::string data_dir;     ///< Fashion-MNIST IDX files; "" = fashion_mnist_directory()
  int64_t batch = 500;      ///< images per classifier call
  uint64_t floor_seed = 0;  ///< seed of the permutation that picks the floor's training images
  double pseudo_count = 0.5;  ///< smoothing of the class histograms (metrics/class_histogram.h)
  std::string cache_dir;      ///< "" = no file cache (see above)
};

struct FmnistReport {
  int64_t n = 0;                  ///< number of evaluated images
  double fd = 0.0;                ///< FD-FMNIST: samples vs the test set
  double fd_floor = 0.0;          ///< n train images vs the test set (NaN when not computed)
  double class_kl = 0.0;          ///< KL(p_test ‖ p_samples), nats
  double class_kl_floor = 0.0;    ///< KL(p_test ‖ p_train[n]) (NaN when not computed)
  double mean_confidence = 0.0;   ///< mean max softmax probability of the samples
  at::Tensor class_counts;        ///< predicted classes of the samples, float64 [10]
  double seconds = 0.0;           ///< wall time of evaluate()
};

class FmnistEvaluator {
 public:
  /// Loads the TorchScript classifier at `classifier_path` (it must have `features(x)` and
  /// `head(features)` methods, as nets/classifier.h builds) and the test split. ValueError naming
  /// the path or directory when a file is missing or is not such a classifier.
  explicit FmnistEvaluator(const std::string& classifier_path, FmnistEvaluatorOptions options = {});
  ~FmnistEvaluator();
  FmnistEvaluator(const FmnistEvaluator&) = delete;
  FmnistEvaluator& operator=(const FmnistEvaluator&) = delete;

  /// All metrics of `images` [N, 1, 28, 28] (N >= 2, floating, finite). With `floor` the floors at
  /// n = N are computed (the first call for a new N classifies N training images; needs
  /// N <= 60000, else the floors are NaN). ValueError naming `images` for a bad shape or dtype.
  FmnistReport evaluate(const at::Tensor& images, bool floor = true);

  /// Classifier features [N, D] (float32, CPU) of images [N, 1, 28, 28] (N >= 1), clamped to [−1, 1].
  at::Tensor features(const at::Tensor& images) const;
  /// Classifier logits [N, 10] (float32, CPU).
  at::Tensor logits(const at::Tensor& images) const;

  /// FD and class-KL floors at sample size n (cached per n). ValueError unless 2 <= n <= 60000.
  double fd_floor(int64_t n);
  double class_kl_floor(int64_t n);

  /// Accuracy of the classifier on the 10000 test images.
  double test_accuracy() const;
  /// Feature statistics of the test set (the FD reference).
  const GaussianStats& test_stats() const;
  /// The classifier's predicted-class counts on the test set, float64 [10].
  at::Tensor test_class_counts() const;
  int64_t feature_dim() const;
  const std::string& classifier_path() const;
  const FmnistEvaluatorOptions& options() const;
  /// The cache file in use ("" without cache_dir), and whether the constructor read it.
  const std::string& cache_file() const;
  bool loaded_from_cache() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
