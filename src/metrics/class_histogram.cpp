#include "fewstep/metrics/class_histogram.h"

#include <ATen/ATen.h>

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

at::Tensor class_histogram(const at::Tensor& labels, int64_t num_classes) {
  FEWSTEP_CHECK_VALUE(num_classes >= 1, "num_classes must be >= 1, got ", num_classes);
  FEWSTEP_CHECK_VALUE(labels.defined() && (labels.dim() == 1 || labels.dim() == 2),
                      "labels should be class indices [N] or scores [N, num_classes], got ",
                      labels.defined() ? labels.sizes() : at::IntArrayRef{});
  at::Tensor idx;
  if (labels.dim() == 2) {
    FEWSTEP_CHECK_VALUE(labels.size(1) == num_classes, "labels as scores should be [N, ", num_classes,
                        "] (num_classes = ", num_classes, "), got ", labels.sizes());
    FEWSTEP_CHECK_TYPE(labels.is_floating_point(), "labels as scores [N, K] should be floating point, got ",
                       labels.scalar_type());
    idx = labels.detach().argmax(1).to(at::kCPU);
  } else {
    FEWSTEP_CHECK_TYPE(!labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != at::kBool,
                       "labels as class indices [N] should be an integer tensor, got ", labels.scalar_type());
    idx = labels.detach().to(at::kCPU, at::kLong);
    if (idx.numel() > 0) {
      const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
      FEWSTEP_CHECK_VALUE(lo >= 0 && hi < num_classes, "labels should be in [0, ", num_classes, "), got values in [",
                          lo, ", ", hi, "]");
    }
  }
  return at::bincount(idx, {}, num_classes).to(at::kDouble);
}

double class_histogram_kl(const at::Tensor& reference_counts, const at::Tensor& sample_counts, double pseudo_count) {
  FEWSTEP_CHECK_VALUE(std::isfinite(pseudo_count) && pseudo_count >= 0.0,
                      "pseudo_count must be finite and >= 0, got ", pseudo_count);
  const auto check = [](const at::Tensor& c, const char* name) {
    FEWSTEP_CHECK_VALUE(c.defined() && c.dim() == 1 && c.size(0) >= 1, name,
                        " should be a 1-D tensor of class counts [K], got ",
                        c.defined() ? c.sizes() : at::IntArrayRef{});
    const at::Tensor d = c.detach().to(at::kCPU, at::kDouble);
    FEWSTEP_CHECK_VALUE(at::isfinite(d).all().item<bool>() && (d >= 0).all().item<bool>(), name,
                        " should hold finite non-negative counts, got ", d);
    FEWSTEP_CHECK_VALUE(d.sum().item<double>() > 0.0, name, " should have a positive total");
    return d;
  };
  const at::Tensor r = check(reference_counts, "reference_counts");
  const at::Tensor s = check(sample_counts, "sample_counts");
  FEWSTEP_CHECK_VALUE(r.size(0) == s.size(0), "reference_counts and sample_counts should have the same number of ",
                      "classes, got ", r.size(0), " and ", s.size(0));
  const at::Tensor p = (r + pseudo_count) / (r.sum() + pseudo_count * r.size(0));
  const at::Tensor q = (s + pseudo_count) / (s.sum() + pseudo_count * s.size(0));
  // Terms with p_k = 0 contribute 0 (x log x → 0); q_k = 0 < p_k gives +inf.
  const at::Tensor terms = at::where(p > 0, p * (p.log() - q.log()), at::zeros_like(p));
  return terms.sum().item<double>();
}

}  // namespace fewstep
