/// @file train/conditioning.h
/// @brief Class labels for conditional training, with the label dropout of classifier-free guidance.
///
/// Ho & Salimans (2022) train one network for both p(x | y) and p(x): each label is replaced by the
/// null class (index num_classes, the row the reference nets use for y = None) with probability
/// `label_dropout`, so the network learns the unconditional model too and can be guided
/// (models/guidance.h). The dropout draws come from the trainer's own generator.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace fewstep {

struct Batch;

struct ConditioningOptions {
  int64_t num_classes = 0;     ///< > 0: the network takes labels y in [0, num_classes] (num_classes = null)
  double label_dropout = 0.0;  ///< probability of the null class per example
  /// ValueError naming the field.
  void validate() const;
  bool conditional() const { return num_classes > 0; }
};

/// The labels to feed the network for `batch` (int64 on `device`), undefined if !options.conditional().
/// ValueError naming `who` if the batch has no labels or labels outside [0, num_classes).
at::Tensor draw_labels(const Batch& batch, const ConditioningOptions& options, at::Generator& gen,
                       const at::Device& device, const std::string& who);

}  // namespace fewstep
