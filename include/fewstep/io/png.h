/// @file io/png.h
/// @brief A minimal PNG writer (8-bit greyscale or RGB) and sample grids for images in [−1, 1].
///
/// The encoder writes the PNG signature, an IHDR chunk, one IDAT chunk holding the zlib stream of
/// the scanlines (each with filter byte 0, "None") and an IEND chunk, every chunk with its CRC-32
/// (PNG specification, ISO/IEC 15948). No interlacing, palettes or ancillary chunks: enough for
/// sample grids, readable by every image viewer, Pillow and matplotlib.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fewstep {

/// Encodes `height` rows of `width` pixels with `channels` interleaved 8-bit samples (1 = grey,
/// 3 = RGB), row-major, as a PNG file in memory. `level` is zlib's compression level (0–9).
/// ValueError naming the argument for empty sizes or another channel count.
std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t width, int64_t height, int64_t channels,
                                int level = 6);

/// Writes a uint8 image [H, W] (grey), [H, W, 1] or [H, W, 3] to `path` (atomically: a reader never
/// sees a partial file). ValueError naming the tensor's shape/dtype or the path that cannot be written.
void write_png(const std::string& path, const at::Tensor& image);

/// Maps values in [−1, 1] to bytes: round((x + 1)·127.5), clamped to [0, 255].
at::Tensor to_uint8(const at::Tensor& x);

/// Tiles images [N, C, H, W] (C = 1 or 3; values in [−1, 1]) into one uint8 image
/// [rows·(H + p) + p, cols·(W + p) + p, C] with `padding` p pixels of `pad_value` (in the same
/// [−1, 1] scale; 0 = mid grey) between and around them, `cols` = `nrow` images per row
/// (0: ⌈√N⌉), filled row by row; unused cells stay pad-coloured.
at::Tensor image_grid(const at::Tensor& images, int64_t nrow = 0, int64_t padding = 2, double pad_value = 0.0);

}  // namespace fewstep
