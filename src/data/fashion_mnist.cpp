#include "fewstep/data/fashion_mnist.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

constexpr const char* kDefaultDirectory = "/usr/share/datasets/fashion-mnist";
constexpr const char* kInstallHint =
    "install Debian's package with `apt-get install dataset-fashion-mnist`, or point FEWSTEP_FASHION_MNIST_DIR "
    "(or the `directory` argument) at a folder holding the IDX files";

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly n bytes; returns how many were read before end of file. Errors name the path.
size_t read_bytes(gzFile f, uint8_t* out, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    // gzread takes an unsigned count; chunks keep it far below its limit.
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, size_t{1} << 28));
    const int got = gzread(f, out + done, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      FEWSTEP_CHECK_VALUE(false, "read_idx_ubyte: path '", path,
                          "' is not a readable gzip/IDX file: ", msg != nullptr ? msg : "unknown zlib error");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

uint32_t big_endian(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

bool file_exists(const std::string& path) { return std::ifstream(path, std::ios::binary).good(); }

}  // namespace

std::string fashion_mnist_directory() {
  const char* env = std::getenv("FEWSTEP_FASHION_MNIST_DIR");
  return env != nullptr && env[0] != '\0' ? std::string(env) : std::string(kDefaultDirectory);
}

const std::array<const char*, 10>& fashion_mnist_classes() {
  static const std::array<const char*, 10> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

at::Tensor read_idx_ubyte(const std::string& path, int64_t expected_ndim) {
  FEWSTEP_CHECK_VALUE(file_exists(path), "read_idx_ubyte: path '", path, "' does not exist or is unreadable");
  GzFile f(gzopen(path.c_str(), "rb"));
  FEWSTEP_CHECK_VALUE(f != nullptr, "read_idx_ubyte: cannot open path '", path, "' with zlib");
  gzbuffer(f.get(), 1 << 20);

  uint8_t magic[4];
  FEWSTEP_CHECK_VALUE(read_bytes(f.get(), magic, 4, path) == 4, "read_idx_ubyte: path '", path,
                      "' is shorter than the 4-byte IDX magic");
  // 0x00 0x00 0x08 <ndim>: two zero bytes, type 0x08 (unsigned byte), then the dimension count.
  FEWSTEP_CHECK_VALUE(magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08 && magic[3] >= 1 && magic[3] <= 4,
                      "read_idx_ubyte: path '", path, "' has IDX magic ", hex32(big_endian(magic)),
                      ", expected 0x0000080N (unsigned bytes, N = 1..4 dimensions)");
  const int64_t ndim = magic[3];
  FEWSTEP_CHECK_VALUE(expected_ndim < 0 || ndim == expected_ndim, "read_idx_ubyte: path '", path, "' holds a ", ndim,
                      "-D array, expected ", expected_ndim, "-D");

  std::vector<uint8_t> header(static_cast<size_t>(4 * ndim));
  FEWSTEP_CHECK_VALUE(read_bytes(f.get(), header.data(), header.size(), path) == header.size(),
                      "read_idx_ubyte: path '", path, "' is truncated inside its header");
  std::vector<int64_t> sizes;
  int64_t numel = 1;
  for (int64_t i = 0; i < ndim; ++i) {
    const int64_t n = big_endian(header.data() + 4 * i);
    // Bounded so a corrupt header cannot ask for terabytes: Fashion-MNIST's largest is 60000 × 28 × 28.
    FEWSTEP_CHECK_VALUE(n >= 1 && n <= (int64_t{1} << 31) && numel <= (int64_t{1} << 34) / n, "read_idx_ubyte: path '",
                        path, "' has implausible size ", n, " in dimension ", i);
    sizes.push_back(n);
    numel *= n;
  }

  at::Tensor out = at::empty(sizes, at::kByte);
  const size_t got = read_bytes(f.get(), out.data_ptr<uint8_t>(), static_cast<size_t>(numel), path);
  FEWSTEP_CHECK_VALUE(got == static_cast<size_t>(numel), "read_idx_ubyte: path '", path, "' is truncated: header ",
                      "announces ", numel, " bytes of data, found ", got);
  uint8_t extra;
  FEWSTEP_CHECK_VALUE(read_bytes(f.get(), &extra, 1, path) == 0, "read_idx_ubyte: path '", path,
                      "' has trailing bytes after the ", numel, " announced by its header");
  return out;
}

FashionMnist load_fashion_mnist(const std::string& split, const std::string& directory) {
  FEWSTEP_CHECK_VALUE(split == "train" || split == "test", "load_fashion_mnist: split must be 'train' or 'test', got '",
                      split, "'");
  const std::string dir = directory.empty() ? fashion_mnist_directory() : directory;
  const std::string stem = split == "train" ? "train" : "t10k";
  const std::string image_path = dir + "/" + stem + "-images-idx3-ubyte.gz";
  const std::string label_path = dir + "/" + stem + "-labels-idx1-ubyte.gz";
  for (const std::string& path : {image_path, label_path}) {
    FEWSTEP_CHECK_VALUE(file_exists(path), "load_fashion_mnist: missing file '", path, "' (split '", split,
                        "', directory '", dir, "'); ", kInstallHint);
  }

  const at::Tensor images = read_idx_ubyte(image_path, 3);
  const at::Tensor labels = read_idx_ubyte(label_path, 1);
  FEWSTEP_CHECK_VALUE(images.size(1) == 28 && images.size(2) == 28, "load_fashion_mnist: path '", image_path,
                      "' holds images of ", images.size(1), "x", images.size(2), ", expected 28x28");
  FEWSTEP_CHECK_VALUE(images.size(0) == labels.size(0), "load_fashion_mnist: path '", image_path, "' holds ",
                      images.size(0), " images but '", label_path, "' holds ", labels.size(0), " labels");
  const int64_t max_label = labels.max().item<uint8_t>();
  FEWSTEP_CHECK_VALUE(max_label <= 9, "load_fashion_mnist: path '", label_path, "' holds label ", max_label,
                      ", expected 0..9");

  FashionMnist out;
  // 0 ↦ −1 and 255 ↦ +1 exactly.
  out.images = images.to(at::kFloat).div_(127.5).sub_(1.0).unsqueeze(1).contiguous();
  out.labels = labels.to(at::kLong);
  return out;
}

}  // namespace fewstep
