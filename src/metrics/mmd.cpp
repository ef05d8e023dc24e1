#include "fewstep/metrics/mmd.h"

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

at::Tensor rows(const at::Tensor& x, const char* name) {
  FEWSTEP_CHECK_VALUE(x.dim() >= 1 && x.size(0) >= 2, "mmd: ", name, " needs at least 2 samples, got shape ",
                      x.sizes());
  return x.detach().to(at::kCPU, at::kDouble).reshape({x.size(0), -1}).contiguous();
}

// Σ_{i,j} k(a_i, b_j), in blocks of rows of a.
double kernel_sum(const at::Tensor& a, const at::Tensor& b, double inv_two_h2) {
  double total = 0;
  const int64_t block = 1024;
  for (int64_t i = 0; i < a.size(0); i += block) {
    auto d2 = at::cdist(a.slice(0, i, std::min(i + block, a.size(0))), b).pow(2);
    total += at::exp(d2 * -inv_two_h2).sum().item<double>();
  }
  return total;
}

}  // namespace

double mmd2_rbf(const at::Tensor& x, const at::Tensor& y, double bandwidth) {
  FEWSTEP_CHECK_VALUE(std::isfinite(bandwidth) && bandwidth > 0, "mmd2_rbf: bandwidth must be positive, got ",
                      bandwidth);
  auto a = rows(x, "x"), b = rows(y, "y");
  FEWSTEP_CHECK_VALUE(a.size(1) == b.size(1), "mmd2_rbf: x and y must have the same sample size, got ", a.size(1),
                      " and ", b.size(1));
  const double c = 1.0 / (2 * bandwidth * bandwidth);
  const double n = static_cast<double>(a.size(0)), m = static_cast<double>(b.size(0));
  // The diagonal terms k(x_i, x_i) = 1 are removed from the within-set sums.
  const double kxx = (kernel_sum(a, a, c) - n) / (n * (n - 1));
  const double kyy = (kernel_sum(b, b, c) - m) / (m * (m - 1));
  const double kxy = kernel_sum(a, b, c) / (n * m);
  return kxx + kyy - 2 * kxy;
}

double median_pairwise_distance(const at::Tensor& x, int64_t max_n) {
  FEWSTEP_CHECK_VALUE(max_n >= 2, "median_pairwise_distance: max_n must be >= 2, got ", max_n);
  auto a = rows(x, "x");
  a = a.slice(0, 0, std::min(max_n, a.size(0)));
  auto d = at::cdist(a, a);
  auto upper = at::triu(at::ones_like(d, at::kBool), 1);
  return d.masked_select(upper).median().item<double>();
}

}  // namespace fewstep
