// Host (float64) helpers shared by the exponential-integrator steppers (unipc, deis): the
// φ functions, a tiny dense solve for their coefficient systems, and Gauss–Legendre nodes.
// Internal to src/solvers; nothing here touches tensors.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"

namespace fewstep::detail {

/// φ_k(z) = Σ_{m≥0} z^m/(m+k)! (φ_0 = e^z, φ_{k+1}(z) = (φ_k(z) − 1/k!)/z), for 0 ≤ k ≤ 8.
/// The recurrence cancels for small |z|, so |z| < 1 uses the series (30 terms: < 1e-30 tail).
inline double phi(int k, double z) {
  if (std::abs(z) < 1.0) {
    double fact = 1.0;  // k!
    for (int i = 2; i <= k; ++i) fact *= i;
    double term = 1.0 / fact, sum = 0.0;
    for (int m = 0; m < 30; ++m) {
      sum += term;
      term *= z / (m + k + 1);
    }
    return sum;
  }
  double value = std::exp(z), fact = 1.0;  // φ_0, 0!
  for (int i = 0; i < k; ++i) {
    value = (value - 1.0 / fact) / z;
    fact *= (i + 1);
  }
  return value;
}

/// Solves the n×n system A w = b (row-major A, n ≤ 4) by Gaussian elimination with partial pivoting.
inline std::vector<double> solve_small(std::vector<double> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r * n + c]) > std::abs(a[p * n + c])) p = r;
    FEWSTEP_CHECK(a[p * n + c] != 0.0, "singular coefficient system (repeated times in the step history?)");
    if (p != c) {
      for (size_t k = 0; k < n; ++k) std::swap(a[c * n + k], a[p * n + k]);
      std::swap(b[c], b[p]);
    }
    for (size_t r = c + 1; r < n; ++r) {
      const double f = a[r * n + c] / a[c * n + c];
      for (size_t k = c; k < n; ++k) a[r * n + k] -= f * a[c * n + k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> w(n);
  for (size_t i = n; i-- > 0;) {
    double acc = b[i];
    for (size_t k = i + 1; k < n; ++k) acc -= a[i * n + k] * w[k];
    w[i] = acc / a[i * n + i];
  }
  return w;
}

/// n-point Gauss–Legendre nodes and weights on [0, 1] (Newton on P_n, to round-off).
inline std::pair<std::vector<double>, std::vector<double>> gauss_legendre01(int n) {
  std::vector<double> x(n), w(n);
  const double pi = std::acos(-1.0);
  for (int i = 0; i < n; ++i) {
    double z = std::cos(pi * (i + 0.75) / (n + 0.5)), dp = 0.0;
    for (int it = 0; it < 100; ++it) {
      double p0 = 1.0, p1 = z;  // P_0, P_1
      for (int k = 2; k <= n; ++k) {
        const double p2 = ((2 * k - 1) * z * p1 - (k - 1) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = n * (z * p1 - p0) / (z * z - 1.0);
      const double dz = p1 / dp;
      z -= dz;
      if (std::abs(dz) < 1e-16) break;
    }
    x[i] = 0.5 * (1.0 - z);
    w[i] = 1.0 / ((1.0 - z * z) * dp * dp);  // = 2/((1−z²)P_n'²) scaled by ½ for [0, 1]
  }
  return {x, w};
}

}  // namespace fewstep::detail
