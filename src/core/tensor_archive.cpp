#include "fewstep/core/tensor_archive.h"

#include <torch/serialize.h>

#include <fstream>
#include <iterator>

#include "fewstep/core/check.h"
#include "fewstep/core/atomic_file.h"

namespace fewstep {

namespace {

std::string where(const std::string& source) { return source.empty() ? "checkpoint" : "checkpoint '" + source + "'"; }

}  // namespace

void TensorArchive::set_tensor(const std::string& key, const at::Tensor& value) {
  FEWSTEP_CHECK_VALUE(value.defined(), "Checkpoint.set_tensor: value for key '", key, "' is undefined");
  // A private host copy: later in-place updates of training state must not change what is saved.
  tensors_[key] = value.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

void TensorArchive::set_int(const std::string& key, int64_t value) { ints_[key] = value; }

void TensorArchive::set_string(const std::string& key, const std::string& value) { strings_[key] = value; }

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
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  atomic_write_bytes(path, bytes.data(), bytes.size());
}

TensorArchive TensorArchive::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FEWSTEP_CHECK_VALUE(in.good(), "Checkpoint.load: cannot open path '", path, "' (missing or unreadable file)");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
  for (const auto& entry : value.toGenericDict()) {
    FEWSTEP_CHECK_VALUE(entry.key().isString(), "Checkpoint.load: path '", path, "' has a non-string key");
    const std::string key = entry.key().toStringRef();
    const c10::IValue& v = entry.value();
    if (v.isTensor()) {
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
  return out;
}

}  // namespace fewstep
