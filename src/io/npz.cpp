#include "fewstep/io/npz.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::vector<uint8_t> read_all(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  FEWSTEP_CHECK_VALUE(in.good(), what, ": cannot open '", path, "'");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The value following `'key':` in the header dict, up to the next top-level comma or brace.
std::string header_value(const std::string& header, const std::string& key, const std::string& name) {
  const size_t at = header.find("'" + key + "'");
  FEWSTEP_CHECK_VALUE(at != std::string::npos, "read_npy: '", name, "' has no '", key, "' in its header: ", header);
  size_t i = header.find(':', at);
  FEWSTEP_CHECK_VALUE(i != std::string::npos, "read_npy: '", name, "' has a malformed header: ", header);
  ++i;
  while (i < header.size() && header[i] == ' ') ++i;
  int depth = 0;
  size_t j = i;
  for (; j < header.size(); ++j) {
    const char c = header[j];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) break;
  }
  return header.substr(i, j - i + (depth == 0 && j < header.size() && header[j] == ')' ? 1 : 0));
}

}  // namespace

at::Tensor decode_npy(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  FEWSTEP_CHECK_VALUE(data != nullptr && size >= 10 && std::equal(kMagic, kMagic + 6, data), "read_npy: '", name,
                      "' is not a .npy array (no \\x93NUMPY magic)");
  const int major = data[6];
  FEWSTEP_CHECK_VALUE(major >= 1 && major <= 3, "read_npy: '", name, "' has format version ", major, ".", int(data[7]),
                      " (1-3 are read)");
  const size_t prefix = major == 1 ? 10 : 12;
  FEWSTEP_CHECK_VALUE(size >= prefix, "read_npy: '", name, "' is truncated");
  const size_t header_len = static_cast<size_t>(get_le(data + 8, major == 1 ? 2 : 4));
  FEWSTEP_CHECK_VALUE(size >= prefix + header_len, "read_npy: '", name, "' is truncated (header)");
  const std::string header(reinterpret_cast<const char*>(data + prefix), header_len);

  std::string descr = header_value(header, "descr", name);
  FEWSTEP_CHECK_VALUE(descr.size() >= 4 && (descr.front() == '\'' || descr.front() == '"'), "read_npy: '", name,
                      "' has the dtype ", descr, ", not a plain one (structured arrays are not read)");
  descr = descr.substr(1, descr.size() - 2);
  const char order = descr[0];
  const std::string kind = descr.substr(1);
  const std::string fortran = header_value(header, "fortran_order", name);
  std::string shape_text = header_value(header, "shape", name);
  std::vector<int64_t> shape;
  for (size_t i = 0; i < shape_text.size();) {
    if (std::isdigit(static_cast<unsigned char>(shape_text[i]))) {
      size_t j = i;
      while (j < shape_text.size() && std::isdigit(static_cast<unsigned char>(shape_text[j]))) ++j;
      shape.push_back(std::stoll(shape_text.substr(i, j - i)));
      i = j;
    } else {
      ++i;
    }
  }

  struct Kind {
    const char* code;
    at::ScalarType stored, result;
    int bytes;
  };
  static const Kind kKinds[] = {
      {"b1", at::kBool, at::kBool, 1},     {"u1", at::kByte, at::kByte, 1},     {"i1", at::kChar, at::kChar, 1},
      {"i2", at::kShort, at::kShort, 2},   {"i4", at::kInt, at::kInt, 4},       {"i8", at::kLong, at::kLong, 8},
      {"u2", at::kShort, at::kInt, 2},     {"u4", at::kInt, at::kLong, 4},      {"f2", at::kHalf, at::kHalf, 2},
      {"f4", at::kFloat, at::kFloat, 4},   {"f8", at::kDouble, at::kDouble, 8},
  };
  const Kind* k = nullptr;
  for (const Kind& candidate : kKinds) {
    if (kind == candidate.code) k = &candidate;
  }
  FEWSTEP_CHECK_VALUE(k != nullptr, "read_npy: '", name, "' has the dtype '", descr,
                      "'; bool, int8-64, uint8-32 and float16-64 are read");
  FEWSTEP_CHECK_VALUE(order == '<' || order == '>' || order == '|' || order == '=', "read_npy: '", name,
                      "' has the dtype '", descr, "' with an unknown byte order");

  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const size_t bytes = static_cast<size_t>(count) * static_cast<size_t>(k->bytes);
  FEWSTEP_CHECK_VALUE(size - prefix - header_len >= bytes, "read_npy: '", name, "' is truncated: shape ", shape_text,
                      " needs ", bytes, " bytes of data, the file holds ", size - prefix - header_len);

  std::vector<int64_t> stored_shape = shape;
  const bool fortran_order = fortran.rfind("True", 0) == 0;
  if (fortran_order) std::reverse(stored_shape.begin(), stored_shape.end());
  at::Tensor t = at::empty(stored_shape, at::TensorOptions().dtype(k->stored));
  uint8_t* dst = static_cast<uint8_t*>(t.data_ptr());
  std::memcpy(dst, data + prefix + header_len, bytes);
  if (order == '>' && k->bytes > 1) {
    for (size_t i = 0; i < bytes; i += static_cast<size_t>(k->bytes)) std::reverse(dst + i, dst + i + k->bytes);
  }
  if (k->stored != k->result) {
    // Unsigned 16/32-bit: reinterpret the bits as unsigned and widen.
    at::Tensor wide = t.to(k->result);
    const int64_t offset = int64_t{1} << (8 * k->bytes);
    t = at::where(wide < 0, wide + offset, wide);
  }
  if (fortran_order) {
    std::vector<int64_t> reversed(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) reversed[i] = static_cast<int64_t>(shape.size() - 1 - i);
    t = t.permute(reversed).contiguous();
  }
  return t;
}

at::Tensor read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_all(path, "read_npy");
  return decode_npy(bytes.data(), bytes.size(), path);
}

std::vector<std::pair<std::string, at::Tensor>> read_npz(const std::string& path) {
  const std::vector<uint8_t> zip = read_all(path, "read_npz");
  const uint8_t* d = zip.data();
  const size_t size = zip.size();
  // End of central directory record: the last "PK\5\6" within the final 64 KiB + 22 bytes.
  size_t eocd = std::string::npos;
  if (size >= 22) {
    const size_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;  // the comment is at most 65535 bytes
    for (size_t i = size - 22 + 1; i-- > lowest;) {
      if (get_le(d + i, 4) == 0x06054b50) {
        eocd = i;
        break;
      }
    }
  }
  FEWSTEP_CHECK_VALUE(eocd != std::string::npos, "read_npz: '", path, "' is not a ZIP archive (.npz)");
  uint64_t entries = get_le(d + eocd + 10, 2), cd_offset = get_le(d + eocd + 16, 4);
  if ((entries == 0xffff || cd_offset == 0xffffffff) && eocd >= 20 && get_le(d + eocd - 20, 4) == 0x07064b50) {
    const uint64_t z64 = get_le(d + eocd - 20 + 8, 8);  // ZIP64 end of central directory record
    FEWSTEP_CHECK_VALUE(z64 + 56 <= size && get_le(d + z64, 4) == 0x06064b50, "read_npz: '", path,
                        "' has a damaged ZIP64 directory");
    entries = get_le(d + z64 + 32, 8);
    cd_offset = get_le(d + z64 + 48, 8);
  }
  std::vector<std::pair<std::string, at::Tensor>> arrays;
  size_t at = static_cast<size_t>(cd_offset);
  for (uint64_t e = 0; e < entries; ++e) {
    FEWSTEP_CHECK_VALUE(at + 46 <= size && get_le(d + at, 4) == 0x02014b50, "read_npz: '", path,
                        "' has a damaged ZIP directory (entry ", e, ")");
    const int method = static_cast<int>(get_le(d + at + 10, 2));
    const uint32_t crc = static_cast<uint32_t>(get_le(d + at + 16, 4));
    uint64_t csize = get_le(d + at + 20, 4), usize = get_le(d + at + 24, 4);
    const size_t name_len = get_le(d + at + 28, 2), extra_len = get_le(d + at + 30, 2),
                 comment_len = get_le(d + at + 32, 2);
    uint64_t local = get_le(d + at + 42, 4);
    FEWSTEP_CHECK_VALUE(at + 46 + name_len + extra_len <= size, "read_npz: '", path, "' is truncated");
    std::string entry(reinterpret_cast<const char*>(d + at + 46), name_len);
    // ZIP64 extended information: the 8-byte values of the fields that hold 0xFFFFFFFF, in order.
    for (size_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      const uint64_t id = get_le(d + x, 2), len = get_le(d + x + 2, 2);
      if (id == 0x0001) {
        size_t f = x + 4;
        if (usize == 0xffffffff) usize = get_le(d + f, 8), f += 8;
        if (csize == 0xffffffff) csize = get_le(d + f, 8), f += 8;
        if (local == 0xffffffff) local = get_le(d + f, 8);
      }
      x += 4 + static_cast<size_t>(len);
    }
    at += 46 + name_len + extra_len + comment_len;

    FEWSTEP_CHECK_VALUE(local + 30 <= size && get_le(d + local, 4) == 0x04034b50, "read_npz: '", path,
                        "' has a damaged entry '", entry, "'");
    const size_t data_at = static_cast<size_t>(local) + 30 + get_le(d + local + 26, 2) + get_le(d + local + 28, 2);
    FEWSTEP_CHECK_VALUE(data_at + csize <= size, "read_npz: '", path, "' is truncated in entry '", entry, "'");
    std::vector<uint8_t> bytes(static_cast<size_t>(usize));
    if (method == 0) {
      FEWSTEP_CHECK_VALUE(csize == usize, "read_npz: '", path, "': stored entry '", entry, "' changes size");
      std::copy(d + data_at, d + data_at + csize, bytes.begin());
    } else if (method == 8) {  // raw deflate stream
      z_stream z{};
      FEWSTEP_CHECK(inflateInit2(&z, -MAX_WBITS) == Z_OK, "read_npz: zlib inflateInit2 failed");
      z.next_in = const_cast<Bytef*>(d + data_at);
      z.avail_in = static_cast<uInt>(csize);
      z.next_out = bytes.data();
      z.avail_out = static_cast<uInt>(bytes.size());
      const int rc = inflate(&z, Z_FINISH);
      inflateEnd(&z);
      FEWSTEP_CHECK_VALUE(rc == Z_STREAM_END && z.total_out == usize, "read_npz: '", path, "': entry '", entry,
                          "' does not inflate (zlib code ", rc, ")");
    } else {
      FEWSTEP_CHECK_VALUE(false, "read_npz: '", path, "': entry '", entry, "' uses ZIP compression method ", method,
                          " (stored and deflated entries are read)");
    }
    FEWSTEP_CHECK_VALUE(static_cast<uint32_t>(::crc32(0L, bytes.data(), static_cast<uInt>(bytes.size()))) == crc,
                        "read_npz: '", path, "' is damaged (CRC mismatch in '", entry, "')");
    FEWSTEP_CHECK_VALUE(entry.size() > 4 && entry.compare(entry.size() - 4, 4, ".npy") == 0, "read_npz: '", path,
                        "' holds '", entry, "', not a .npy array");
    at::Tensor t = decode_npy(bytes.data(), bytes.size(), path + ":" + entry);
    arrays.emplace_back(entry.substr(0, entry.size() - 4), std::move(t));
  }
  return arrays;
}

}  // namespace fewstep
