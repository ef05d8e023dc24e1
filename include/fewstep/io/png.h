/// @file io/png.h
/// @brief A minimal PNG writer and reader (8-bit) and sample grids for images in [−1, 1].
///
/// The encoder writes the PNG signature, an IHDR chunk, one IDAT chunk holding the zlib stream of
/// the scanlines (each with filter byte 0, "None") and an IEND chunk, every chunk with its CRC-32
/// (PNG specification, ISO/IEC 15948). No interlacing, palettes or ancillary chunks: enough for
/// sample grids, readable by every image viewer, Pillow and matplotlib.
///
/// The decoder reads what common encoders write: greyscale, RGB and palette images, with or without
/// alpha (dropped), at every bit depth PNG allows (1, 2, 4 bits for grey and palette, whose grey
/// levels are scaled to 0..255; 16-bit samples keep their high byte), every scanline filter (None,
/// Sub, Up, Average, Paeth; ISO/IEC 15948 §9), the image data split over several IDAT chunks. It
/// refuses interlaced images, naming the file.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace fewstep {

/// Encodes `height` rows of `width` pixels with `channels` interleaved 8-bit samples (1 = grey,
/// 3 = RGB), row-major, as a PNG file in memory. `level` is zlib's compression level (0–9).
/// ValueError naming the argument for empty sizes or another channel count.
std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t width, int64_t height, int64_t channels,
                                int level = 6);

/// ValueError naming `path` unless its extension is ".png" (any case): the writers here produce PNG
/// bytes only, so a name such as "grid.jpg" would mislabel them. Call it before a long computation
/// whose result goes to `path`.
void check_png_path(const std::string& path);

/// Writes a uint8 image [H, W] (grey), [H, W, 1] or [H, W, 3] to `path` (atomically: a reader never
/// sees a partial file). ValueError naming the tensor's shape/dtype, a path not ending in ".png"
/// (check_png_path) or a path that cannot be written.
void write_png(const std::string& path, const at::Tensor& image);

/// Reads a PNG file as uint8 [H, W, C] with C = 1 (greyscale) or 3 (RGB, palette); an alpha
/// channel is dropped. ValueError naming `path` for a file that is missing, not a PNG, damaged
/// (CRC, zlib) or uses a feature outside the list above.
at::Tensor read_png(const std::string& path);

/// Decodes PNG bytes (as read_png; `name` appears in error messages).
at::Tensor decode_png(const uint8_t* data, size_t size, const std::string& name = "PNG data");

/// Maps values in [low, high] to bytes: round((x − low)/(high − low)·255), clamped to [0, 255].
/// ValueError unless low < high (both finite).
at::Tensor to_uint8(const at::Tensor& x, double low = -1.0, double high = 1.0);

/// How image_grid lays out and scales images.
struct ImageGridOptions {
  int64_t nrow = 0;     ///< images per row (0: ⌈√N⌉)
  int64_t padding = 2;  ///< pixels between and around the images (before `scale`)
  int64_t scale = 1;    ///< every pixel of the grid becomes a scale × scale block (nearest neighbour)
  double low = -1.0;    ///< value drawn black
  double high = 1.0;    ///< value drawn white
  double pad_value = std::numeric_limits<double>::quiet_NaN();  ///< padding colour in image units; NaN: (low + high)/2
};

/// Tiles images [N, C, H, W] (C = 1 or 3; values in [low, high]) into one uint8 image
/// [scale·(rows·(H + p) + p), scale·(cols·(W + p) + p), C] with p = `padding` pixels of `pad_value`
/// between and around them, `cols` = `nrow` images per row, filled row by row; unused cells stay
/// pad-coloured. ValueError naming the offending option.
at::Tensor image_grid(const at::Tensor& images, const ImageGridOptions& options);

/// image_grid with values in [−1, 1] and `pad_value` in that scale (0 = mid grey), unscaled.
at::Tensor image_grid(const at::Tensor& images, int64_t nrow = 0, int64_t padding = 2, double pad_value = 0.0);

/// image_grid followed by write_png; the path is checked (check_png_path) before any work.
/// Returns the grid written ([H, W, C] uint8).
at::Tensor save_image_grid(const std::string& path, const at::Tensor& images, const ImageGridOptions& options = {});

}  // namespace fewstep
