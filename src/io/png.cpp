#include "fewstep/io/png.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>

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

namespace {

uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Paeth predictor (ISO/IEC 15948 §9.4).
uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return static_cast<uint8_t>(a);
  return static_cast<uint8_t>(pb <= pc ? b : c);
}

}  // namespace

at::Tensor decode_png(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  FEWSTEP_CHECK_VALUE(data != nullptr && size >= 8 && std::equal(kSignature, kSignature + 8, data),
                      "read_png: '", name, "' is not a PNG file (no PNG signature)");
  int64_t width = 0, height = 0;
  int depth = 0, colour = -1, interlace = 0;
  std::vector<uint8_t> palette, idat;
  bool ended = false;
  for (size_t at = 8; at < size && !ended;) {
    FEWSTEP_CHECK_VALUE(size - at >= 12, "read_png: '", name, "' is truncated (chunk header at byte ", at, ")");
    const uint32_t length = get_u32(data + at);
    FEWSTEP_CHECK_VALUE(length <= size - at - 12, "read_png: '", name, "' is truncated (chunk at byte ", at, ")");
    const std::string type(reinterpret_cast<const char*>(data + at + 4), 4);
    const uint8_t* body = data + at + 8;
    const uLong crc = ::crc32(0L, data + at + 4, static_cast<uInt>(4 + length));
    FEWSTEP_CHECK_VALUE(static_cast<uint32_t>(crc) == get_u32(body + length), "read_png: '", name,
                        "' is damaged (CRC mismatch in its ", type, " chunk)");
    if (type == "IHDR") {
      FEWSTEP_CHECK_VALUE(length == 13, "read_png: '", name, "' has an IHDR chunk of ", length, " bytes");
      width = get_u32(body);
      height = get_u32(body + 4);
      depth = body[8];
      colour = body[9];
      interlace = body[12];
    } else if (type == "PLTE") {
      palette.assign(body, body + length);
    } else if (type == "IDAT") {
      idat.insert(idat.end(), body, body + length);
    } else if (type == "IEND") {
      ended = true;
    }
    at += 12 + static_cast<size_t>(length);
  }
  FEWSTEP_CHECK_VALUE(colour >= 0, "read_png: '", name, "' has no IHDR chunk");
  FEWSTEP_CHECK_VALUE(width > 0 && height > 0, "read_png: '", name, "' has size ", width, " x ", height);
  FEWSTEP_CHECK_VALUE(interlace == 0, "read_png: '", name, "' is interlaced (Adam7); save it without interlacing");
  int64_t samples = 0;  // samples per pixel
  switch (colour) {
    case 0: samples = 1; break;  // grey
    case 2: samples = 3; break;  // RGB
    case 3: samples = 1; break;  // palette index
    case 4: samples = 2; break;  // grey + alpha
    case 6: samples = 4; break;  // RGBA
    default: FEWSTEP_CHECK_VALUE(false, "read_png: '", name, "' has the unknown colour type ", colour);
  }
  // Allowed combinations (ISO/IEC 15948 §11.2.2, table 11.1).
  const bool depth_ok = depth == 8 || depth == 16 ? colour != 3 || depth == 8
                                                  : (colour == 0 || colour == 3) && (depth == 1 || depth == 2 || depth == 4);
  FEWSTEP_CHECK_VALUE(depth_ok, "read_png: '", name, "' has bit depth ", depth, " with colour type ", colour,
                      ", which PNG does not allow");
  FEWSTEP_CHECK_VALUE(colour != 3 || (!palette.empty() && palette.size() % 3 == 0), "read_png: '", name,
                      "' is a palette image without a valid PLTE chunk");
  FEWSTEP_CHECK_VALUE(!idat.empty(), "read_png: '", name, "' has no image data (IDAT)");

  const size_t row = static_cast<size_t>((width * samples * depth + 7) / 8);  // bytes per scanline
  std::vector<uint8_t> raw((row + 1) * static_cast<size_t>(height));
  uLongf raw_size = static_cast<uLongf>(raw.size());
  const int rc = ::uncompress(raw.data(), &raw_size, idat.data(), static_cast<uLong>(idat.size()));
  FEWSTEP_CHECK_VALUE(rc == Z_OK && raw_size == raw.size(), "read_png: '", name,
                      "' is damaged (its image data does not inflate to ", raw.size(), " bytes; zlib code ", rc, ")");

  // Undo the scanline filters in place (§9.2): each byte is predicted from the corresponding bytes
  // of the pixel to its left (a), above (b) and above-left (c); below 8 bits the "pixel" is one byte.
  std::vector<uint8_t> unfiltered(row * static_cast<size_t>(height));
  const size_t bpp = static_cast<size_t>(std::max<int64_t>(1, samples * depth / 8));
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t filter = raw[static_cast<size_t>(y) * (row + 1)];
    const uint8_t* in = raw.data() + static_cast<size_t>(y) * (row + 1) + 1;
    uint8_t* out = unfiltered.data() + static_cast<size_t>(y) * row;
    const uint8_t* up = y > 0 ? out - row : nullptr;
    FEWSTEP_CHECK_VALUE(filter <= 4, "read_png: '", name, "' is damaged (filter type ", int(filter), " in row ", y,
                        ")");
    for (size_t i = 0; i < row; ++i) {
      const int a = i >= bpp ? out[i - bpp] : 0, b = up ? up[i] : 0, c = (up && i >= bpp) ? up[i - bpp] : 0;
      int predicted = 0;
      switch (filter) {
        case 1: predicted = a; break;
        case 2: predicted = b; break;
        case 3: predicted = (a + b) / 2; break;
        case 4: predicted = paeth(a, b, c); break;
        default: break;
      }
      out[i] = static_cast<uint8_t>(in[i] + predicted);
    }
  }
  // Sample k of row y as 8 bits: sub-byte samples are packed from the high bits and scaled to
  // 0..255 (grey) or kept as indices (palette); 16-bit samples keep their high byte.
  auto sample = [&](int64_t y, int64_t k) -> int {
    const uint8_t* r = unfiltered.data() + static_cast<size_t>(y) * row;
    if (depth == 8) return r[k];
    if (depth == 16) return r[2 * k];
    const int64_t bit = k * depth;
    const int v = (r[bit / 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1);
    return colour == 3 ? v : v * 255 / ((1 << depth) - 1);
  };
  const int64_t channels = (colour == 0 || colour == 4) ? 1 : 3;
  at::Tensor image = at::empty({height, width, channels}, at::TensorOptions().dtype(at::kByte));
  uint8_t* dst = image.data_ptr<uint8_t>();
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x, dst += channels) {
      if (colour == 3) {
        const size_t k = static_cast<size_t>(sample(y, x));
        FEWSTEP_CHECK_VALUE(3 * k + 2 < palette.size(), "read_png: '", name, "' uses palette entry ", k, " of ",
                            palette.size() / 3);
        std::copy(palette.data() + 3 * k, palette.data() + 3 * k + 3, dst);
      } else {
        for (int64_t ch = 0; ch < channels; ++ch) dst[ch] = static_cast<uint8_t>(sample(y, x * samples + ch));
      }
    }
  }
  return image;
}

at::Tensor read_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FEWSTEP_CHECK_VALUE(in.good(), "read_png: cannot open '", path, "'");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_png(bytes.data(), bytes.size(), path);
}

void check_png_path(const std::string& path) {
  const size_t dot = path.find_last_of('.');
  const size_t slash = path.find_last_of('/');
  std::string ext = dot == std::string::npos || (slash != std::string::npos && dot < slash) ? "" : path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  FEWSTEP_CHECK_VALUE(ext == ".png", "image path '", path, "' should end in .png (fewstep writes PNG only), got ",
                      ext.empty() ? std::string("no extension") : "'" + path.substr(dot) + "'");
}

void write_png(const std::string& path, const at::Tensor& image) {
  check_png_path(path);
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

at::Tensor to_uint8(const at::Tensor& x, double low, double high) {
  FEWSTEP_CHECK_VALUE(std::isfinite(low) && std::isfinite(high) && low < high,
                      "to_uint8: the value range must be finite with low < high, got [", low, ", ", high, "]");
  return ((x.to(at::kFloat) - low) * (255.0 / (high - low))).round().clamp(0, 255).to(at::kByte);
}

at::Tensor image_grid(const at::Tensor& images, const ImageGridOptions& o) {
  FEWSTEP_CHECK_VALUE(images.defined() && images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3),
                      "image_grid: images must be [N, C, H, W] with C = 1 or 3, got ",
                      images.defined() ? images.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(images.size(0) > 0, "image_grid: images must hold at least one image");
  FEWSTEP_CHECK_VALUE(o.nrow >= 0, "image_grid: nrow must be >= 0, got ", o.nrow);
  FEWSTEP_CHECK_VALUE(o.padding >= 0, "image_grid: padding must be >= 0, got ", o.padding);
  FEWSTEP_CHECK_VALUE(o.scale >= 1 && o.scale <= 64, "image_grid: scale must be an integer in [1, 64], got ",
                      o.scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.low) && std::isfinite(o.high) && o.low < o.high,
                      "image_grid: value_range must be finite with low < high, got (", o.low, ", ", o.high, ")");
  FEWSTEP_CHECK_VALUE(!std::isinf(o.pad_value), "image_grid: pad_value must be finite, got ", o.pad_value);
  const double pad_value = std::isnan(o.pad_value) ? 0.5 * (o.low + o.high) : o.pad_value;
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3), p = o.padding;
  const int64_t cols = o.nrow > 0 ? std::min(o.nrow, n) : static_cast<int64_t>(std::ceil(std::sqrt(double(n))));
  const int64_t rows = (n + cols - 1) / cols;
  const at::Tensor tiles = to_uint8(images.to(at::kCPU), o.low, o.high).permute({0, 2, 3, 1});  // [N, H, W, C]
  const auto pad = to_uint8(at::full({}, pad_value, at::kDouble), o.low, o.high).item<uint8_t>();
  at::Tensor grid = at::full({rows * (h + p) + p, cols * (w + p) + p, c}, pad, at::TensorOptions().dtype(at::kByte));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = p + (i / cols) * (h + p), x = p + (i % cols) * (w + p);
    grid.slice(0, y, y + h).slice(1, x, x + w).copy_(tiles[i]);
  }
  if (o.scale > 1) grid = grid.repeat_interleave(o.scale, 0).repeat_interleave(o.scale, 1).contiguous();
  return grid;
}

at::Tensor image_grid(const at::Tensor& images, int64_t nrow, int64_t padding, double pad_value) {
  ImageGridOptions o;
  o.nrow = nrow;
  o.padding = padding;
  o.pad_value = pad_value;
  FEWSTEP_CHECK_VALUE(std::isfinite(pad_value), "image_grid: pad_value must be finite, got ", pad_value);
  return image_grid(images, o);
}

at::Tensor save_image_grid(const std::string& path, const at::Tensor& images, const ImageGridOptions& options) {
  check_png_path(path);
  at::Tensor grid = image_grid(images, options);
  write_png(path, grid);
  return grid;
}

}  // namespace fewstep
