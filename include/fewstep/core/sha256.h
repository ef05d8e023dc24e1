/// @file core/sha256.h
/// @brief SHA-256 (FIPS 180-4): the checksum of model files, tensor archives and cache keys.
///
/// Model sidecars record the SHA-256 of their TorchScript file, tensor archives (checkpoints,
/// caches) the SHA-256 of a canonical serialisation of their entries, and cached teacher solves
/// are named and keyed by the SHA-256 of the teacher's content and every setting. Our own
/// implementation of the standard (no cryptographic library is linked): byte-oriented, streaming,
/// checked against the FIPS 180-4 example vectors in the tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace fewstep {

class Sha256 {
 public:
  Sha256();
  /// Appends bytes to the message.
  Sha256& update(const void* data, size_t size);
  Sha256& update(const std::string& text) { return update(text.data(), text.size()); }
  /// Appends a length-prefixed field (8-byte little-endian length, then the bytes), so that a
  /// sequence of fields hashes unambiguously ("ab","c" differs from "a","bc").
  Sha256& field(const std::string& text);
  /// The 32-byte digest; the object must not be updated afterwards (ValueError).
  std::array<uint8_t, 32> digest();
  /// The digest as 64 lowercase hex characters.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
  bool finished_ = false;
};

/// SHA-256 of a byte buffer / a string, as 64 lowercase hex characters.
std::string sha256_hex(const void* data, size_t size);
std::string sha256_hex(const std::string& text);
/// SHA-256 of a file's bytes. ValueError naming the path if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace fewstep
