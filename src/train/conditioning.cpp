#include "fewstep/train/conditioning.h"

#include <ATen/ATen.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/data/batch_source.h"

namespace fewstep {

void ConditioningOptions::validate() const {
  FEWSTEP_CHECK_VALUE(num_classes >= 0, "ConditioningOptions.num_classes must be >= 0, got ", num_classes);
  FEWSTEP_CHECK_VALUE(std::isfinite(label_dropout) && label_dropout >= 0.0 && label_dropout <= 1.0,
                      "ConditioningOptions.label_dropout must be in [0, 1], got ", label_dropout);
  FEWSTEP_CHECK_VALUE(num_classes > 0 || label_dropout == 0.0,
                      "ConditioningOptions.label_dropout = ", label_dropout, " needs num_classes > 0");
}

at::Tensor draw_labels(const Batch& batch, const ConditioningOptions& options, at::Generator& gen,
                       const at::Device& device, const std::string& who) {
  if (!options.conditional()) return {};
  FEWSTEP_CHECK_VALUE(batch.labels.defined() && batch.labels.dim() == 1 && batch.labels.size(0) == batch.x.size(0),
                      who, ": num_classes = ", options.num_classes,
                      " needs a data source with one label per example; this batch has ",
                      batch.labels.defined() ? "labels of shape " + c10::str(batch.labels.sizes()) : "no labels");
  at::Tensor y = batch.labels.to(at::kLong).cpu();
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  FEWSTEP_CHECK_VALUE(lo >= 0 && hi < options.num_classes, who, ": labels must lie in [0, num_classes = ",
                      options.num_classes, "), got range [", lo, ", ", hi, "]");
  if (options.label_dropout > 0.0) {
    const at::Tensor drop = at::rand({y.size(0)}, gen, at::kDouble) < options.label_dropout;
    y = at::where(drop, at::full_like(y, options.num_classes), y);
  }
  return y.to(device);
}

}  // namespace fewstep
