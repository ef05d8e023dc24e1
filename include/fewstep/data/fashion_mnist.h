/// @file data/fashion_mnist.h
/// @brief Reader of the Fashion-MNIST IDX files shipped by Debian's `dataset-fashion-mnist`.
///
/// The package installs /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
/// (Xiao, Rasul & Vollgraf 2017: 60000 training and 10000 test 28×28 grey-level images of 10
/// garment classes, 6000/1000 per class). IDX format: a 4-byte big-endian magic 0x00 0x00 <type>
/// <ndim> (type 0x08 = unsigned byte), ndim big-endian uint32 sizes, then the row-major data.
/// The files are read through zlib (plain, uncompressed IDX files are accepted too).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

namespace fewstep {

/// Where the files are looked for: $FEWSTEP_FASHION_MNIST_DIR if set and non-empty, else
/// /usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist`).
std::string fashion_mnist_directory();

/// The ten class names, index = label ("T-shirt/top", "Trouser", ..., "Ankle boot").
const std::array<const char*, 10>& fashion_mnist_classes();

/// Reads one IDX file of unsigned bytes (gzip or plain) into a uint8 tensor with the header's
/// sizes. `expected_ndim` >= 0 also checks the number of dimensions. ValueError naming the path
/// if the file is missing, the magic is not an unsigned-byte IDX magic, or the data is
/// truncated or followed by trailing bytes.
at::Tensor read_idx_ubyte(const std::string& path, int64_t expected_ndim = -1);

struct FashionMnist {
  at::Tensor images;  // float32 [N, 1, 28, 28], pixel/127.5 − 1 ∈ [−1, 1]
  at::Tensor labels;  // int64 [N], in 0..9
};

/// Loads `split` "train" (60000) or "test" (10000, the t10k files) from `directory`
/// (empty: fashion_mnist_directory()). A missing file gives a ValueError naming it and the
/// package to install (`apt-get install dataset-fashion-mnist`) or the variable to set.
FashionMnist load_fashion_mnist(const std::string& split = "train", const std::string& directory = "");

}  // namespace fewstep
