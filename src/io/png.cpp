#include "fewstep/io/png.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/core/atomic_file.h"

namespace fewstep {

namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

// A chunk is length, type, data, CRC-32 over type + data.
void put_chunk(std::vector<uint8_t>& out, const char type[4], const uint8_t* data, size_t size) {
  FEWSTEP_CHECK(size <= 0x7fffffffu, "encode_png: chunk of ", size, " bytes exceeds PNG's 2^31 − 1 limit");
  put_u32(out, static_cast<uint32_t>(size));
  const size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  if (size > 0) out.insert(out.end(), data, data + size);
  const uLong crc = ::crc32(0L, out.data() + type_at, static_cast<uInt>(4 + size));
  put_u32(out, static_cast<uint32_t>(crc));
}

}  // namespace

std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t width, int64_t height, int64_t channels, int level) {
  FEWSTEP_CHECK_VALUE(width > 0 && height > 0 && width <= 0x7fffffff && height <= 0x7fffffff,
                      "encode_png: width and height must be in [1, 2^31 − 1], got ", width, " x ", height);
  FEWSTEP_CHECK_VALUE(channels == 1 || channels == 3, "encode_png: channels must be 1 (grey) or 3 (RGB), got ",
                      channels);
  FEWSTEP_CHECK_VALUE(level >= 0 && level <= 9, "encode_png: level must be in [0, 9], got ", level);
  FEWSTEP_CHECK_VALUE(pixels != nullptr, "encode_png: pixels must not be null");

  // Scanlines, each preceded by filter type 0 (the bytes as they are).
  const size_t row = static_cast<size_t>(width * channels);
  std::vector<uint8_t> raw((row + 1) * static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) {
    uint8_t* dst = raw.data() + static_cast<size_t>(y) * (row + 1);
    dst[0] = 0;
    std::copy(pixels + static_cast<size_t>(y) * row, pixels + static_cast<size_t>(y + 1) * row, dst + 1);
  }
  uLongf packed_size = ::compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  const int rc = ::compress2(packed.data(), &packed_size, raw.data(), static_cast<uLong>(raw.size()), level);
  FEWSTEP_CHECK(rc == Z_OK, "encode_png: zlib compress2 failed with code ", rc);

  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.push_back(8);                          // bit depth
  ihdr.push_back(channels == 1 ? 0 : 2);      // colour type: greyscale / truecolour
  ihdr.insert(ihdr.end(), {0, 0, 0});         // deflate, adaptive filtering, no interlace
  put_chunk(out, "IHDR", ihdr.data(), ihdr.size());
  put_chunk(out, "IDAT", packed.data(), packed_size);
  put_chunk(out, "IEND", nullptr, 0);
  return out;
}

void write_png(const std::string& path, const at::Tensor& image) {
  FEWSTEP_CHECK_VALUE(image.defined(), "write_png: image is undefined (path '", path, "')");
  FEWSTEP_CHECK_TYPE(image.scalar_type() == at::kByte, "write_png: image must be uint8, got ", image.scalar_type(),
                     " (use fewstep::to_uint8 for values in [−1, 1])");
  FEWSTEP_CHECK_VALUE(image.dim() == 2 || (image.dim() == 3 && (image.size(2) == 1 || image.size(2) == 3)),
                      "write_png: image must be [H, W], [H, W, 1] or [H, W, 3], got ", image.sizes());
  const at::Tensor pixels = image.to(at::kCPU).contiguous();
  const int64_t channels = image.dim() == 2 ? 1 : image.size(2);
  const std::vector<uint8_t> bytes = encode_png(pixels.data_ptr<uint8_t>(), image.size(1), image.size(0), channels);
  try {
    atomic_write_bytes(path, bytes.data(), bytes.size());
  } catch (const c10::Error& e) {
    FEWSTEP_CHECK_VALUE(false, "write_png: cannot write '", path, "': ", e.what_without_backtrace());
  }
}

at::Tensor to_uint8(const at::Tensor& x) {
  return ((x.to(at::kFloat) + 1.0) * 127.5).round().clamp(0, 255).to(at::kByte);
}

at::Tensor image_grid(const at::Tensor& images, int64_t nrow, int64_t padding, double pad_value) {
  FEWSTEP_CHECK_VALUE(images.defined() && images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3),
                      "image_grid: images must be [N, C, H, W] with C = 1 or 3, got ",
                      images.defined() ? images.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(images.size(0) > 0, "image_grid: images must hold at least one image");
  FEWSTEP_CHECK_VALUE(nrow >= 0, "image_grid: nrow must be >= 0, got ", nrow);
  FEWSTEP_CHECK_VALUE(padding >= 0, "image_grid: padding must be >= 0, got ", padding);
  FEWSTEP_CHECK_VALUE(std::isfinite(pad_value), "image_grid: pad_value must be finite, got ", pad_value);
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = nrow > 0 ? std::min(nrow, n) : static_cast<int64_t>(std::ceil(std::sqrt(double(n))));
  const int64_t rows = (n + cols - 1) / cols;
  const at::Tensor tiles = to_uint8(images.to(at::kCPU)).permute({0, 2, 3, 1});  // [N, H, W, C]
  const auto pad = to_uint8(at::full({}, pad_value)).item<uint8_t>();
  at::Tensor grid = at::full({rows * (h + padding) + padding, cols * (w + padding) + padding, c}, pad,
                             at::TensorOptions().dtype(at::kByte));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = padding + (i / cols) * (h + padding), x = padding + (i % cols) * (w + padding);
    grid.slice(0, y, y + h).slice(1, x, x + w).copy_(tiles[i]);
  }
  return grid;
}

}  // namespace fewstep
