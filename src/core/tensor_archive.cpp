#include "fewstep/core/tensor_archive.h"

#include <torch/serialize.h>

#include <fstream>
#include <iterator>
#include <optional>

#include "fewstep/core/check.h"
#include "fewstep/core/atomic_file.h"

namespace fewstep {

namespace {

std::string where(const std::string& source) { return source.empty() ? "checkpoint" : "checkpoint '" + source + "'"; }

void put_u64(Sha256& h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  h.update(b, sizeof b);
}

void check_key(const std::string& key) {
  FEWSTEP_CHECK_VALUE(key != TensorArchive::kChecksumKey && key != TensorArchive::kChecksumCopyKey,
                      "TensorArchive: key '", key, "' is reserved for the archive's checksum");
}

}  // namespace

void sha256_update(Sha256& h, const at::Tensor& tensor) {
  FEWSTEP_CHECK_VALUE(tensor.defined(), "sha256_update: the tensor is undefined");
  const at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  h.field(c10::toString(t.scalar_type()));
  put_u64(h, static_cast<uint64_t>(t.dim()));
  for (int64_t d : t.sizes()) put_u64(h, static_cast<uint64_t>(d));
  put_u64(h, static_cast<uint64_t>(t.nbytes()));
  if (t.nbytes() > 0) h.update(t.const_data_ptr(), t.nbytes());
}

std::string TensorArchive::digest() const {
  Sha256 h;
  h.field("fewstep.tensor_archive.sha256.v1");
  for (const auto& [k, v] : tensors_) {
    h.field("tensor").field(k);
    sha256_update(h, v);
  }
  for (const auto& [k, v] : ints_) {
    h.field("int").field(k);
    put_u64(h, static_cast<uint64_t>(v));
  }
  for (const auto& [k, v] : strings_) h.field("string").field(k).field(v);
  return h.hex_digest();
}

void TensorArchive::set_tensor(const std::string& key, const at::Tensor& value) {
  check_key(key);
  FEWSTEP_CHECK_VALUE(value.defined(), "Checkpoint.set_tensor: value for key '", key, "' is undefined");
  // A private host copy: later in-place updates of training state must not change what is saved.
  tensors_[key] = value.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

void TensorArchive::set_int(const std::string& key, int64_t value) {
  check_key(key);
  ints_[key] = value;
}

void TensorArchive::set_string(const std::string& key, const std::string& value) {
  check_key(key);
  strings_[key] = value;
}

bool TensorArchive::contains(const std::string& key) const {
  return tensors_.count(key) + ints_.count(key) + strings_.count(key) > 0;
}

const at::Tensor& TensorArchive::tensor(const std::string& key) const {
  const auto it = tensors_.find(key);
  FEWSTEP_CHECK_VALUE(it != tensors_.end(), where(source_), " has no tensor '", key, "'");
  return it->second;
}

int64_t TensorArchive::integer(const std::string& key) const {
  const auto it = ints_.find(key);
  FEWSTEP_CHECK_VALUE(it != ints_.end(), where(source_), " has no integer '", key, "'");
  return it->second;
}

const std::string& TensorArchive::string(const std::string& key) const {
  const auto it = strings_.find(key);
  FEWSTEP_CHECK_VALUE(it != strings_.end(), where(source_), " has no string '", key, "'");
  return it->second;
}

std::vector<std::string> TensorArchive::tensor_keys(const std::string& prefix) const {
  std::vector<std::string> keys;
  for (auto it = tensors_.lower_bound(prefix); it != tensors_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

void TensorArchive::save(const std::string& path) const {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, v] : tensors_) dict.insert(k, v);
  for (const auto& [k, v] : ints_) dict.insert(k, v);
  for (const auto& [k, v] : strings_) dict.insert(k, v);
  const std::string sum = digest();
  dict.insert(kChecksumKey, sum);
  dict.insert(kChecksumCopyKey, sum);
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  atomic_write_bytes(path, bytes.data(), bytes.size());
}

TensorArchive TensorArchive::load(const std::string& path) {
  const std::string text = read_file(path, "Checkpoint.load: path");
  const std::vector<char> bytes(text.begin(), text.end());
  c10::IValue value;
  std::string error;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK_VALUE(error.empty(), "Checkpoint.load: path '", path, "' is not a readable checkpoint: ", error);
  FEWSTEP_CHECK_VALUE(value.isGenericDict(), "Checkpoint.load: path '", path, "' holds a ", value.tagKind(),
                      ", expected a dict written by fewstep::Checkpoint");
  TensorArchive out;
  out.source_ = path;
  std::optional<std::string> recorded, copy;
  for (const auto& entry : value.toGenericDict()) {
    FEWSTEP_CHECK_VALUE(entry.key().isString(), "Checkpoint.load: path '", path, "' has a non-string key");
    const std::string key = entry.key().toStringRef();
    const c10::IValue& v = entry.value();
    if (key == kChecksumKey || key == kChecksumCopyKey) {
      FEWSTEP_CHECK_VALUE(v.isString(), "Checkpoint.load: path '", path, "' is corrupted: a damaged checksum entry");
      (key == kChecksumKey ? recorded : copy) = v.toStringRef();
    } else if (v.isTensor()) {
      out.tensors_[key] = v.toTensor();
    } else if (v.isInt()) {
      out.ints_[key] = v.toInt();
    } else if (v.isString()) {
      out.strings_[key] = v.toStringRef();
    } else {
      FEWSTEP_CHECK_VALUE(false, "Checkpoint.load: path '", path, "' entry '", key, "' is a ", v.tagKind(),
                          ", expected Tensor, int or str");
    }
  }
  if (recorded || copy) {
    FEWSTEP_CHECK_VALUE(recorded && copy && *recorded == *copy, "Checkpoint.load: path '", path,
                        "' is corrupted: its two checksum entries ", recorded && copy ? "differ" : "are not both present");
    const std::string actual = out.digest();
    FEWSTEP_CHECK_VALUE(actual == *recorded, "Checkpoint.load: path '", path, "' is corrupted: its content's SHA-256 ",
                        actual.substr(0, 16), "... does not match the checksum recorded when it was written (",
                        recorded->substr(0, 16), "...); restore it from a copy or delete it");
  }
  return out;
}

}  // namespace fewstep
