/// @file core/tensor_archive.h
/// @brief A file of named tensors, integers and strings: trainers' checkpoints and the caches of
/// teacher solves and statistics.
///
/// Keys are "/"-separated paths ("step", "model/conv_in_weight", "optimizer/exp_avg/3", ...);
/// each writer (module weights, EMA, optimiser, RNG bundle, data position, cached tensors) uses
/// its own prefix. On disk it is one flat Dict[str, Tensor | int | str] in PyTorch's zip format
/// (torch::pickle_save), so Python reads it with `torch.load(path, weights_only=False)` (the dict
/// carries TorchScript type tags that the weights-only unpickler refuses); files are written with
/// atomic_write (core/atomic_file.h), so an archive on disk is always complete.
///
/// Integrity: `save` adds the entries "__sha256__" and "__sha256_copy__", both the SHA-256 of a
/// canonical serialisation of every other entry (kind, key, and the value: an integer's 8 bytes, a
/// string's bytes, a tensor's dtype, shape and bytes; see `digest`), and `load` recomputes it: a
/// file whose payload changed after it was written (a flipped bit on disk, a truncated copy, an
/// edit) is refused with an error naming it. Two copies, so that damage to one checksum entry's
/// key cannot pass for an archive without a checksum. Archives written before the checksum existed
/// carry neither and load unverified.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fewstep/core/sha256.h"

namespace fewstep {

/// Appends a tensor's canonical form to `h`: dtype name, number of dimensions, sizes (8-byte
/// little-endian each) and the bytes of its contiguous host copy. Checksums and content
/// fingerprints of tensors all use it.
void sha256_update(Sha256& h, const at::Tensor& tensor);

class TensorArchive {
 public:
  /// The reserved keys of the payload checksum (see above); set_* refuse them.
  static constexpr const char* kChecksumKey = "__sha256__";
  static constexpr const char* kChecksumCopyKey = "__sha256_copy__";

  void set_tensor(const std::string& key, const at::Tensor& value);
  void set_int(const std::string& key, int64_t value);
  void set_string(const std::string& key, const std::string& value);

  bool contains(const std::string& key) const;
  /// ValueError naming the key and the file it was loaded from when missing or of another kind.
  const at::Tensor& tensor(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  const std::string& string(const std::string& key) const;
  /// Tensor keys that start with `prefix`, sorted.
  std::vector<std::string> tensor_keys(const std::string& prefix) const;

  /// SHA-256 (hex) of the canonical serialisation of every entry, in key order: tensors, then
  /// integers, then strings, each as a kind tag, its length-prefixed key and its value.
  std::string digest() const;

  /// Writes atomically (core/atomic_file.h), with the checksum entry.
  void save(const std::string& path) const;
  /// ValueError naming the path if it is missing, a directory, not a fewstep archive, or its
  /// payload does not match its checksum.
  static TensorArchive load(const std::string& path);
  /// Where it was loaded from ("" if built in memory), for messages.
  const std::string& source() const { return source_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::map<std::string, int64_t> ints_;
  std::map<std::string, std::string> strings_;
  std::string source_;
};

}  // namespace fewstep
