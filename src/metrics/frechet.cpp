#include "fewstep/metrics/frechet.h"

#include <ATen/ATen.h>

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

void check_stats(const GaussianStats& s, const char* name) {
  FEWSTEP_CHECK_VALUE(s.mean.defined() && s.mean.dim() == 1, name, ".mean should be a 1-D tensor [D], got ",
                      s.mean.defined() ? s.mean.sizes() : at::IntArrayRef{});
  const int64_t d = s.mean.size(0);
  FEWSTEP_CHECK_VALUE(s.cov.defined() && s.cov.dim() == 2 && s.cov.size(0) == d && s.cov.size(1) == d, name,
                      ".cov should be [", d, ", ", d, "] to match ", name, ".mean, got ",
                      s.cov.defined() ? s.cov.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(s.count >= 1, name, ".count should be >= 1, got ", s.count);
}

// Σ^{1/2} of a symmetric positive semi-definite matrix (eigenvalues clamped at 0).
at::Tensor psd_sqrt(const at::Tensor& sym) {
  auto [vals, vecs] = at::linalg_eigh(sym);
  return at::matmul(vecs * vals.clamp_min(0.0).sqrt().unsqueeze(0), vecs.transpose(0, 1));
}

}  // namespace

GaussianStats gaussian_stats(const at::Tensor& features) {
  FEWSTEP_CHECK_VALUE(features.defined() && features.dim() == 2 && features.size(0) >= 1 && features.size(1) >= 1,
                      "features should be a 2-D tensor [N, D] with N >= 1 and D >= 1, got ",
                      features.defined() ? features.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_TYPE(features.is_floating_point(), "features should be a floating-point tensor, got ",
                     features.scalar_type());
  const at::Tensor f = features.detach().to(at::kCPU, at::kDouble);
  FEWSTEP_CHECK_VALUE(at::isfinite(f).all().item<bool>(), "features contain NaN or Inf values");
  const int64_t n = f.size(0);
  GaussianStats s;
  s.count = n;
  s.mean = f.mean(0);
  const at::Tensor centred = f - s.mean.unsqueeze(0);
  s.cov = n > 1 ? at::matmul(centred.transpose(0, 1), centred) / static_cast<double>(n - 1)
                : at::zeros({f.size(1), f.size(1)}, f.options());
  return s;
}

double frechet_distance(const GaussianStats& a, const GaussianStats& b) {
  check_stats(a, "a");
  check_stats(b, "b");
  FEWSTEP_CHECK_VALUE(a.mean.size(0) == b.mean.size(0), "a and b should have the same dimension, got ",
                      a.mean.size(0), " and ", b.mean.size(0));
  const auto f64 = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble); };
  const at::Tensor mu_a = f64(a.mean), mu_b = f64(b.mean);
  // Symmetrise: the eigensolver reads one triangle only.
  const at::Tensor cov_a = 0.5 * (f64(a.cov) + f64(a.cov).transpose(0, 1));
  const at::Tensor cov_b = 0.5 * (f64(b.cov) + f64(b.cov).transpose(0, 1));
  const at::Tensor s = psd_sqrt(cov_a);
  at::Tensor m = at::matmul(at::matmul(s, cov_b), s);
  m = 0.5 * (m + m.transpose(0, 1));
  const double cross = at::linalg_eigvalsh(m).clamp_min(0.0).sqrt().sum().item<double>();
  const double mean_term = (mu_a - mu_b).pow(2).sum().item<double>();
  const double tr_a = cov_a.trace().item<double>(), tr_b = cov_b.trace().item<double>();
  const double fd = mean_term + tr_a + tr_b - 2.0 * cross;
  FEWSTEP_CHECK(std::isfinite(fd), "frechet_distance: result is not finite (", fd,
                "); the statistics contain NaN or Inf");
  // Cancellation can leave tiny negative values for (nearly) identical Gaussians.
  return std::max(fd, 0.0);
}

double frechet_distance(const at::Tensor& features_a, const at::Tensor& features_b) {
  FEWSTEP_CHECK_VALUE(features_a.defined() && features_b.defined() && features_a.dim() == 2 &&
                          features_b.dim() == 2 && features_a.size(1) == features_b.size(1),
                      "features_a and features_b should be [N, D] and [M, D] with the same D, got ",
                      features_a.defined() ? features_a.sizes() : at::IntArrayRef{}, " and ",
                      features_b.defined() ? features_b.sizes() : at::IntArrayRef{});
  return frechet_distance(gaussian_stats(features_a), gaussian_stats(features_b));
}

}  // namespace fewstep
