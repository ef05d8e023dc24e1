// Tests of metrics/ (Fréchet distance, class-histogram KL, coupled error, FmnistEvaluator) against
// closed forms, and of the classifier network and its trainer (nets/classifier.h,
// train/classifier_trainer.h) that the image metrics use.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/metrics/class_histogram.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/metrics/frechet.h"
#include "fewstep/nets/classifier.h"
#include "fewstep/nets/network.h"
#include "fewstep/train/classifier_trainer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using fewstep::GaussianStats;

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

using fewstep::testing::value_error_message;

// One directory for the whole process: tests write several files into it.
std::string temp_dir() {
  static const std::string dir = fewstep::testing::scratch_dir("metrics", "files");
  return dir;
}

GaussianStats stats(at::Tensor mean, at::Tensor cov, int64_t count = 100) {
  return GaussianStats{mean.to(at::kDouble), cov.to(at::kDouble), count};
}

// A random symmetric positive-definite matrix.
at::Tensor random_spd(int64_t d, uint64_t seed, double jitter = 0.1) {
  const at::Tensor a = at::randn({d, d}, gen(seed), at::kDouble);
  return at::matmul(a, a.transpose(0, 1)) / d + jitter * at::eye(d, at::kDouble);
}

// A random orthogonal matrix (QR of a Gaussian matrix).
at::Tensor random_rotation(int64_t d, uint64_t seed) {
  return std::get<0>(at::linalg_qr(at::randn({d, d}, gen(seed), at::kDouble)));
}

// ---------------------------------------------------------------------------------------------
// Fréchet distance

TEST(GaussianStats, MeanAndUnbiasedCovariance) {
  const at::Tensor f = at::randn({50, 4}, gen(1), at::kFloat);
  const GaussianStats s = fewstep::gaussian_stats(f);
  EXPECT_EQ(s.count, 50);
  EXPECT_EQ(s.mean.scalar_type(), at::kDouble);
  EXPECT_EQ(s.cov.scalar_type(), at::kDouble);
  const at::Tensor d = f.to(at::kDouble);
  EXPECT_TRUE(at::allclose(s.mean, d.mean(0), 0, 1e-12));
  EXPECT_TRUE(at::allclose(s.cov, at::cov(d.transpose(0, 1)), 0, 1e-12));  // torch.cov: unbiased
  const GaussianStats one = fewstep::gaussian_stats(at::ones({1, 3}));
  EXPECT_TRUE(at::equal(one.cov, at::zeros({3, 3}, at::kDouble)));
}

TEST(GaussianStats, RejectsBadFeatures) {
  EXPECT_NE(value_error_message([] { fewstep::gaussian_stats(at::zeros({5})); }).find("features should be a 2-D"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { fewstep::gaussian_stats(at::zeros({0, 3})); }).find("[0, 3]"),
            std::string::npos);
  at::Tensor bad = at::zeros({4, 2});
  bad[1][1] = NAN;
  EXPECT_NE(value_error_message([&] { fewstep::gaussian_stats(bad); }).find("NaN"), std::string::npos);
}

TEST(FrechetDistance, OneDimensionalClosedForm) {
  // (μ1 − μ2)² + (s1 − s2)² for N(μ1, s1²), N(μ2, s2²).
  const double fd = fewstep::frechet_distance(stats(at::full({1}, 1.5), at::full({1, 1}, 4.0)),
                                              stats(at::full({1}, -0.5), at::full({1, 1}, 0.25)));
  EXPECT_NEAR(fd, 2.0 * 2.0 + (2.0 - 0.5) * (2.0 - 0.5), 1e-12);
}

TEST(FrechetDistance, DiagonalCovariancesClosedForm) {
  // Commuting covariances: tr (Σa^½ Σb Σa^½)^½ = Σ √(a_i b_i).
  const at::Tensor a = at::rand({16}, gen(2), at::kDouble) + 0.1;
  const at::Tensor b = at::rand({16}, gen(3), at::kDouble) + 0.1;
  const at::Tensor ma = at::randn({16}, gen(4), at::kDouble), mb = at::randn({16}, gen(5), at::kDouble);
  const double expected = ((ma - mb).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()).item<double>();
  EXPECT_NEAR(fewstep::frechet_distance(stats(ma, at::diag(a)), stats(mb, at::diag(b))), expected, 1e-10);
}

TEST(FrechetDistance, CommutingRotatedCovariancesClosedForm) {
  // Σa = Q diag(a) Qᵀ and Σb = Q diag(b) Qᵀ share eigenvectors: FD = |μa − μb|² + Σ (√a_i − √b_i)².
  const int64_t d = 12;
  const at::Tensor q = random_rotation(d, 6);
  const at::Tensor a = at::rand({d}, gen(7), at::kDouble) * 3.0;
  const at::Tensor b = at::rand({d}, gen(8), at::kDouble) * 0.5 + 0.01;
  const auto rot = [&](const at::Tensor& v) { return at::matmul(q * v.unsqueeze(0), q.transpose(0, 1)); };
  const at::Tensor mu = at::randn({d}, gen(9), at::kDouble);
  const double expected = (mu.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()).item<double>();
  EXPECT_NEAR(fewstep::frechet_distance(stats(mu, rot(a)), stats(at::zeros({d}), rot(b))), expected, 1e-10);
}

TEST(FrechetDistance, GeneralCaseMatchesEigenvaluesOfProduct) {
  // For SPD matrices tr (Σa Σb)^½ = Σ √λ_i(Σa Σb) (the product is similar to Σa^½ Σb Σa^½): an
  // independent route through a non-symmetric eigensolver.
  const int64_t d = 10;
  const at::Tensor ca = random_spd(d, 10), cb = random_spd(d, 11);
  const at::Tensor ma = at::randn({d}, gen(12), at::kDouble), mb = at::randn({d}, gen(13), at::kDouble);
  const at::Tensor lam = at::real(at::linalg_eigvals(at::matmul(ca, cb)));
  const double expected =
      ((ma - mb).pow(2).sum() + ca.trace() + cb.trace() - 2.0 * lam.clamp_min(0).sqrt().sum()).item<double>();
  const double fd = fewstep::frechet_distance(stats(ma, ca), stats(mb, cb));
  EXPECT_NEAR(fd, expected, 1e-9 * std::max(1.0, std::abs(expected)));
  // Symmetric in its arguments.
  EXPECT_NEAR(fewstep::frechet_distance(stats(mb, cb), stats(ma, ca)), fd, 1e-10);
}

TEST(FrechetDistance, ZeroForIdenticalAndNonNegative) {
  const at::Tensor c = random_spd(32, 14, 1e-6);
  const at::Tensor m = at::randn({32}, gen(15), at::kDouble);
  const double same = fewstep::frechet_distance(stats(m, c), stats(m, c));
  EXPECT_GE(same, 0.0);
  EXPECT_LT(same, 1e-10);
  // Samples: FD(features, features) is 0 too, and the tensor overload agrees with the stats one.
  const at::Tensor f = at::randn({200, 8}, gen(16), at::kDouble), g = at::randn({300, 8}, gen(17), at::kDouble) + 0.5;
  EXPECT_LT(fewstep::frechet_distance(f, f), 1e-10);
  EXPECT_DOUBLE_EQ(fewstep::frechet_distance(f, g),
                   fewstep::frechet_distance(fewstep::gaussian_stats(f), fewstep::gaussian_stats(g)));
}

TEST(FrechetDistance, SingularCovariancesStayFinite) {
  // Fewer samples than dimensions: rank-deficient covariances. Compare with the closed form for
  // Σa = P diag(a) and Σb = P diag(b) with a shared projector (commuting).
  const at::Tensor a = at::tensor({2.0, 0.0, 1.0, 0.0}, at::kDouble), b = at::tensor({0.5, 0.0, 0.0, 3.0}, at::kDouble);
  const double expected = (a.sqrt() - b.sqrt()).pow(2).sum().item<double>();
  EXPECT_NEAR(fewstep::frechet_distance(stats(at::zeros({4}), at::diag(a)), stats(at::zeros({4}), at::diag(b))),
              expected, 1e-12);
  const at::Tensor f = at::randn({5, 20}, gen(18), at::kDouble), g = at::randn({5, 20}, gen(19), at::kDouble);
  const double fd = fewstep::frechet_distance(f, g);
  EXPECT_TRUE(std::isfinite(fd));
  EXPECT_GT(fd, 0.0);
}

TEST(FrechetDistance, ErrorsNameTheArgument) {
  const GaussianStats ok = stats(at::zeros({3}), at::eye(3));
  EXPECT_NE(value_error_message([&] { fewstep::frechet_distance(ok, stats(at::zeros({4}), at::eye(4))); })
                .find("a and b should have the same dimension, got 3 and 4"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::frechet_distance(stats(at::zeros({3}), at::eye(2)), ok); })
                .find("a.cov should be [3, 3]"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::frechet_distance(at::zeros({4, 3}), at::zeros({4, 2})); })
                .find("features_a and features_b"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Class histograms

TEST(ClassHistogram, CountsLabelsAndArgmaxOfScores) {
  const at::Tensor labels = at::tensor({0, 2, 2, 1, 2}, at::kLong);
  EXPECT_TRUE(at::equal(fewstep::class_histogram(labels, 4), at::tensor({1.0, 1.0, 3.0, 0.0}, at::kDouble)));
  const at::Tensor scores = at::tensor({0.9, 0.1, 0.0, 5.0, -1.0, 2.0}, at::kFloat).view({3, 2});
  EXPECT_TRUE(at::equal(fewstep::class_histogram(scores, 2), at::tensor({1.0, 2.0}, at::kDouble)));
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram(labels, 2); }).find("labels should be in [0, 2)"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram(scores, 3); }).find("[N, 3]"), std::string::npos);
}

TEST(ClassHistogramKl, KnownHistograms) {
  const at::Tensor p = at::tensor({5.0, 5.0}, at::kDouble), q = at::tensor({3.0, 1.0}, at::kDouble);
  // Unsmoothed: ½ log(½ / ¾) + ½ log(½ / ¼) = ½ log(4/3).
  EXPECT_NEAR(fewstep::class_histogram_kl(p, q, 0.0), 0.5 * std::log(4.0 / 3.0), 1e-14);
  // Smoothed with α = ½: p = (5.5, 5.5)/11, q = (3.5, 1.5)/5.
  const double expected = 0.5 * std::log(0.5 / 0.7) + 0.5 * std::log(0.5 / 0.3);
  EXPECT_NEAR(fewstep::class_histogram_kl(p, q), expected, 1e-14);
  EXPECT_NEAR(fewstep::class_histogram_kl(p, p * 3.0), 0.0, 1e-15);  // only proportions matter (α = 0)
  EXPECT_EQ(fewstep::class_histogram_kl(p, at::tensor({4.0, 0.0}, at::kDouble), 0.0),
            std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isfinite(fewstep::class_histogram_kl(p, at::tensor({4.0, 0.0}, at::kDouble))));
  // Reference classes with zero mass contribute nothing.
  EXPECT_NEAR(fewstep::class_histogram_kl(at::tensor({2.0, 0.0}, at::kDouble), at::tensor({1.0, 1.0}, at::kDouble), 0.0),
              std::log(2.0), 1e-14);
}

TEST(ClassHistogramKl, ErrorsNameTheArgument) {
  const at::Tensor p = at::ones({3}, at::kDouble);
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram_kl(p, at::ones({4}, at::kDouble)); })
                .find("same number of classes, got 3 and 4"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram_kl(-p, p); }).find("reference_counts"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram_kl(p, at::zeros({3})); }).find("sample_counts"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::class_histogram_kl(p, p, -1.0); }).find("pseudo_count"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Coupled error

TEST(CoupledError, ExactPerSampleRmsAndSummaries) {
  // Sample i differs from the reference by c_i in every coordinate: e_i = |c_i|.
  const at::Tensor ref = at::randn({5, 1, 4, 4}, gen(20), at::kFloat);
  const at::Tensor c = at::tensor({0.5, -2.0, 0.0, 1.0, 0.25}, at::kDouble);
  const at::Tensor x = ref.to(at::kDouble) + c.view({5, 1, 1, 1});
  const fewstep::CoupledError e = fewstep::coupled_error(x, ref);
  EXPECT_EQ(e.n, 5);
  EXPECT_EQ(e.per_sample.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::allclose(e.per_sample, c.abs(), 0, 1e-6));  // ref is float32
  EXPECT_NEAR(e.median, 0.5, 1e-6);
  EXPECT_NEAR(e.mean, (0.5 + 2.0 + 0.0 + 1.0 + 0.25) / 5, 1e-6);
  EXPECT_NEAR(e.rmse, std::sqrt((0.25 + 4.0 + 0.0 + 1.0 + 0.0625) / 5), 1e-6);
  EXPECT_NEAR(e.max, 2.0, 1e-6);
  // Even n: the median averages the two middle values; vectors need no image shape.
  const fewstep::CoupledError v =
      fewstep::coupled_error(at::tensor({1.0, 3.0, 0.0, 6.0}, at::kDouble).view({4, 1}), at::zeros({4, 1}, at::kDouble));
  EXPECT_DOUBLE_EQ(v.median, 2.0);
  EXPECT_DOUBLE_EQ(v.max, 6.0);
  // RMS over coordinates: a [1, 4] error of (1, 1, 1, 1) is 1, not 2.
  EXPECT_DOUBLE_EQ(fewstep::coupled_error(at::ones({1, 4}), at::zeros({1, 4})).mean, 1.0);
}

TEST(CoupledError, ErrorsNameTheArgument) {
  EXPECT_NE(value_error_message([] { fewstep::coupled_error(at::zeros({3, 2}), at::zeros({3, 3})); })
                .find("reference should have x's shape [3, 2], got [3, 3]"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { fewstep::coupled_error(at::zeros({0, 2}), at::zeros({0, 2})); }).find("x should"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Classifier network and trainer

fewstep::ClassifierConfig tiny_classifier() {
  fewstep::ClassifierConfig c;
  c.channels = {8, 8};
  c.convs_per_level = 1;
  c.groups = 4;
  c.feature_dim = 16;
  return c;
}

TEST(Classifier, ShapesMethodsAndParameterCount) {
  const fewstep::ClassifierConfig def;
  fewstep::ScriptNet net = fewstep::make_classifier(def, 0);
  EXPECT_EQ(fewstep::parameter_count(*net), 214634);  // as documented in nets/classifier.h
  EXPECT_EQ(fewstep::classifier_parameter_count(def), 214634);
  const fewstep::ClassifierConfig tiny = tiny_classifier();
  net = fewstep::make_classifier(tiny, 1);
  EXPECT_EQ(fewstep::parameter_count(*net), fewstep::classifier_parameter_count(tiny));
  const at::Tensor x = at::rand({3, 1, 28, 28}, gen(21)) * 2 - 1;
  const at::Tensor logits = net->forward({x}).toTensor();
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10}));
  const at::Tensor f = net->get_method("features")({x}).toTensor();
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_TRUE((f >= 0).all().item<bool>());  // post-ReLU
  EXPECT_TRUE(at::allclose(net->get_method("head")({f}).toTensor(), logits));
  // Same seed, same network; saved archives reload with the same methods.
  const std::string path = temp_dir() + "/classifier.pt";
  fewstep::save_network(*fewstep::make_classifier(tiny, 1), path);
  torch::jit::Module loaded = torch::jit::load(path);
  EXPECT_TRUE(at::equal(loaded.get_method("features")({x}).toTensor(), f));
  EXPECT_NE(value_error_message([] {
              fewstep::ClassifierConfig c;
              c.channels = {8, 12};
              fewstep::make_classifier(c, 0);
            }).find("ClassifierConfig.channels[1] = 12"),
            std::string::npos);
}

// Two separable synthetic classes (bright left half vs bright right half, with noise).
std::pair<at::Tensor, at::Tensor> toy_data(int64_t n, uint64_t seed) {
  const at::Tensor labels = at::arange(n, at::kLong).remainder(2);
  at::Tensor x = at::randn({n, 1, 28, 28}, gen(seed)) * 0.3 - 0.5;
  x.narrow(3, 0, 14).add_(labels.eq(0).to(at::kFloat).view({n, 1, 1, 1}));
  x.narrow(3, 14, 14).add_(labels.eq(1).to(at::kFloat).view({n, 1, 1, 1}));
  return {x, labels};
}

fewstep::ClassifierTrainerOptions toy_options() {
  fewstep::ClassifierTrainerOptions o;
  o.optimizer.schedule.lr = 3e-3;
  o.optimizer.schedule.total_steps = 12;
  o.flip = false;  // the toy classes are mirror images of each other
  o.seed = 3;
  return o;
}

TEST(ClassifierTrainer, LearnsSeparableClassesAndResumesExactly) {
  auto [x, y] = toy_data(128, 22);
  const fewstep::ClassifierConfig cfg = tiny_classifier();
  fewstep::ScriptNet net = fewstep::make_classifier(cfg, 4);
  auto data = std::make_shared<fewstep::ShuffledBatches>(x, y, 32, 5);
  fewstep::ClassifierTrainer full(net, data, toy_options());
  const double before = fewstep::score_classifier(*net, x, y).loss;
  full.train(12);
  const fewstep::ClassifierScore after = fewstep::score_classifier(*net, x, y);
  EXPECT_LT(after.loss, before);
  EXPECT_GT(after.accuracy, 0.9);

  // 5 steps, checkpoint, a fresh trainer resumes for 7: identical weights.
  const std::string ckpt = temp_dir() + "/classifier_ckpt.pt";
  fewstep::ScriptNet a = fewstep::make_classifier(cfg, 4);
  fewstep::ClassifierTrainer first(a, std::make_shared<fewstep::ShuffledBatches>(x, y, 32, 5), toy_options());
  first.train(5);
  first.save_checkpoint(ckpt);
  fewstep::ScriptNet b = fewstep::make_classifier(cfg, 99);
  fewstep::ClassifierTrainer second(b, std::make_shared<fewstep::ShuffledBatches>(x, y, 32, 5), toy_options());
  ASSERT_TRUE(second.resume(ckpt));
  EXPECT_EQ(second.step_count(), 5);
  second.train(7);
  const auto pa = net->parameters(), pb = b->parameters();
  auto ia = pa.begin();
  for (auto ib = pb.begin(); ib != pb.end(); ++ia, ++ib) EXPECT_TRUE(at::equal(*ia, *ib));

  // Labels are required.
  fewstep::ClassifierTrainer unlabelled(fewstep::make_classifier(cfg, 0),
                                        std::make_shared<fewstep::ShuffledBatches>(x, at::Tensor(), 32, 5),
                                        toy_options());
  EXPECT_NE(value_error_message([&] { unlabelled.step(); }).find("returned no labels"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// FmnistEvaluator (needs the Fashion-MNIST files; uses a small untrained classifier)

bool have_fashion_mnist() {
  return std::ifstream(fewstep::fashion_mnist_directory() + "/t10k-images-idx3-ubyte.gz").good() &&
         std::ifstream(fewstep::fashion_mnist_directory() + "/train-images-idx3-ubyte.gz").good();
}

TEST(FmnistEvaluator, TestSetAgainstItselfAndErrors) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  // The smallest classifier that keeps the interface: 10000 test images go through it twice.
  fewstep::ClassifierConfig micro;
  micro.channels = {4};
  micro.convs_per_level = 1;
  micro.groups = 2;
  micro.feature_dim = 16;
  const std::string path = temp_dir() + "/eval_classifier.pt";
  fewstep::save_network(*fewstep::make_classifier(micro, 7), path);
  fewstep::FmnistEvaluatorOptions options;
  options.cache_dir = temp_dir() + "/stats_cache";
  fewstep::FmnistEvaluator ev(path, options);
  EXPECT_FALSE(ev.loaded_from_cache());
  EXPECT_EQ(ev.feature_dim(), 16);
  EXPECT_EQ(ev.test_stats().count, 10000);
  EXPECT_DOUBLE_EQ(ev.test_class_counts().sum().item<double>(), 10000.0);
  EXPECT_GE(ev.test_accuracy(), 0.0);

  const fewstep::FashionMnist test = fewstep::load_fashion_mnist("test");
  const fewstep::FmnistReport all = ev.evaluate(test.images, /*floor=*/false);
  EXPECT_EQ(all.n, 10000);
  EXPECT_LT(all.fd, 1e-8);
  EXPECT_LT(all.class_kl, 1e-12);
  EXPECT_TRUE(std::isnan(all.fd_floor));

  // Floors: n train images against the test set; a sample of test images scores about the same.
  const at::Tensor sub = test.images.narrow(0, 0, 300);
  const fewstep::FmnistReport r = ev.evaluate(sub);
  EXPECT_EQ(r.n, 300);
  EXPECT_GT(r.fd, 0.0);
  EXPECT_GT(r.fd_floor, 0.0);
  EXPECT_DOUBLE_EQ(r.fd_floor, ev.fd_floor(300));  // cached
  EXPECT_LT(r.fd, 3.0 * r.fd_floor);
  EXPECT_GT(r.mean_confidence, 0.1);
  EXPECT_DOUBLE_EQ(r.class_counts.sum().item<double>(), 300.0);

  // A second evaluator reads the test statistics and floor features from the cache file.
  fewstep::FmnistEvaluator cached(path, options);
  EXPECT_TRUE(cached.loaded_from_cache());
  EXPECT_EQ(cached.cache_file(), ev.cache_file());
  EXPECT_TRUE(at::equal(cached.test_stats().cov, ev.test_stats().cov));
  EXPECT_DOUBLE_EQ(cached.test_accuracy(), ev.test_accuracy());
  EXPECT_DOUBLE_EQ(cached.fd_floor(300), r.fd_floor);
  EXPECT_DOUBLE_EQ(cached.evaluate(sub, false).fd, r.fd);

  // Out-of-range pixels are clamped to [-1, 1].
  const at::Tensor loud = sub * 5.0;
  EXPECT_DOUBLE_EQ(ev.evaluate(loud, false).fd, ev.evaluate(loud.clamp(-1, 1), false).fd);
  EXPECT_TRUE(at::equal(ev.features(loud), ev.features(loud.clamp(-1, 1))));

  EXPECT_NE(value_error_message([&] { ev.evaluate(at::zeros({4, 28, 28})); })
                .find("images should be a tensor [N, 1, 28, 28] with N >= 2"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { ev.evaluate(at::zeros({1, 1, 28, 28})); }).find("got [1, 1, 28, 28]"),
            std::string::npos);
  at::Tensor nan_images = at::zeros({3, 1, 28, 28});
  nan_images[1][0][3][3] = NAN;
  EXPECT_NE(value_error_message([&] { ev.evaluate(nan_images); }).find("NaN"), std::string::npos);
  EXPECT_NE(value_error_message([&] { ev.fd_floor(1); }).find("2 <= n <= 60000"), std::string::npos);
  EXPECT_NE(value_error_message([] { fewstep::FmnistEvaluator missing("/nonexistent/classifier.pt"); })
                .find("classifier_path '/nonexistent/classifier.pt' does not exist"),
            std::string::npos);
}

}  // namespace
