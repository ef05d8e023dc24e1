// Shared helpers of the C++ tests: exact single-Gaussian flows, log-log slope fits.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep::testing {

/// A fresh empty directory for one test ($FEWSTEP_TEST_TMP or /tmp), unique per process.
inline std::string scratch_dir(const std::string& suite, const std::string& name) {
  const char* env = std::getenv("FEWSTEP_TEST_TMP");
  std::filesystem::path dir = env && *env ? env : "/tmp";
  dir /= "fewstep_test_" + suite + "_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

/// The message of the c10::ValueError that f() throws (a test failure if it throws none).
template <class F>
std::string value_error_message(F f) {
  try {
    f();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "no c10::ValueError thrown";
  return "";
}

inline at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

/// One diagonal Gaussian N(mean, diag(var)) as a mixture.
inline std::shared_ptr<GaussianMixture> single_gaussian(const at::Tensor& mean, const at::Tensor& var) {
  return std::make_shared<GaussianMixture>(at::ones({1}, at::kDouble), mean.to(at::kDouble).view({1, -1}),
                                           var.to(at::kDouble).view({1, -1}));
}

/// Exact probability-flow ODE solution for single-Gaussian data: each coordinate's marginal
/// is N(α μ, α² s² + σ²), and the flow maps standardised values to standardised values.
inline at::Tensor single_gaussian_flow(const NoiseSchedule& schedule, const at::Tensor& x_T, const at::Tensor& mean,
                                       const at::Tensor& var, double t_start, double t_end) {
  const double a0 = schedule.alpha(t_start), s0 = schedule.sigma(t_start);
  const double a1 = schedule.alpha(t_end), s1 = schedule.sigma(t_end);
  auto std0 = (var * (a0 * a0) + s0 * s0).sqrt();
  auto std1 = (var * (a1 * a1) + s1 * s1).sqrt();
  return mean * a1 + (x_T - mean * a0) * (std1 / std0);
}

/// Least-squares slope of log(err) against log(n).
inline double loglog_slope(const std::vector<double>& n, const std::vector<double>& err) {
  const size_t m = n.size();
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < m; ++i) {
    const double x = std::log(n[i]), y = std::log(err[i]);
    sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  return (m * sxy - sx * sy) / (m * sxx - sx * sx);
}

/// Root mean square over samples of the per-sample Euclidean error.
inline double rmse(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).flatten(1).sum(1).mean().sqrt().item<double>();
}

}  // namespace fewstep::testing
