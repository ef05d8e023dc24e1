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
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fewstep {

class TensorArchive {
 public:
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

  /// Writes atomically (core/atomic_file.h).
  void save(const std::string& path) const;
  /// ValueError naming the path if it is missing or not a fewstep checkpoint.
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
