// Noise schedules and time grids: closed forms, inverses, derivatives, grids, and every
// documented invalid input.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/timesteps.h"

namespace fs = fewstep;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

/// Runs fn, expects a c10::ValueError whose message contains every one of `parts`.
void expect_value_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const c10::ValueError& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected c10::ValueError, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected c10::ValueError mentioning '" << (parts.empty() ? "" : parts[0]) << "', nothing thrown";
}

struct ScheduleCase {
  std::string name;
  std::function<fs::SchedulePtr()> make;
};
// gtest prints the case by name instead of dumping its bytes.
void PrintTo(const ScheduleCase& c, std::ostream* os) { *os << c.name; }

std::vector<ScheduleCase> all_schedules() {
  return {
      {"VPLinear", [] { return std::make_shared<fs::VPLinear>(); }},
      {"VPLinearZeroBetaMin", [] { return std::make_shared<fs::VPLinear>(0.0, 12.0, 1e-4, 1.0); }},
      {"VPCosine", [] { return std::make_shared<fs::VPCosine>(); }},
      {"DDPMLinear", [] { return fs::VPDiscrete::ddpm_linear(); }},
      {"ScaledLinear", [] { return fs::VPDiscrete::scaled_linear(); }},
      {"DDPMLinearN20", [] { return fs::VPDiscrete::ddpm_linear(20, 1e-3, 0.3); }},
      {"VE", [] { return std::make_shared<fs::VE>(); }},
      {"Flow", [] { return std::make_shared<fs::FlowMatching>(); }},
  };
}

/// n points spanning [t_min, t_max]: log-uniform when the range covers decades (VE), so
/// small times are sampled too; both end points included.
std::vector<double> sample_times(const fs::NoiseSchedule& s, int n) {
  std::vector<double> ts;
  const bool log_spaced = s.t_max() / s.t_min() > 100.0;
  for (int i = 0; i < n; ++i) {
    const double r = static_cast<double>(i) / (n - 1);
    ts.push_back(log_spaced ? s.t_min() * std::pow(s.t_max() / s.t_min(), r) : s.t_min() + r * (s.t_max() - s.t_min()));
  }
  ts.front() = s.t_min();
  ts.back() = s.t_max();
  return ts;
}

/// DDPM's linear betas, written here independently of the library: linspace(b0, b1, N).
std::vector<double> ddpm_alphas_cumprod(int n, double b0, double b1, bool scaled) {
  std::vector<double> out;
  double prod = 1.0;
  for (int i = 0; i < n; ++i) {
    double b;
    if (scaled) {
      const double r = std::sqrt(b0) + (std::sqrt(b1) - std::sqrt(b0)) * i / (n - 1);
      b = r * r;
    } else {
      b = b0 + (b1 - b0) * i / (n - 1);
    }
    prod *= 1.0 - b;
    out.push_back(prod);
  }
  return out;
}

class ScheduleTest : public ::testing::TestWithParam<ScheduleCase> {};

}  // namespace

// ---------------------------------------------------------------------------------------
// Properties every schedule must have
// ---------------------------------------------------------------------------------------

TEST_P(ScheduleTest, TimeLambdaRoundTrip) {
  auto s = GetParam().make();
  // λ is computed to a few ulps of max(|log α|, |log σ|) ≲ 20, and |t dλ/dt| ≳ 0.5 on these
  // ranges, so t(λ(t)) is good to ~1e-14 relative; 1e-10 leaves ample room.
  for (double t : sample_times(*s, 4001)) {
    const double back = s->t_of_lambda(s->lambda(t));
    EXPECT_NEAR(back, t, 1e-10 * t) << "t=" << t;
  }
}

TEST_P(ScheduleTest, LambdaStrictlyDecreasing) {
  auto s = GetParam().make();
  const auto ts = sample_times(*s, 20001);
  double prev = s->lambda(ts[0]);
  EXPECT_TRUE(std::isfinite(prev));
  for (size_t i = 1; i < ts.size(); ++i) {
    const double lam = s->lambda(ts[i]);
    ASSERT_TRUE(std::isfinite(lam)) << "t=" << ts[i];
    ASSERT_LT(lam, prev) << "t=" << ts[i];
    prev = lam;
  }
  EXPECT_DOUBLE_EQ(s->lambda_max(), s->lambda(s->t_min()));
  EXPECT_DOUBLE_EQ(s->lambda_min(), s->lambda(s->t_max()));
}

TEST_P(ScheduleTest, TOfLambdaMonotoneInLambda) {
  auto s = GetParam().make();
  const double lo = s->lambda_min(), hi = s->lambda_max();
  double prev = s->t_of_lambda(lo);
  for (int i = 1; i <= 5000; ++i) {
    const double t = s->t_of_lambda(lo + (hi - lo) * i / 5000.0);
    ASSERT_LT(t, prev);
    prev = t;
  }
}

TEST_P(ScheduleTest, DerivativesMatchCentralDifferences) {
  auto s = GetParam().make();
  const auto n_train = s->num_train_steps();
  for (double t : sample_times(*s, 41)) {
    if (n_train) {
      // Stay inside one segment of the piecewise-linear log α: move to a segment midpoint.
      const double n = static_cast<double>(*n_train);
      t = (std::floor(t * n) + 0.5) / n;
      if (t >= s->t_max()) t -= 1.0 / n;
    }
    double h = 1e-5 * t;
    if (n_train) h = std::min(h, 0.1 / static_cast<double>(*n_train));
    if (t - h < s->t_min() || t + h > s->t_max()) continue;
    // Truncation O(h² f''') ~ 1e-10 relative and round-off ~ ulp·|f|/h ~ 1e-10: 1e-6 is safe.
    const double fd_a = (s->log_alpha(t + h) - s->log_alpha(t - h)) / (2 * h);
    const double fd_s = (s->log_sigma(t + h) - s->log_sigma(t - h)) / (2 * h);
    EXPECT_NEAR(s->dlog_alpha_dt(t), fd_a, 1e-6 * std::max(1.0, std::abs(fd_a))) << "t=" << t;
    EXPECT_NEAR(s->dlog_sigma_dt(t), fd_s, 1e-6 * std::max(1.0, std::abs(fd_s))) << "t=" << t;
    EXPECT_LT(s->dlambda_dt(t), 0.0) << "t=" << t;
  }
}

TEST_P(ScheduleTest, DerivedQuantitiesConsistent) {
  auto s = GetParam().make();
  for (double t : sample_times(*s, 101)) {
    EXPECT_NEAR(s->alpha(t), std::exp(s->log_alpha(t)), 1e-15 * s->alpha(t));
    EXPECT_NEAR(s->sigma(t), std::exp(s->log_sigma(t)), 1e-15 * s->sigma(t));
    EXPECT_NEAR(s->sigma_tilde(t), s->sigma(t) / s->alpha(t), 1e-13 * s->sigma_tilde(t));
    EXPECT_NEAR(s->lambda(t), s->log_alpha(t) - s->log_sigma(t), 0.0);
    if (s->family() == fs::ScheduleFamily::VP) {
      const double a = s->alpha(t), sg = s->sigma(t);
      EXPECT_NEAR(a * a + sg * sg, 1.0, 1e-14) << "t=" << t;
    }
  }
}

TEST_P(ScheduleTest, GridsHaveTheDocumentedShape) {
  auto s = GetParam().make();
  for (auto sp : {fs::Spacing::Time, fs::Spacing::LogSNR, fs::Spacing::Quadratic, fs::Spacing::Karras}) {
    for (int64_t steps : {1, 2, 5, 10, 50, 1000}) {
      const auto g = fs::timesteps(*s, steps, sp);
      ASSERT_EQ(g.size(), static_cast<size_t>(steps + 1));
      EXPECT_EQ(g.front(), s->t_max());  // exact, no round-trip drift
      EXPECT_EQ(g.back(), s->t_min());
      for (size_t i = 1; i < g.size(); ++i) ASSERT_LT(g[i], g[i - 1]) << fs::to_string(sp) << " i=" << i;
      // Uniform in the spacing's own variable v: every increment equals (v_end − v_start)/steps.
      std::function<double(double)> v;
      switch (sp) {
        case fs::Spacing::Time: v = [](double t) { return t; }; break;
        case fs::Spacing::LogSNR: v = [&](double t) { return s->lambda(t); }; break;
        case fs::Spacing::Quadratic: v = [](double t) { return std::sqrt(t); }; break;
        default: v = [&](double t) { return std::exp(-s->lambda(t) / 7.0); }; break;  // σ̃^{1/ρ}
      }
      const double dv = (v(g.back()) - v(g.front())) / static_cast<double>(steps);
      // Each increment carries the round trip t(λ) error (~1e-14 relative in t, times |dv/dt|·t);
      // 1e-8 of the increment is far above that and far below any spacing mistake.
      for (size_t i = 1; i < g.size(); ++i) {
        ASSERT_NEAR(v(g[i]) - v(g[i - 1]), dv, 1e-8 * std::abs(dv) + 1e-13) << fs::to_string(sp) << " i=" << i;
      }
    }
  }
}

TEST_P(ScheduleTest, GridsHonourStartAndEnd) {
  auto s = GetParam().make();
  const double ts = s->t_min() + 0.7 * (s->t_max() - s->t_min());
  const double te = s->t_min() + 0.01 * (s->t_max() - s->t_min());
  for (auto sp : {"time", "logsnr", "quadratic", "karras"}) {
    const auto g = fs::timesteps(*s, 8, sp, ts, te);
    ASSERT_EQ(g.size(), 9u);
    EXPECT_EQ(g.front(), ts);
    EXPECT_EQ(g.back(), te);
    EXPECT_EQ(fs::validate_grid(*s, g), g);
  }
}

INSTANTIATE_TEST_SUITE_P(All, ScheduleTest, ::testing::ValuesIn(all_schedules()),
                         [](const ::testing::TestParamInfo<ScheduleCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Closed forms, checked against independent computations
// ---------------------------------------------------------------------------------------

TEST(VPLinear, LogAlphaIsHalfIntegralOfBeta) {
  const double b0 = 0.1, b1 = 20.0;
  fs::VPLinear s(b0, b1);
  for (double t : {1e-3, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    // Composite Simpson for ∫_0^t β(u) du, exact for the linear β up to round-off.
    const int n = 64;
    const double h = t / n;
    double sum = 0.0;
    for (int i = 0; i <= n; ++i) {
      const double w = (i == 0 || i == n) ? 1.0 : (i % 2 ? 4.0 : 2.0);
      sum += w * (b0 + (b1 - b0) * i * h);
    }
    const double integral = sum * h / 3.0;
    const double alpha = std::exp(-0.5 * integral);
    EXPECT_NEAR(s.alpha(t), alpha, 1e-13 * alpha) << "t=" << t;
    // σ = √(1 − α²) directly: 1 − α² loses ~ulp/(1 − α²) ≲ 1e-12 relative at t = 1e-3.
    const double sigma = std::sqrt(1.0 - alpha * alpha);
    EXPECT_NEAR(s.sigma(t), sigma, 1e-10 * sigma) << "t=" << t;
    EXPECT_NEAR(s.beta(t), -2.0 * s.dlog_alpha_dt(t), 1e-14 * s.beta(t));
  }
  // Reference value: λ(1) = log α − ½ log(1 − α²) with log α(1) = −(β1 − β0)/4 − β0/2 = −5.025.
  const double la = -5.025;
  EXPECT_NEAR(s.lambda(1.0), la - 0.5 * std::log(1.0 - std::exp(2 * la)), 1e-13);
}

TEST(VPCosine, MatchesTheCosineFormula) {
  const double sp = 0.008;
  fs::VPCosine s(sp);
  const double a0 = std::cos(0.5 * kPi * sp / (1 + sp));
  for (double t : {1e-3, 0.01, 0.2, 0.4999, 0.5, 0.5001, 0.8, 0.95, 0.9946}) {
    const double alpha = std::cos(0.5 * kPi * (t + sp) / (1 + sp)) / a0;
    // cos near π/2 has absolute error ~ulp, so the naive α is good to ~1e-14 relative here.
    EXPECT_NEAR(s.alpha(t), alpha, 1e-12 * alpha) << "t=" << t;
    // d log α/dt = −π/(2(1+s)) tan(π/2 (t+s)/(1+s)).
    const double d = -0.5 * kPi / (1 + sp) * std::tan(0.5 * kPi * (t + sp) / (1 + sp));
    EXPECT_NEAR(s.dlog_alpha_dt(t), d, 1e-11 * std::abs(d)) << "t=" << t;
    if (t >= 0.1) {
      // arccos form of the inverse (well conditioned away from t = 0).
      const double lam = s.lambda(t);
      const double a = 1.0 / std::sqrt(1.0 + std::exp(-2 * lam));
      const double t_ref = 2 * (1 + sp) / kPi * std::acos(a * a0) - sp;
      EXPECT_NEAR(s.t_of_lambda(lam), t_ref, 1e-11 * t) << "t=" << t;
    }
  }
}

TEST(VPDiscrete, KnotsReproduceDDPMAlphasCumprod) {
  for (bool scaled : {false, true}) {
    const double b0 = scaled ? 0.00085 : 1e-4, b1 = scaled ? 0.012 : 0.02;
    auto s = scaled ? fs::VPDiscrete::scaled_linear() : fs::VPDiscrete::ddpm_linear();
    const auto ac = ddpm_alphas_cumprod(1000, b0, b1, scaled);
    ASSERT_EQ(s->num_train_steps(), 1000);
    ASSERT_EQ(s->alphas_cumprod().size(), 1000u);
    EXPECT_DOUBLE_EQ(s->t_min(), 1e-3);
    EXPECT_DOUBLE_EQ(s->t_max(), 1.0);
    for (int n = 0; n < 1000; ++n) {
      const double t = (n + 1) / 1000.0;
      // Both cumprods accumulate ≤ 1000 roundings: ≲ 2e-13 relative.
      EXPECT_NEAR(s->alphas_cumprod()[n], ac[n], 1e-12 * ac[n]) << "n=" << n;
      const double la = 0.5 * std::log(ac[n]);
      EXPECT_NEAR(s->log_alpha(t), la, 1e-12 * std::abs(la) + 1e-15) << "n=" << n;
      // The inverse lands exactly on the knot.
      EXPECT_NEAR(s->t_of_lambda(s->lambda(t)), t, 1e-13 * t) << "n=" << n;
    }
  }
  // Well-known anchor: DDPM's ᾱ_999 ≈ 4.0358e-5 (and ᾱ_0 = 1 − 1e-4).
  auto d = fs::VPDiscrete::ddpm_linear();
  EXPECT_NEAR(d->alphas_cumprod().back(), 4.0358e-5, 1e-9);
  EXPECT_DOUBLE_EQ(d->alphas_cumprod().front(), 0.9999);
}

TEST(VPDiscrete, LogAlphaPiecewiseLinearAndInverseExact) {
  auto s = fs::VPDiscrete::ddpm_linear(50, 1e-3, 0.2);
  const auto& ac = s->alphas_cumprod();
  for (int n = 0; n + 1 < 50; ++n) {
    const double la0 = 0.5 * std::log(ac[n]), la1 = 0.5 * std::log(ac[n + 1]);
    for (double f : {0.1, 0.25, 0.5, 0.9}) {
      const double t = (n + 1 + f) / 50.0;
      const double expect = la0 + f * (la1 - la0);
      EXPECT_NEAR(s->log_alpha(t), expect, 1e-13 * std::abs(expect) + 1e-15) << "n=" << n << " f=" << f;
      // Slope of the segment, on both sides of its midpoint.
      EXPECT_NEAR(s->dlog_alpha_dt(t), (la1 - la0) * 50.0, 1e-12 * std::abs(la1 - la0) * 50.0);
      // Inverse of λ at a point inside the segment, computed from log α by hand: λ = la − ½ log(1 − e^{2la}).
      const double lam = expect - 0.5 * std::log(-std::expm1(2 * expect));
      EXPECT_NEAR(s->t_of_lambda(lam), t, 1e-12 * t);
    }
  }
}

TEST(VPDiscrete, FactoriesAgree) {
  std::vector<double> betas;
  for (int i = 0; i < 100; ++i) betas.push_back(1e-4 + (0.02 - 1e-4) * i / 99.0);
  auto a = fs::VPDiscrete::from_betas(betas);
  auto b = fs::VPDiscrete::ddpm_linear(100);
  auto c = fs::VPDiscrete::from_alphas_cumprod(a->alphas_cumprod());
  for (double t : {0.01, 0.123, 0.5, 0.777, 1.0}) {
    EXPECT_NEAR(a->log_alpha(t), b->log_alpha(t), 1e-13 * std::abs(b->log_alpha(t)));
    EXPECT_EQ(a->log_alpha(t), c->log_alpha(t));
  }
}

TEST(VE, SigmaIsTime) {
  fs::VE s(0.002, 80.0);
  for (double t : {0.002, 0.1, 1.0, 17.0, 80.0}) {
    EXPECT_EQ(s.alpha(t), 1.0);
    EXPECT_NEAR(s.sigma(t), t, 1e-15 * t);
    EXPECT_NEAR(s.lambda(t), -std::log(t), 1e-15);
    EXPECT_NEAR(s.t_of_lambda(-std::log(t)), t, 1e-15 * t);
  }
  EXPECT_EQ(s.t_min(), 0.002);
  EXPECT_EQ(s.t_max(), 80.0);
}

TEST(FlowMatching, LinearInterpolation) {
  fs::FlowMatching s;
  for (double t : {1e-3, 0.1, 0.5, 0.9, 0.999}) {
    EXPECT_NEAR(s.alpha(t), 1.0 - t, 1e-15);
    EXPECT_NEAR(s.sigma(t), t, 1e-16);
    EXPECT_NEAR(s.dlog_alpha_dt(t), -1.0 / (1.0 - t), 1e-13 / (1.0 - t));
    EXPECT_NEAR(s.t_of_lambda(std::log((1 - t) / t)), t, 1e-14 * t);
  }
  // Far outside the range, t(λ) neither overflows nor returns NaN.
  EXPECT_NEAR(s.t_of_lambda(800.0), 0.0, 1e-300);
  EXPECT_EQ(s.t_of_lambda(-800.0), 1.0);
}

TEST(Schedules, NamesReprsAndFamilies) {
  EXPECT_EQ(fs::VPLinear().repr(), "VPLinear(beta_min=0.1, beta_max=20, t_min=0.001, t_max=1)");
  EXPECT_EQ(fs::VPCosine().repr(), "VPCosine(s=0.008, t_min=0.001, t_max=0.9946)");
  EXPECT_EQ(fs::VE().repr(), "VE(sigma_min=0.002, sigma_max=80)");
  EXPECT_EQ(fs::FlowMatching().repr(), "FlowMatching(t_min=0.001, t_max=0.999)");
  EXPECT_EQ(fs::VPDiscrete::ddpm_linear()->repr(),
            "VPDiscrete(N=1000, origin=ddpm_linear(beta_start=0.0001, beta_end=0.02))");
  EXPECT_EQ(fs::VPLinear().name(), "vp_linear");
  EXPECT_EQ(fs::VPCosine().name(), "vp_cosine");
  EXPECT_EQ(fs::VPDiscrete::scaled_linear()->name(), "vp_discrete");
  EXPECT_EQ(fs::VE().name(), "ve");
  EXPECT_EQ(fs::FlowMatching().name(), "flow");
  EXPECT_EQ(fs::to_string(fs::VE().family()), "ve");
  EXPECT_EQ(fs::to_string(fs::FlowMatching().family()), "flow");
  EXPECT_EQ(fs::to_string(fs::VPCosine().family()), "vp");
  EXPECT_FALSE(fs::VPLinear().num_train_steps().has_value());
}

// ---------------------------------------------------------------------------------------
// Invalid parameters: c10::ValueError naming the argument (and the bad value)
// ---------------------------------------------------------------------------------------

TEST(ScheduleErrors, InvalidParametersNameTheArgument) {
  using V = std::vector<std::string>;
  // VPLinear
  expect_value_error([] { (void)fs::VPLinear(-0.1, 20.0); }, V{"beta_min", "-0.1"});
  expect_value_error([] { (void)fs::VPLinear(kNaN, 20.0); }, V{"beta_min", "nan"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 0.05); }, V{"beta_max", "beta_min=0.1", "beta_max=0.05"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 0.1); }, V{"beta_max"});
  expect_value_error([] { (void)fs::VPLinear(0.1, kInf); }, V{"beta_max", "inf"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 20.0, 0.0); }, V{"t_min", "t_min=0"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 20.0, -1e-3); }, V{"t_min"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 20.0, kNaN); }, V{"t_min"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 20.0, 0.5, 0.4); }, V{"t_max", "t_max=0.4"});
  expect_value_error([] { (void)fs::VPLinear(0.1, 20.0, 1e-3, 1.5); }, V{"t_max", "1.5"});
  // VPCosine
  expect_value_error([] { (void)fs::VPCosine(-0.01); }, V{"s must", "s=-0.01"});
  expect_value_error([] { (void)fs::VPCosine(kInf); }, V{"s must"});
  expect_value_error([] { (void)fs::VPCosine(0.008, 1e-3, 1.0); }, V{"t_max", "t_max=1"});
  expect_value_error([] { (void)fs::VPCosine(0.008, 0.0); }, V{"t_min"});
  expect_value_error([] { (void)fs::VPCosine(0.008, 0.5, 0.5); }, V{"t_max"});
  // VE
  expect_value_error([] { (void)fs::VE(0.0, 80.0); }, V{"sigma_min", "sigma_min=0"});
  expect_value_error([] { (void)fs::VE(-1.0, 80.0); }, V{"sigma_min"});
  expect_value_error([] { (void)fs::VE(1.0, 0.5); }, V{"sigma_max", "sigma_max=0.5"});
  expect_value_error([] { (void)fs::VE(0.002, kInf); }, V{"sigma_max"});
  expect_value_error([] { (void)fs::VE(kNaN, 80.0); }, V{"sigma_min"});
  // FlowMatching
  expect_value_error([] { (void)fs::FlowMatching(0.0, 0.999); }, V{"t_min"});
  expect_value_error([] { (void)fs::FlowMatching(1e-3, 1.5); }, V{"t_max", "t_max=1.5"});  // t_max = 1 is allowed
  expect_value_error([] { (void)fs::FlowMatching(0.5, 0.4); }, V{"t_max"});
  expect_value_error([] { (void)fs::FlowMatching(1e-3, kNaN); }, V{"t_max"});
  // VPDiscrete
  expect_value_error([] { fs::VPDiscrete::from_betas({0.1}); }, V{"betas", "at least 2"});
  expect_value_error([] { fs::VPDiscrete::from_betas({0.1, 1.0}); }, V{"betas[1]", "betas[1]=1"});
  expect_value_error([] { fs::VPDiscrete::from_betas({0.0, 0.1}); }, V{"betas[0]"});
  expect_value_error([] { fs::VPDiscrete::from_betas({0.1, kNaN}); }, V{"betas[1]"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({0.5}); }, V{"alphas_cumprod", "at least 2"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({0.9, 0.95}); },
                     V{"alphas_cumprod", "strictly decreasing", "alphas_cumprod[1]=0.95"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({0.9, 0.9}); }, V{"strictly decreasing"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({1.0, 0.5}); }, V{"alphas_cumprod[0]"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({0.9, 0.0}); }, V{"alphas_cumprod[1]"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({0.9, -0.1}); }, V{"alphas_cumprod[1]"});
  expect_value_error([] { fs::VPDiscrete::from_alphas_cumprod({kNaN, 0.1}); }, V{"alphas_cumprod[0]"});
  expect_value_error([] { fs::VPDiscrete::ddpm_linear(1); }, V{"num_train_steps", "num_train_steps=1"});
  expect_value_error([] { fs::VPDiscrete::ddpm_linear(1000, 0.0); }, V{"beta_start"});
  expect_value_error([] { fs::VPDiscrete::ddpm_linear(1000, 1e-4, 1.0); }, V{"beta_end", "beta_end=1"});
  expect_value_error([] { fs::VPDiscrete::scaled_linear(0); }, V{"num_train_steps"});
  expect_value_error([] { fs::VPDiscrete::scaled_linear(1000, -1e-3); }, V{"beta_start"});
  expect_value_error([] { fs::VPDiscrete::scaled_linear(1000, 1e-3, kNaN); }, V{"beta_end"});
}

TEST(ScheduleErrors, CheckTime) {
  using V = std::vector<std::string>;
  fs::VPLinear s;
  s.check_time(1e-3, "t");
  s.check_time(1.0, "t");
  s.check_time(1.0 + 1e-13, "t");  // inside the 1e-12 relative slack
  s.check_time(1e-3 * (1 - 1e-13), "t");
  expect_value_error([&] { s.check_time(1.5, "t_query"); }, V{"t_query", "t_query=1.5", "[0.001, 1]"});
  expect_value_error([&] { s.check_time(1.0 + 1e-9, "t"); }, V{"t=1.000000001"});
  expect_value_error([&] { s.check_time(5e-4, "t"); }, V{"t=0.0005"});
  expect_value_error([&] { s.check_time(kNaN, "t"); }, V{"t=nan"});
}

// ---------------------------------------------------------------------------------------
// Discrete grids: diffusers' leading / trailing indices
// ---------------------------------------------------------------------------------------

namespace {
/// Grid times of evaluation indices (n ↦ (n+1)/N) followed by the end point.
std::vector<double> index_grid(const std::vector<int64_t>& idx, int64_t n_train, double t_end) {
  std::vector<double> g;
  for (auto n : idx) g.push_back(static_cast<double>(n + 1) / static_cast<double>(n_train));
  g.push_back(t_end);
  return g;
}
}  // namespace

TEST(DiscreteGrids, LeadingAndTrailingMatchDiffusers) {
  auto s = fs::VPDiscrete::ddpm_linear(1000);
  // steps = 10: N/steps = 100 exactly.
  EXPECT_EQ(fs::timesteps(*s, 10, fs::Spacing::Leading),
            index_grid({901, 801, 701, 601, 501, 401, 301, 201, 101, 1}, 1000, 1e-3));
  EXPECT_EQ(fs::timesteps(*s, 10, "trailing"),
            index_grid({999, 899, 799, 699, 599, 499, 399, 299, 199, 99}, 1000, 1e-3));
  // steps = 7: leading uses ⌊1000/7⌋ = 142, so (6−i)·142 + 1.
  EXPECT_EQ(fs::timesteps(*s, 7, "leading"), index_grid({853, 711, 569, 427, 285, 143, 1}, 1000, 1e-3));
  // trailing: round(1000 − i·142.857…) − 1 = round(1000, 857.14, 714.29, 571.43, 428.57, 285.71, 142.86) − 1.
  EXPECT_EQ(fs::timesteps(*s, 7, "trailing"), index_grid({999, 856, 713, 570, 428, 285, 142}, 1000, 1e-3));
  // steps = 16: N/steps = 62.5 puts every other value on a .5 tie; numpy rounds ties to even
  // (937.5 → 938, 812.5 → 812, ...).
  EXPECT_EQ(fs::timesteps(*s, 16, "trailing"),
            index_grid({999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61}, 1000, 1e-3));
  // One step each.
  EXPECT_EQ(fs::timesteps(*s, 1, "leading"), index_grid({1}, 1000, 1e-3));
  EXPECT_EQ(fs::timesteps(*s, 1, "trailing"), index_grid({999}, 1000, 1e-3));
  // A custom end point below the last evaluation.
  const auto g = fs::timesteps(*s, 10, "leading", std::nullopt, 0.0015);
  EXPECT_EQ(g.back(), 0.0015);
  EXPECT_EQ(g[9], 0.002);
}

TEST(DiscreteGrids, FormulaHoldsForManyStepCounts) {
  for (int64_t N : {20, 1000}) {
    auto s = fs::VPDiscrete::ddpm_linear(N, 1e-3, 0.2);
    for (int64_t steps = 1; steps < N / 2; ++steps) {
      std::vector<int64_t> lead, trail;
      for (int64_t i = 0; i < steps; ++i) {
        lead.push_back((steps - 1 - i) * (N / steps) + 1);
        trail.push_back(static_cast<int64_t>(std::nearbyint(N - i * (static_cast<double>(N) / steps))) - 1);
      }
      EXPECT_EQ(fs::timesteps(*s, steps, "leading"), index_grid(lead, N, 1.0 / N)) << "N=" << N << " steps=" << steps;
      EXPECT_EQ(fs::timesteps(*s, steps, "trailing"), index_grid(trail, N, 1.0 / N)) << "N=" << N << " steps=" << steps;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Grid errors
// ---------------------------------------------------------------------------------------

TEST(GridErrors, InvalidArguments) {
  using V = std::vector<std::string>;
  fs::VPLinear s;
  auto d = fs::VPDiscrete::ddpm_linear(1000);
  expect_value_error([&] { fs::timesteps(s, 0); }, V{"steps", "steps=0"});
  expect_value_error([&] { fs::timesteps(s, -3, "time"); }, V{"steps=-3"});
  expect_value_error([&] { fs::timesteps(s, 10, "karras", std::nullopt, std::nullopt, 0.0); }, V{"rho", "rho=0"});
  expect_value_error([&] { fs::timesteps(s, 10, "karras", std::nullopt, std::nullopt, kNaN); }, V{"rho"});
  expect_value_error([&] { fs::timesteps(s, 10, "logsnr", 1.5); }, V{"t_start", "t_start=1.5"});
  expect_value_error([&] { fs::timesteps(s, 10, "logsnr", kNaN); }, V{"t_start"});
  expect_value_error([&] { fs::timesteps(s, 10, "time", std::nullopt, 1e-4); }, V{"t_end", "t_end=0.0001"});
  expect_value_error([&] { fs::timesteps(s, 10, "time", 0.5, 0.5); }, V{"t_start", "t_end"});
  expect_value_error([&] { fs::timesteps(s, 10, "time", 0.2, 0.5); }, V{"t_start=0.2", "t_end=0.5"});
  expect_value_error([&] { fs::timesteps(s, 10, "uniform"); }, V{"spacing", "'uniform'", "'logsnr'"});
  expect_value_error([&] { fs::parse_spacing(""); }, V{"spacing"});
  // Discrete spacings.
  expect_value_error([&] { fs::timesteps(s, 10, "leading"); }, V{"leading", "discrete", "VPLinear"});
  expect_value_error([&] { fs::timesteps(fs::VE(), 10, "trailing"); }, V{"trailing", "discrete"});
  expect_value_error([&] { fs::timesteps(*d, 10, "leading", 0.9); }, V{"t_start", "leading"});
  expect_value_error([&] { fs::timesteps(*d, 1000, "trailing"); }, V{"steps=1000", "num_train_steps=1000"});
  expect_value_error([&] { fs::timesteps(*d, 1000, "leading"); }, V{"steps"});
  // 1000/700 < 1.5, so trailing's last index rounds to 0 = the end point: a duplicate time.
  expect_value_error([&] { fs::timesteps(*d, 700, "trailing"); }, V{"trailing", "steps=700", "index 0"});
  expect_value_error([&] { fs::timesteps(*d, 10, "leading", std::nullopt, 0.002); }, V{"t_end=0.002"});
  expect_value_error([&] { fs::timesteps(*d, 10, "leading", std::nullopt, 5e-4); }, V{"t_end", "t_end=0.0005"});
}

TEST(Grids, SpacingNames) {
  EXPECT_EQ(fs::parse_spacing("time"), fs::Spacing::Time);
  EXPECT_EQ(fs::parse_spacing("logSNR"), fs::Spacing::LogSNR);
  EXPECT_EQ(fs::parse_spacing("Karras"), fs::Spacing::Karras);
  for (auto sp : {fs::Spacing::Time, fs::Spacing::LogSNR, fs::Spacing::Quadratic, fs::Spacing::Karras,
                  fs::Spacing::Leading, fs::Spacing::Trailing}) {
    EXPECT_EQ(fs::parse_spacing(fs::to_string(sp)), sp);
  }
  fs::VPCosine s;
  EXPECT_EQ(fs::timesteps(s, 12, "quadratic"), fs::timesteps(s, 12, fs::Spacing::Quadratic));
  EXPECT_EQ(fs::timesteps(s, 12), fs::timesteps(s, 12, fs::Spacing::LogSNR));  // logsnr by default
}

TEST(Grids, KarrasOnVEIsKarrasSigmas) {
  fs::VE s;
  // VE: σ̃ = t, so the grid is Karras et al.'s σ_i directly.
  const double rho = 3.0;
  const auto g = fs::timesteps(s, 6, fs::Spacing::Karras, std::nullopt, std::nullopt, rho);
  for (int i = 0; i <= 6; ++i) {
    const double expect =
        std::pow(std::pow(80.0, 1 / rho) + i / 6.0 * (std::pow(0.002, 1 / rho) - std::pow(80.0, 1 / rho)), rho);
    EXPECT_NEAR(g[i], expect, 1e-13 * expect) << "i=" << i;
  }
}

TEST(GridErrors, ValidateGrid) {
  using V = std::vector<std::string>;
  fs::VPLinear s;
  const std::vector<double> ok{1.0, 0.5, 0.1, 1e-3};
  EXPECT_EQ(fs::validate_grid(s, ok), ok);
  EXPECT_NO_THROW(fs::validate_grid(s, {1.0 * (1 + 1e-13), 1e-3 * (1 - 1e-13)}));
  expect_value_error([&] { fs::validate_grid(s, {}); }, V{"at least 2", "got 0"});
  expect_value_error([&] { fs::validate_grid(s, {0.5}); }, V{"at least 2", "got 1"});
  expect_value_error([&] { fs::validate_grid(s, {1.0, kNaN, 0.1}); }, V{"grid[1]", "nan"});
  expect_value_error([&] { fs::validate_grid(s, {1.0, 0.5, -kInf}); }, V{"grid[2]", "-inf"});
  expect_value_error([&] { fs::validate_grid(s, {1.0, 0.5, 0.5, 0.1}); }, V{"strictly decreasing", "grid[2]=0.5"});
  expect_value_error([&] { fs::validate_grid(s, {1.0, 0.3, 0.7, 0.1}); }, V{"grid[1]=0.3", "grid[2]=0.7"});
  expect_value_error([&] { fs::validate_grid(s, {2.0, 0.5}); }, V{"grid[0]=2", "[0.001, 1]"});
  expect_value_error([&] { fs::validate_grid(s, {1.0, 1e-4}); }, V{"grid[1]=0.0001"});
  expect_value_error([&] { fs::validate_grid(s, {1.0 + 1e-9, 0.5}); }, V{"grid[0]=1.000000001"});
  // The first offending entry is the one reported.
  expect_value_error([&] { fs::validate_grid(s, {1.0, 0.9, 0.95, kNaN}); }, V{"grid[2]=0.95"});
}

// ---------------------------------------------------------------------------------------
// diffusers' multistep spacings, final_sigma, the σ face, discrete interpolations
// ---------------------------------------------------------------------------------------

TEST(DiscreteGrids, MultistepSpacingsMatchDiffusers) {
  auto s = fs::VPDiscrete::ddpm_linear(1000);
  // linspace: round(linspace(0, 999, steps + 1))[::-1][:-1]; steps = 10: k·99.9 → 999, 899.1, ..., 599.4,
  // 499.5 (a tie, to even: 500), ..., 99.9.
  EXPECT_EQ(fs::timesteps(*s, 10, "linspace"),
            index_grid({999, 899, 799, 699, 599, 500, 400, 300, 200, 100}, 1000, 1e-3));
  // steps = 8: k·124.875; 4·124.875 = 499.5 is a tie that numpy rounds to even (500).
  EXPECT_EQ(fs::timesteps(*s, 8, "linspace"), index_grid({999, 874, 749, 624, 500, 375, 250, 125}, 1000, 1e-3));
  // leading_multistep: ratio ⌊1000/11⌋ = 90, indices (10−i)·90 + offset.
  EXPECT_EQ(fs::timesteps(*s, 10, "leading_multistep", std::nullopt, std::nullopt, 7.0, 0),
            index_grid({900, 810, 720, 630, 540, 450, 360, 270, 180, 90}, 1000, 1e-3));
  EXPECT_EQ(fs::timesteps(*s, 10, "leading_multistep"),  // steps_offset defaults to 1
            index_grid({901, 811, 721, 631, 541, 451, 361, 271, 181, 91}, 1000, 1e-3));
  // DDIM's leading with diffusers' default steps_offset = 0 ends its evaluations at timestep 0, so
  // only the final step to σ = 0 can follow.
  auto g = fs::timesteps(*s, 4, "leading", std::nullopt, std::nullopt, 7.0, 0, fs::FinalSigma::Zero);
  EXPECT_EQ(g, (std::vector<double>{0.751, 0.501, 0.251, 0.001, 0.0}));
}

TEST(DiscreteGrids, FinalSigmaZeroKeepsTheEvaluationsAndEndsAtTheMarker) {
  auto s = fs::VPDiscrete::ddpm_linear(1000);
  for (const char* sp : {"linspace", "leading", "leading_multistep", "trailing"}) {
    const auto min = fs::timesteps(*s, 6, sp);
    const auto zero = fs::timesteps(*s, 6, sp, std::nullopt, std::nullopt, 7.0, std::nullopt, fs::FinalSigma::Zero);
    ASSERT_EQ(zero.size(), 7u) << sp;
    EXPECT_EQ(std::vector<double>(zero.begin(), zero.end() - 1), std::vector<double>(min.begin(), min.end() - 1)) << sp;
    EXPECT_EQ(zero.back(), 0.0);
    EXPECT_TRUE(fs::ends_at_zero(zero));
    EXPECT_FALSE(fs::ends_at_zero(min));
  }
  // Continuous spacings: `steps` evaluation times from t_start to t_end, then 0.
  fs::VPLinear v;
  const auto zero = fs::timesteps(v, 5, fs::Spacing::LogSNR, std::nullopt, std::nullopt, 7.0, std::nullopt,
                                  fs::FinalSigma::Zero);
  auto expect = fs::timesteps(v, 4, fs::Spacing::LogSNR);
  expect.push_back(0.0);
  EXPECT_EQ(zero, expect);
  EXPECT_EQ(fs::timesteps(v, 1, "time", 0.7, std::nullopt, 7.0, std::nullopt, fs::FinalSigma::Zero),
            (std::vector<double>{0.7, 0.0}));
  // The marker is accepted only where asked for.
  EXPECT_NO_THROW(fs::validate_grid(v, zero, true));
  expect_value_error([&] { fs::validate_grid(v, zero); }, {"grid[5]=0"});
  expect_value_error([&] { fs::validate_grid(v, {1.0, 0.0, 0.0}, true); }, {"grid[1]=0"});
  expect_value_error([&] { fs::timesteps(v, 5, "time", std::nullopt, std::nullopt, 7.0, 1); }, {"steps_offset"});
  expect_value_error([&] { fs::timesteps(*s, 5, "linspace", std::nullopt, 0.01, 7.0, std::nullopt,
                                         fs::FinalSigma::Zero); }, {"t_end", "zero"});
  expect_value_error([&] { fs::parse_final_sigma("none"); }, {"final_sigma", "'none'"});
  EXPECT_EQ(fs::parse_final_sigma("sigma_min"), fs::FinalSigma::Min);
  for (const auto& name : fs::spacing_names()) EXPECT_EQ(fs::to_string(fs::parse_spacing(name)), name);
}

TEST(SigmaFace, KarrasExponentialPolyexponential) {
  const auto k = fs::sigmas("karras", 4, 0.1, 10.0, 7.0);
  ASSERT_EQ(k.size(), 5u);
  for (int i = 0; i <= 4; ++i) {
    const double e = std::pow(std::pow(10.0, 1 / 7.0) + i / 4.0 * (std::pow(0.1, 1 / 7.0) - std::pow(10.0, 1 / 7.0)), 7);
    EXPECT_NEAR(k[i], e, 1e-13 * e);
  }
  const auto z = fs::sigmas("exponential", 4, 0.1, 10.0, 7.0, fs::FinalSigma::Zero);
  EXPECT_EQ(z.size(), 5u);
  EXPECT_NEAR(z[1], std::exp(std::log(10.0) + (std::log(0.1) - std::log(10.0)) / 3.0), 1e-14);
  EXPECT_EQ(z.back(), 0.0);
  const auto p1 = fs::sigmas("polyexponential", 6, 0.1, 10.0, 1.0);
  const auto ex = fs::sigmas("exponential", 6, 0.1, 10.0);
  for (size_t i = 0; i < ex.size(); ++i) EXPECT_NEAR(p1[i], ex[i], 1e-13 * ex[i]);  // ρ = 1 is exponential
  // Align Your Steps: the published 10-step table, and log-linear resampling keeps its ends.
  const auto ays = fs::sigmas("ays_sd15", 10);
  EXPECT_EQ(ays.size(), 11u);
  EXPECT_DOUBLE_EQ(ays[1], 6.4745760956);
  const auto ays20 = fs::sigmas("ays_sdxl", 20, 0, 0, 7.0, fs::FinalSigma::Zero);
  EXPECT_EQ(ays20.size(), 21u);
  EXPECT_DOUBLE_EQ(ays20[0], 14.6146412293);
  EXPECT_NEAR(ays20[2], 6.3184485287, 1e-9);  // every other point of the resampled grid is a table entry
  EXPECT_EQ(ays20.back(), 0.0);
  expect_value_error([] { fs::sigmas("linear", 4); }, {"kind", "'linear'"});
  expect_value_error([] { fs::sigmas("karras", 4, 1.0, 0.5); }, {"sigma_min", "sigma_max"});
}

TEST(SigmaFace, TimestepsFromSigmasInvertsAndQuantises) {
  auto s = fs::VPDiscrete::ddpm_linear(1000);
  const double lo = s->sigma_tilde(s->t_min()), hi = s->sigma_tilde(s->t_max());
  const auto sig = fs::sigmas("karras", 12, lo, hi, 7.0, fs::FinalSigma::Zero);
  const auto g = fs::timesteps_from_sigmas(*s, sig);
  ASSERT_EQ(g.size(), sig.size());
  EXPECT_EQ(g.front(), s->t_max());
  EXPECT_EQ(g.back(), 0.0);
  for (size_t i = 1; i + 1 < g.size(); ++i) EXPECT_NEAR(s->sigma_tilde(g[i]), sig[i], 1e-12 * sig[i]);
  // Quantised: trained timesteps only, strictly decreasing, the same length; the low end of a
  // Karras grid is denser than the timesteps, so duplicates move down one timestep each.
  const auto q = fs::timesteps_from_sigmas(*s, fs::sigmas("karras", 40, lo, hi, 7.0), true);
  ASSERT_EQ(q.size(), 41u);
  for (size_t i = 0; i < q.size(); ++i) {
    const double idx = q[i] * 1000 - 1;
    EXPECT_NEAR(idx, std::round(idx), 1e-9) << i;
    if (i > 0) {
      EXPECT_LT(q[i], q[i - 1]);
    }
  }
  EXPECT_EQ(q.back(), s->t_min());
  // VE: t = σ.
  fs::VE ve(0.002, 80);
  EXPECT_EQ(fs::timesteps_from_sigmas(ve, {80.0, 1.0, 0.002}), (std::vector<double>{80.0, 1.0, 0.002}));
  expect_value_error([&] { fs::timesteps_from_sigmas(ve, {100.0, 1.0}); }, {"sigmas[0]=100"});
  expect_value_error([&] { fs::timesteps_from_sigmas(ve, {80.0, 1.0}, true); }, {"quantize", "discrete"});
}

TEST(DiscreteInterpolation, KnotsAgreeAndEachInterpolatesItsQuantity) {
  const auto ac = fs::VPDiscrete::ddpm_linear(50, 1e-3, 0.2)->alphas_cumprod();
  for (const char* name : {"log_alpha", "log_sigma", "sigma"}) {
    const auto interp = fs::parse_discrete_interpolation(name);
    EXPECT_EQ(fs::to_string(interp), name);
    auto s = fs::VPDiscrete::from_alphas_cumprod(ac, interp);
    for (int n = 0; n < 50; ++n) {
      const double t = (n + 1) / 50.0;
      EXPECT_NEAR(s->log_alpha(t), 0.5 * std::log(ac[n]), 1e-13) << name << " n=" << n;
    }
    for (double t : {0.031, 0.25, 0.5137, 0.97}) {
      EXPECT_NEAR(s->t_of_lambda(s->lambda(t)), t, 1e-12) << name;
      const double h = 1e-7;  // right derivative inside a segment
      EXPECT_NEAR(s->dlog_alpha_dt(t), (s->log_alpha(t + h) - s->log_alpha(t)) / h, 1e-4) << name;
    }
    // Half-way between knots 10 and 11 the interpolated quantity is the mean of the knots'.
    const double t = 11.5 / 50.0;
    const double st10 = std::sqrt((1 - ac[10]) / ac[10]), st11 = std::sqrt((1 - ac[11]) / ac[11]);
    if (interp == fs::DiscreteInterpolation::Sigma) {
      EXPECT_NEAR(s->sigma_tilde(t), 0.5 * (st10 + st11), 1e-12);
    }
    if (interp == fs::DiscreteInterpolation::LogSigma) {
      EXPECT_NEAR(s->sigma_tilde(t), std::sqrt(st10 * st11), 1e-12);
    }
  }
  expect_value_error([] { fs::parse_discrete_interpolation("linear"); }, {"interpolation", "'linear'"});
}

TEST(FlowMatching, ReachesPureNoiseAtOne) {
  fs::FlowMatching f(1e-6, 1.0);
  EXPECT_EQ(f.alpha(1.0), 0.0);
  EXPECT_EQ(f.dalpha_dt(1.0), -1.0);
  EXPECT_EQ(f.dsigma_dt(0.3), 1.0);
  EXPECT_EQ(fs::timesteps(f, 4, "time").front(), 1.0);
}
