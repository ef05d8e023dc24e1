#include "fewstep/metrics/coupled_error.h"

#include <ATen/ATen.h>

#include "fewstep/core/check.h"

namespace fewstep {

at::Tensor per_sample_rms(const at::Tensor& x, const at::Tensor& reference) {
  FEWSTEP_CHECK_VALUE(x.defined() && x.dim() >= 1 && x.size(0) >= 1 && x.numel() > 0,
                      "x should be a non-empty tensor [N, ...], got ", x.defined() ? x.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(reference.defined() && reference.sizes() == x.sizes(), "reference should have x's shape ",
                      x.sizes(), ", got ", reference.defined() ? reference.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_TYPE(x.is_floating_point(), "x should be a floating-point tensor, got ", x.scalar_type());
  FEWSTEP_CHECK_TYPE(reference.is_floating_point(), "reference should be a floating-point tensor, got ",
                     reference.scalar_type());
  const at::Tensor diff = x.detach().to(at::kDouble) - reference.detach().to(x.device(), at::kDouble);
  return diff.reshape({x.size(0), -1}).pow(2).mean(1).sqrt();
}

CoupledError coupled_error(const at::Tensor& x, const at::Tensor& reference) {
  CoupledError out;
  out.per_sample = per_sample_rms(x, reference);
  const at::Tensor e = out.per_sample.to(at::kCPU);
  out.n = e.size(0);
  const at::Tensor sorted = std::get<0>(e.sort());
  const int64_t mid = out.n / 2;
  out.median = out.n % 2 == 1 ? sorted[mid].item<double>()
                              : 0.5 * (sorted[mid - 1].item<double>() + sorted[mid].item<double>());
  out.mean = e.mean().item<double>();
  out.rmse = e.pow(2).mean().sqrt().item<double>();
  out.max = sorted[out.n - 1].item<double>();
  return out;
}

}  // namespace fewstep
