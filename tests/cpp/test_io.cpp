// io/: PNG round trips and the decoder's scanline filters, image grids (layout, scale, value range),
// the .png-only path check, .npy decoding; data/image_files.h on folders written here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fewstep/data/image_files.h"
#include "fewstep/io/npz.h"
#include "fewstep/io/png.h"
#include "test_util.h"

namespace {

using fewstep::testing::scratch_dir;
using fewstep::testing::value_error_message;

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void put_chunk(std::vector<uint8_t>& out, const std::string& type, const std::vector<uint8_t>& body) {
  put_u32(out, static_cast<uint32_t>(body.size()));
  std::vector<uint8_t> typed(type.begin(), type.end());
  typed.insert(typed.end(), body.begin(), body.end());
  out.insert(out.end(), typed.begin(), typed.end());
  put_u32(out, static_cast<uint32_t>(::crc32(0L, typed.data(), static_cast<uInt>(typed.size()))));
}

// The forward PNG filters (ISO/IEC 15948 §9.2), written here independently of the decoder.
std::vector<uint8_t> filter_rows(const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int64_t bpp,
                                 const std::vector<int>& filters) {
  const int64_t row = width * bpp;
  std::vector<uint8_t> out;
  for (int64_t y = 0; y < height; ++y) {
    const int f = filters[static_cast<size_t>(y) % filters.size()];
    out.push_back(static_cast<uint8_t>(f));
    for (int64_t i = 0; i < row; ++i) {
      auto at = [&](int64_t yy, int64_t ii) -> int { return yy < 0 || ii < 0 ? 0 : pixels[yy * row + ii]; };
      const int x = at(y, i), a = at(y, i - bpp), b = at(y - 1, i), c = at(y - 1, i - bpp);
      int pred = 0;
      if (f == 1) pred = a;
      if (f == 2) pred = b;
      if (f == 3) pred = (a + b) / 2;
      if (f == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
      }
      out.push_back(static_cast<uint8_t>((x - pred) & 0xff));
    }
  }
  return out;
}

// A PNG of `pixels` with the given colour type, every row filtered by filters[y % size], the
// compressed stream split over two IDAT chunks.
// `pixels` holds the packed scanlines (row_bytes each), `bpp` the filter's byte distance.
std::vector<uint8_t> make_png(const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int colour,
                              int64_t bpp, const std::vector<int>& filters, const std::vector<uint8_t>& palette = {},
                              int depth = 8, int64_t row_bytes = 0) {
  const int64_t row = row_bytes > 0 ? row_bytes : width * bpp;
  const std::vector<uint8_t> raw = filter_rows(pixels, row / bpp, height, bpp, filters);
  uLongf size = ::compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> packed(size);
  EXPECT_EQ(::compress2(packed.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 9), Z_OK);
  packed.resize(size);
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {static_cast<uint8_t>(depth), static_cast<uint8_t>(colour), 0, 0, 0});
  put_chunk(out, "IHDR", ihdr);
  if (!palette.empty()) put_chunk(out, "PLTE", palette);
  const size_t half = packed.size() / 2;
  put_chunk(out, "IDAT", std::vector<uint8_t>(packed.begin(), packed.begin() + half));
  put_chunk(out, "IDAT", std::vector<uint8_t>(packed.begin() + half, packed.end()));
  put_chunk(out, "IEND", {});
  return out;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  at::Tensor t = at::randint(0, 256, {static_cast<int64_t>(n)}, fewstep::testing::generator(seed),
                             at::TensorOptions().dtype(at::kLong))
                     .to(at::kByte);
  return std::vector<uint8_t>(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + n);
}

at::Tensor as_image(const std::vector<uint8_t>& pixels, int64_t h, int64_t w, int64_t c) {
  return at::tensor(std::vector<int64_t>(pixels.begin(), pixels.end())).to(at::kByte).view({h, w, c});
}

TEST(Png, EveryFilterTypeDecodesToThePixels) {
  const int64_t w = 7, h = 10;
  for (int colour : {0, 2, 4, 6}) {
    const int64_t bpp = colour == 0 ? 1 : colour == 2 ? 3 : colour == 4 ? 2 : 4;
    const std::vector<uint8_t> pixels = random_bytes(static_cast<size_t>(w * h * bpp), 10 + colour);
    const std::vector<uint8_t> png = make_png(pixels, w, h, colour, bpp, {0, 1, 2, 3, 4});
    const at::Tensor got = fewstep::decode_png(png.data(), png.size(), "test");
    at::Tensor want = as_image(pixels, h, w, bpp);
    if (colour == 4 || colour == 6) want = want.slice(2, 0, bpp - 1);  // alpha dropped
    EXPECT_TRUE(at::equal(got, want)) << "colour type " << colour;
  }
}

TEST(Png, PaletteImagesBecomeRgb) {
  const std::vector<uint8_t> palette = {0, 0, 0, 255, 0, 0, 0, 128, 255};
  const std::vector<uint8_t> index = {0, 1, 2, 2, 1, 0};
  const std::vector<uint8_t> png = make_png(index, 3, 2, 3, 1, {4, 3});
  const std::vector<uint8_t> with_palette = make_png(index, 3, 2, 3, 1, {4, 3}, palette);
  const at::Tensor got = fewstep::decode_png(with_palette.data(), with_palette.size(), "test");
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(got[0][1][0].item<int>(), 255);
  EXPECT_EQ(got[0][2][2].item<int>(), 255);
  EXPECT_EQ(got[0][2][1].item<int>(), 128);
  EXPECT_NE(value_error_message([&] { fewstep::decode_png(png.data(), png.size(), "nopal.png"); }).find("PLTE"),
            std::string::npos);
}

TEST(Png, SubByteAndSixteenBitDepths) {
  // 2-bit grey, 5 x 3: levels 0..3 scale to 0, 85, 170, 255; rows of ceil(10 / 8) = 2 bytes.
  const std::vector<int> levels = {0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 3, 3, 3, 3, 2};
  std::vector<uint8_t> packed(6, 0);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 5; ++x) packed[y * 2 + (2 * x) / 8] |= static_cast<uint8_t>(levels[y * 5 + x] << (6 - (2 * x) % 8));
  }
  const std::vector<uint8_t> grey = make_png(packed, 5, 3, 0, 1, {0, 4, 3}, {}, 2, 2);
  const at::Tensor g = fewstep::decode_png(grey.data(), grey.size(), "grey2");
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{3, 5, 1}));
  for (int k = 0; k < 15; ++k) EXPECT_EQ(g.view(-1)[k].item<int>(), 85 * levels[k]) << k;
  // 4-bit palette, 3 x 1: indices 2, 0, 1.
  const std::vector<uint8_t> palette = {10, 20, 30, 40, 50, 60, 70, 80, 90};
  const std::vector<uint8_t> pal = make_png({0x20, 0x10}, 3, 1, 3, 1, {1}, palette, 4, 2);
  const at::Tensor p = fewstep::decode_png(pal.data(), pal.size(), "pal4");
  EXPECT_TRUE(at::equal(p.view(-1), at::tensor({70, 80, 90, 10, 20, 30, 40, 50, 60}).to(at::kByte)));
  // 16-bit RGB, 2 x 2: the high byte of each big-endian sample; the filters work on 6-byte pixels.
  const std::vector<uint8_t> wide = random_bytes(2 * 2 * 6, 7);
  const std::vector<uint8_t> rgb16 = make_png(wide, 2, 2, 2, 6, {2, 4}, {}, 16);
  const at::Tensor w = fewstep::decode_png(rgb16.data(), rgb16.size(), "rgb16");
  for (int k = 0; k < 12; ++k) EXPECT_EQ(w.view(-1)[k].item<int>(), wide[2 * k]) << k;
}

TEST(Png, WriteThenReadIsTheIdentity) {
  const std::string dir = scratch_dir("io", "roundtrip");
  for (int64_t c : {1, 3}) {
    const at::Tensor image = as_image(random_bytes(static_cast<size_t>(5 * 9 * c), 3 + c), 5, 9, c);
    const std::string path = dir + "/x" + std::to_string(c) + ".png";
    fewstep::write_png(path, image);
    EXPECT_TRUE(at::equal(fewstep::read_png(path), image));
  }
}

TEST(Png, DamagedOrUnsupportedFilesAreNamed) {
  const std::vector<uint8_t> pixels = random_bytes(12, 1);
  std::vector<uint8_t> png = make_png(pixels, 2, 2, 2, 3, {1});
  std::vector<uint8_t> bad_crc = png;
  bad_crc[20] ^= 1;  // inside IHDR
  EXPECT_NE(value_error_message([&] { fewstep::decode_png(bad_crc.data(), bad_crc.size(), "a.png"); })
                .find("'a.png' is damaged (CRC mismatch in its IHDR chunk)"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::decode_png(png.data(), 20, "b.png"); }).find("'b.png' is truncated"),
            std::string::npos);
  const std::string text = "GIF89a, not a png";
  EXPECT_NE(value_error_message([&] {
              fewstep::decode_png(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "c.png");
            }).find("not a PNG"),
            std::string::npos);
  std::vector<uint8_t> deep = png;
  deep[8 + 8 + 8] = 4;  // IHDR bit depth 4 with colour type 2 (RGB): not a PNG combination; fix the CRC
  const uint32_t crc4 = static_cast<uint32_t>(::crc32(0L, deep.data() + 12, 17));
  for (int i = 0; i < 4; ++i) deep[29 + i] = static_cast<uint8_t>(crc4 >> (24 - 8 * i));
  EXPECT_NE(value_error_message([&] { fewstep::decode_png(deep.data(), deep.size(), "d.png"); })
                .find("'d.png' has bit depth 4 with colour type 2"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { fewstep::read_png("/nonexistent/e.png"); }).find("'/nonexistent/e.png'"),
            std::string::npos);
}

TEST(Png, OnlyPngNamesAreWritten) {
  const at::Tensor image = at::zeros({2, 2}, at::kByte);
  const std::string dir = scratch_dir("io", "ext");
  const std::string message = value_error_message([&] { fewstep::write_png(dir + "/y.jpg", image); });
  EXPECT_NE(message.find("'" + dir + "/y.jpg' should end in .png"), std::string::npos) << message;
  EXPECT_NE(message.find("'.jpg'"), std::string::npos) << message;
  EXPECT_FALSE(std::filesystem::exists(dir + "/y.jpg"));
  EXPECT_NE(value_error_message([&] { fewstep::check_png_path("dir.png/grid"); }).find("no extension"),
            std::string::npos);
  fewstep::check_png_path("Grid.PNG");  // any case
}

TEST(ImageGrid, LayoutScaleAndValueRange) {
  // 5 images of 2x3 with values 0..4 in [0, 4]: 3 per row -> 2 rows; padding 1; scale 2.
  const at::Tensor images = at::arange(5, at::kFloat).view({5, 1, 1, 1}).expand({5, 1, 2, 3});
  fewstep::ImageGridOptions o;
  o.nrow = 3;
  o.padding = 1;
  o.scale = 2;
  o.low = 0.0;
  o.high = 4.0;
  const at::Tensor grid = fewstep::image_grid(images, o);
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{2 * (2 * 3 + 1), 2 * (3 * 4 + 1), 1}));
  // Image k sits at row k / 3, column k % 3; its value k maps to round(k * 255 / 4).
  for (int64_t k = 0; k < 5; ++k) {
    const int64_t y = 2 * (1 + (k / 3) * 3), x = 2 * (1 + (k % 3) * 4);
    const at::Tensor cell = grid.slice(0, y, y + 4).slice(1, x, x + 6);
    EXPECT_TRUE((cell == static_cast<int>(std::lround(k * 255.0 / 4.0))).all().item<bool>()) << k;
  }
  // Padding and the unused sixth cell: mid grey of [0, 4] = 2 -> 128.
  EXPECT_EQ(grid[0][0][0].item<int>(), 128);
  EXPECT_EQ(grid[grid.size(0) - 3][grid.size(1) - 3][0].item<int>(), 128);
  // The old signature: [-1, 1], unscaled.
  EXPECT_EQ(fewstep::image_grid(at::zeros({4, 3, 28, 28})).sizes(), (std::vector<int64_t>{62, 62, 3}));
}

TEST(ImageGrid, BadOptionsAreNamed) {
  const at::Tensor images = at::zeros({2, 1, 4, 4});
  fewstep::ImageGridOptions o;
  o.scale = 0;
  EXPECT_NE(value_error_message([&] { fewstep::image_grid(images, o); }).find("scale must be an integer in [1, 64], got 0"),
            std::string::npos);
  o.scale = 1;
  o.low = 1.0;
  o.high = 1.0;
  EXPECT_NE(value_error_message([&] { fewstep::image_grid(images, o); }).find("value_range"), std::string::npos);
}

TEST(ImageGrid, SaveChecksThePathBeforeWork) {
  const std::string dir = scratch_dir("io", "save");
  const at::Tensor grid = fewstep::save_image_grid(dir + "/g.png", at::zeros({4, 1, 8, 8}));
  EXPECT_TRUE(at::equal(fewstep::read_png(dir + "/g.png"), grid));
  // A bad name fails even with images that image_grid would refuse: the path is checked first.
  EXPECT_NE(value_error_message([&] { fewstep::save_image_grid(dir + "/g.jpeg", at::zeros({1})); }).find(".png"),
            std::string::npos);
}

// .npy bytes: magic, version 1.0, header padded to a multiple of 64 with a final newline, data.
std::vector<uint8_t> npy(const std::string& descr, const std::string& shape, const std::vector<uint8_t>& data,
                         bool fortran = false) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  const uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(header.size() & 0xff),
                              static_cast<uint8_t>(header.size() >> 8)};
  std::vector<uint8_t> out(10 + header.size() + data.size());
  std::copy(prefix, prefix + 10, out.begin());
  std::copy(header.begin(), header.end(), out.begin() + 10);
  std::copy(data.begin(), data.end(), out.begin() + 10 + static_cast<std::ptrdiff_t>(header.size()));
  return out;
}

TEST(Npy, DtypesByteOrderAndFortranOrder) {
  const std::vector<uint8_t> u1 = {1, 2, 3, 4, 5, 6};
  at::Tensor t = fewstep::decode_npy(npy("|u1", "(2, 3)", u1).data(), npy("|u1", "(2, 3)", u1).size());
  EXPECT_TRUE(at::equal(t, at::tensor({1, 2, 3, 4, 5, 6}).to(at::kByte).view({2, 3})));
  // Fortran order: column-major data.
  const auto f = npy("|u1", "(2, 3)", {1, 4, 2, 5, 3, 6}, true);
  EXPECT_TRUE(at::equal(fewstep::decode_npy(f.data(), f.size()), t));
  // Big-endian float32 1.5 = 0x3fc00000; uint16 65535 widens to int32.
  const auto be = npy(">f4", "(1,)", {0x3f, 0xc0, 0x00, 0x00});
  EXPECT_EQ(fewstep::decode_npy(be.data(), be.size()).item<float>(), 1.5f);
  const auto u2 = npy("<u2", "(1,)", {0xff, 0xff});
  const at::Tensor wide = fewstep::decode_npy(u2.data(), u2.size());
  EXPECT_EQ(wide.scalar_type(), at::kInt);
  EXPECT_EQ(wide.item<int>(), 65535);
  const auto bad = npy("<c16", "(1,)", std::vector<uint8_t>(16));
  EXPECT_NE(value_error_message([&] { fewstep::decode_npy(bad.data(), bad.size(), "z.npy"); }).find("'<c16'"),
            std::string::npos);
  const auto short_data = npy("<f8", "(4,)", std::vector<uint8_t>(8));
  EXPECT_NE(value_error_message([&] { fewstep::decode_npy(short_data.data(), short_data.size(), "s.npy"); })
                .find("truncated"),
            std::string::npos);
}

TEST(ImageFiles, FolderWithClassSubfolders) {
  const std::string dir = scratch_dir("io", "folder");
  const at::Tensor a = at::full({4, 4}, 255, at::kByte), b = at::zeros({4, 4, 3}, at::kByte);
  std::filesystem::create_directories(dir + "/cats");
  std::filesystem::create_directories(dir + "/dogs");
  fewstep::write_png(dir + "/cats/1.png", a);  // grey joins RGB as three equal channels
  fewstep::write_png(dir + "/dogs/1.png", b);
  fewstep::write_png(dir + "/dogs/2.png", b);
  const fewstep::ImageDataset d = fewstep::load_image_dataset(dir);
  ASSERT_EQ(d.images.sizes(), (std::vector<int64_t>{3, 3, 4, 4}));
  EXPECT_TRUE(at::equal(d.labels, at::tensor({0, 1, 1}, at::kLong)));
  EXPECT_EQ(d.classes, (std::vector<std::string>{"cats", "dogs"}));
  EXPECT_TRUE((d.images[0] == 1.0f).all().item<bool>());
  EXPECT_TRUE((d.images[1] == -1.0f).all().item<bool>());
  fewstep::write_png(dir + "/dogs/3.png", at::zeros({5, 4}, at::kByte));
  EXPECT_NE(value_error_message([&] { fewstep::load_image_folder(dir); }).find("all images must share one size"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::load_image_dataset(dir + "/x.tif"); }).find("'" + dir + "/x.tif'"),
            std::string::npos);
}

}  // namespace
