#include "fewstep/train/consistency_curriculum.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

void CtCurriculum::validate() const {
  FEWSTEP_CHECK_VALUE(s0 >= 2 && s1 >= s0, "CtCurriculum: need 2 <= s0 <= s1, got s0 = ", s0, ", s1 = ", s1);
  FEWSTEP_CHECK_VALUE(mu0 > 0.0 && mu0 < 1.0, "CtCurriculum.mu0 must be in (0, 1), got ", mu0);
  FEWSTEP_CHECK_VALUE(total_steps >= 1, "CtCurriculum.total_steps must be >= 1, got ", total_steps);
}

int64_t CtCurriculum::points(int64_t k) const {
  const double frac = static_cast<double>(std::min(k, total_steps)) / static_cast<double>(total_steps);
  const double a = static_cast<double>(s1 + 1) * static_cast<double>(s1 + 1) - static_cast<double>(s0 * s0);
  const double root = std::sqrt(frac * a + static_cast<double>(s0 * s0));
  // ⌈root − 1⌉ with a guard against round-off just above an integer (e.g. √(s0²) = s0 exactly).
  return static_cast<int64_t>(std::ceil(root - 1.0 - 1e-9)) + 1;
}

double CtCurriculum::target_ema(int64_t k) const {
  return std::exp(static_cast<double>(s0) * std::log(mu0) / static_cast<double>(points(k)));
}

void IctCurriculum::validate() const {
  FEWSTEP_CHECK_VALUE(s0 >= 1 && s1 >= s0, "IctCurriculum: need 1 <= s0 <= s1, got s0 = ", s0, ", s1 = ", s1);
  FEWSTEP_CHECK_VALUE(total_steps >= 1, "IctCurriculum.total_steps must be >= 1, got ", total_steps);
}

int64_t IctCurriculum::points(int64_t k) const {
  const int64_t doublings = static_cast<int64_t>(std::floor(std::log2(static_cast<double>(s1 / s0)))) + 1;
  const int64_t k_prime = std::max<int64_t>(1, total_steps / doublings);
  const int64_t level = std::min<int64_t>(k / k_prime, 62);
  const double n = std::min(static_cast<double>(s0) * std::ldexp(1.0, static_cast<int>(level)), static_cast<double>(s1));
  return static_cast<int64_t>(n) + 1;
}

void EctCurriculum::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(q) && q > 1.0, "EctCurriculum.q must be > 1, got ", q);
  FEWSTEP_CHECK_VALUE(std::isfinite(k) && k >= 0.0, "EctCurriculum.k must be >= 0, got ", k);
  FEWSTEP_CHECK_VALUE(std::isfinite(b) && b >= 0.0, "EctCurriculum.b must be >= 0, got ", b);
  FEWSTEP_CHECK_VALUE(stages >= 1, "EctCurriculum.stages must be >= 1, got ", stages);
  FEWSTEP_CHECK_VALUE(total_steps >= 1, "EctCurriculum.total_steps must be >= 1, got ", total_steps);
}

int64_t EctCurriculum::stage(int64_t step) const {
  const int64_t s = static_cast<int64_t>((static_cast<double>(std::max<int64_t>(step, 0)) * static_cast<double>(stages)) /
                                         static_cast<double>(total_steps));
  return std::min(s, stages - 1);
}

double EctCurriculum::r(double t, int64_t step) const {
  const double n = 1.0 + k / (1.0 + std::exp(b * t));  // 1 + k sigmoid(−b t)
  const double decay = std::pow(q, -static_cast<double>(stage(step) + 1));
  return std::max(0.0, t * (1.0 - decay * n));
}

std::vector<double> lognormal_index_probabilities(const std::vector<double>& sigmas, double p_mean, double p_std) {
  FEWSTEP_CHECK_VALUE(sigmas.size() >= 2, "lognormal_index_probabilities: need >= 2 noise levels, got ",
                      sigmas.size());
  FEWSTEP_CHECK_VALUE(p_std > 0.0, "lognormal_index_probabilities: p_std must be positive, got ", p_std);
  std::vector<double> p(sigmas.size() - 1);
  double total = 0.0;
  const auto cdf = [&](double s) { return std::erf((std::log(s) - p_mean) / (std::sqrt(2.0) * p_std)); };
  for (size_t i = 0; i + 1 < sigmas.size(); ++i) {
    FEWSTEP_CHECK_VALUE(sigmas[i] > 0.0 && sigmas[i + 1] > sigmas[i],
                        "lognormal_index_probabilities: levels must be positive and increasing, got sigmas[", i,
                        "] = ", sigmas[i], ", sigmas[", i + 1, "] = ", sigmas[i + 1]);
    p[i] = cdf(sigmas[i + 1]) - cdf(sigmas[i]);
    total += p[i];
  }
  FEWSTEP_CHECK_VALUE(total > 0.0, "lognormal_index_probabilities: the levels carry no probability mass");
  for (double& v : p) v /= total;
  return p;
}

}  // namespace fewstep
