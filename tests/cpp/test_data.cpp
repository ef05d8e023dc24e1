// Tests of the data layer: the Fashion-MNIST IDX reader (real files, hand-made files, corrupt
// files, missing files), the shuffled batch iterator and the Gaussian-mixture data source.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/gaussian_mixture.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using fewstep::BatchSource;

using fewstep::testing::value_error_message;

std::string temp_dir(const std::string& name) { return fewstep::testing::scratch_dir("data", name); }

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

// An IDX file of unsigned bytes, gzip-compressed with zlib.
void write_idx_gz(const std::string& path, uint32_t magic, const std::vector<uint32_t>& sizes,
                  const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  put_be32(bytes, magic);
  for (uint32_t s : sizes) put_be32(bytes, s);
  bytes.insert(bytes.end(), data.begin(), data.end());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}


bool have_real_data() { return fs::exists(fewstep::fashion_mnist_directory() + "/train-images-idx3-ubyte.gz"); }

// ---------------------------------------------------------------------------------------------
// The real files of Debian's dataset-fashion-mnist

void check_split(const std::string& split, int64_t n) {
  if (!have_real_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fewstep::FashionMnist d = fewstep::load_fashion_mnist(split);
  ASSERT_EQ(d.images.sizes(), (std::vector<int64_t>{n, 1, 28, 28}));
  EXPECT_EQ(d.images.scalar_type(), at::kFloat);
  ASSERT_EQ(d.labels.sizes(), (std::vector<int64_t>{n}));
  EXPECT_EQ(d.labels.scalar_type(), at::kLong);
  // 0 and 255 both occur, and map to exactly −1 and +1.
  EXPECT_EQ(d.images.min().item<float>(), -1.0f);
  EXPECT_EQ(d.images.max().item<float>(), 1.0f);
  EXPECT_EQ(d.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(d.labels.max().item<int64_t>(), 9);
  const at::Tensor counts = at::bincount(d.labels, {}, 10);
  EXPECT_TRUE(at::equal(counts, at::full({10}, n / 10, at::kLong))) << counts;
  // Pixel values are k/127.5 − 1 for integers k.
  const at::Tensor k = (d.images[0] + 1.0) * 127.5;
  EXPECT_LT((k - k.round()).abs().max().item<float>(), 1e-4f);
}

TEST(FashionMnist, TrainSplit) { check_split("train", 60000); }
TEST(FashionMnist, TestSplit) { check_split("test", 10000); }

TEST(FashionMnist, MissingDirectoryNamesFileAndPackage) {
  const std::string msg =
      value_error_message([] { fewstep::load_fashion_mnist("train", "/nonexistent/fewstep-fmnist"); });
  EXPECT_NE(msg.find("/nonexistent/fewstep-fmnist/train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("apt-get install dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("FEWSTEP_FASHION_MNIST_DIR"), std::string::npos) << msg;
}

TEST(FashionMnist, BadSplitIsRejected) {
  const std::string msg = value_error_message([] { fewstep::load_fashion_mnist("validation"); });
  EXPECT_NE(msg.find("'validation'"), std::string::npos) << msg;
}

TEST(FashionMnist, DirectoryFromEnvironment) {
  const char* old = std::getenv("FEWSTEP_FASHION_MNIST_DIR");
  const std::string saved = old ? old : "";
  ::setenv("FEWSTEP_FASHION_MNIST_DIR", "/some/where", 1);
  EXPECT_EQ(fewstep::fashion_mnist_directory(), "/some/where");
  ::setenv("FEWSTEP_FASHION_MNIST_DIR", "", 1);
  EXPECT_EQ(fewstep::fashion_mnist_directory(), "/usr/share/datasets/fashion-mnist");
  if (old) {
    ::setenv("FEWSTEP_FASHION_MNIST_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("FEWSTEP_FASHION_MNIST_DIR");
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-made IDX files

TEST(FashionMnist, TinyFilesRoundTrip) {
  const std::string dir = temp_dir("tiny");
  const int n = 5;
  std::vector<uint8_t> pixels(n * 28 * 28), labels(n);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37) % 256);
  for (int i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>((3 * i + 1) % 10);
  write_idx_gz(dir + "/t10k-images-idx3-ubyte.gz", 0x00000803, {n, 28, 28}, pixels);
  write_idx_gz(dir + "/t10k-labels-idx1-ubyte.gz", 0x00000801, {n}, labels);

  const fewstep::FashionMnist d = fewstep::load_fashion_mnist("test", dir);
  const at::Tensor raw = at::tensor(std::vector<int64_t>(pixels.begin(), pixels.end())).view({n, 1, 28, 28});
  EXPECT_TRUE(at::allclose(d.images, raw.to(at::kFloat) / 127.5 - 1.0, 0.0, 1e-6));
  EXPECT_TRUE(at::equal(d.labels, at::tensor(std::vector<int64_t>(labels.begin(), labels.end()))));

  // The raw reader keeps the header's shape and the bytes.
  const at::Tensor idx = fewstep::read_idx_ubyte(dir + "/t10k-images-idx3-ubyte.gz", 3);
  EXPECT_EQ(idx.sizes(), (std::vector<int64_t>{n, 28, 28}));
  EXPECT_TRUE(at::equal(idx.to(at::kLong).view({n, 1, 28, 28}), raw));
}

TEST(FashionMnist, CorruptMagicIsRejected) {
  const std::string dir = temp_dir("magic");
  // Type byte 0x09 (signed byte) instead of 0x08.
  write_idx_gz(dir + "/bad.gz", 0x00000903, {1, 28, 28}, std::vector<uint8_t>(784));
  std::string msg = value_error_message([&] { fewstep::read_idx_ubyte(dir + "/bad.gz"); });
  EXPECT_NE(msg.find("magic 0x00000903"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir + "/bad.gz"), std::string::npos) << msg;
  // Wrong dimension count for an image file.
  write_idx_gz(dir + "/flat.gz", 0x00000801, {784}, std::vector<uint8_t>(784));
  msg = value_error_message([&] { fewstep::read_idx_ubyte(dir + "/flat.gz", 3); });
  EXPECT_NE(msg.find("expected 3-D"), std::string::npos) << msg;
}

TEST(FashionMnist, TruncatedAndTrailingDataAreRejected) {
  const std::string dir = temp_dir("size");
  write_idx_gz(dir + "/short.gz", 0x00000803, {2, 28, 28}, std::vector<uint8_t>(784 + 100));
  std::string msg = value_error_message([&] { fewstep::read_idx_ubyte(dir + "/short.gz"); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  write_idx_gz(dir + "/long.gz", 0x00000801, {3}, std::vector<uint8_t>(4));
  msg = value_error_message([&] { fewstep::read_idx_ubyte(dir + "/long.gz"); });
  EXPECT_NE(msg.find("trailing"), std::string::npos) << msg;
}

TEST(FashionMnist, ImageAndLabelCountsMustAgree) {
  const std::string dir = temp_dir("count");
  write_idx_gz(dir + "/train-images-idx3-ubyte.gz", 0x00000803, {2, 28, 28}, std::vector<uint8_t>(2 * 784));
  write_idx_gz(dir + "/train-labels-idx1-ubyte.gz", 0x00000801, {3}, std::vector<uint8_t>(3));
  const std::string msg = value_error_message([&] { fewstep::load_fashion_mnist("train", dir); });
  EXPECT_NE(msg.find("holds 2 images"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// ShuffledBatches

TEST(ShuffledBatches, EachEpochVisitsEveryRowOnceAndReshuffles) {
  const int64_t n = 10, b = 3;
  fewstep::ShuffledBatches it(at::arange(n, at::kFloat).view({n, 1}), at::arange(n, at::kLong), b, /*seed=*/7);
  EXPECT_EQ(it.batches_per_epoch(), 3);
  std::vector<at::Tensor> epochs[2];
  for (int e = 0; e < 2; ++e) {
    for (int i = 0; i < 3; ++i) {
      const fewstep::Batch batch = it.next();
      ASSERT_EQ(batch.x.sizes(), (std::vector<int64_t>{b, 1}));
      EXPECT_TRUE(at::equal(batch.x.view({b}).to(at::kLong), batch.labels));
      epochs[e].push_back(batch.labels);
    }
    const at::Tensor seen = at::cat(epochs[e]);
    // 9 distinct rows of 10: the last incomplete batch is dropped.
    EXPECT_EQ(std::get<0>(at::_unique(seen)).numel(), 9);
    EXPECT_TRUE(at::equal(seen, it.permutation(e).narrow(0, 0, 9)));
  }
  EXPECT_FALSE(at::equal(it.permutation(0), it.permutation(1)));
  EXPECT_EQ(it.epoch(), 1);
}

TEST(ShuffledBatches, StateReplaysTheSameBatches) {
  const at::Tensor x = at::randn({50, 2});
  fewstep::ShuffledBatches a(x, {}, 8, 3), b(x, {}, 8, 3);
  for (int i = 0; i < 9; ++i) a.next();  // into the second epoch (6 batches per epoch)
  b.load_state(a.state());
  EXPECT_EQ(b.epoch(), 1);
  EXPECT_EQ(b.batch_index(), 3);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(at::equal(a.next().x, b.next().x)) << "batch " << i;
  // A different seed gives a different order.
  fewstep::ShuffledBatches c(x, {}, 8, 4);
  EXPECT_FALSE(at::equal(c.permutation(0), a.permutation(0)));
}

TEST(ShuffledBatches, BadArgumentsAreNamed) {
  EXPECT_NE(value_error_message([] {
              fewstep::ShuffledBatches(at::zeros({4, 2}), {}, 5, 0);
            }).find("batch_size"),
            std::string::npos);
  EXPECT_NE(value_error_message([] {
              fewstep::ShuffledBatches(at::zeros({4, 2}), at::zeros({3}, at::kLong), 2, 0);
            }).find("labels"),
            std::string::npos);
  fewstep::ShuffledBatches it(at::zeros({4, 2}), {}, 2, 0);
  EXPECT_NE(value_error_message([&] {
              it.load_state({{"position", at::tensor(std::vector<int64_t>{0, 9})}});
            }).find("out of range"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// MixtureData

TEST(MixtureData, BatchesAndStateRoundTrip) {
  auto gmm = fewstep::GaussianMixture::random(3, 4, /*seed=*/1);
  fewstep::MixtureData a(gmm, 16, /*seed=*/5), b(gmm, 16, /*seed=*/5);
  const fewstep::Batch first = a.next();
  EXPECT_EQ(first.x.sizes(), (std::vector<int64_t>{16, 3}));
  EXPECT_EQ(first.x.scalar_type(), at::kFloat);
  EXPECT_EQ(first.labels.sizes(), (std::vector<int64_t>{16}));
  EXPECT_TRUE(at::equal(first.x, b.next().x));  // same seed, same draws
  a.next();
  const BatchSource::State s = a.state();
  const at::Tensor expected = a.next().x;
  b.load_state(s);
  EXPECT_TRUE(at::equal(b.next().x, expected));
  EXPECT_NE(value_error_message([] { fewstep::MixtureData(nullptr, 4, uint64_t{0}); }).find("mixture"),
            std::string::npos);
}

}  // namespace
