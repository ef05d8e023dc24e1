// The DPM-Solver family: hand computations of the published updates (DPM-Solver-2/3 both
// variants, DPM-Solver++(2S), DPM-Solver++(3M)), DPM-Solver-fast's order plan and exact
// budget, and option checking. Orders and the common contract come from test_solvers.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "fewstep/fewstep.h"
#include "fewstep/sample/reference.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;

namespace {

fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }

/// ε̂(x, t) = 0.3 x + 0.1 t: linear in x and dependent on t, so every term of an update matters.
at::Tensor eps_of(const at::Tensor& x, double t) { return 0.3 * x + 0.1 * t; }

fs::Denoiser linear_model(const fs::SchedulePtr& schedule) {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& t) { return 0.3 * x + 0.1 * t.view({-1, 1}); },
                      schedule, fs::Prediction::Eps);
}

/// Float64 round-off of O(1) quantities through a few steps; far below any formula error.
constexpr double kTol = 1e-12;

::testing::AssertionResult close(const at::Tensor& a, const at::Tensor& b, double tol = kTol) {
  const double diff = (a - b).abs().max().item<double>();
  if (diff <= tol * (1.0 + b.abs().max().item<double>())) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs difference " << diff;
}

/// Scalar helpers written from the papers' notation.
struct Sched {
  fs::SchedulePtr s;
  double lam(double t) const { return s->lambda(t); }
  double alp(double t) const { return s->alpha(t); }
  double sig(double t) const { return s->sigma(t); }
  double t_of(double lambda) const { return s->t_of_lambda(lambda); }
  at::Tensor x0_of(const at::Tensor& x, double t) const { return (x - sig(t) * eps_of(x, t)) / alp(t); }
};

/// ∫_0^h e^{±τ} τ^k dτ for k = 0, 1, 2 in closed form (independent of the φ-function forms).
double int_exp_pow(double h, int k, double sign) {
  // Integration by parts, using 1/sign = sign.
  const double e = std::exp(sign * h);
  if (k == 0) return sign * (e - 1.0);
  if (k == 1) return sign * e * h - (e - 1.0);  // [sign τ e − e]_0^h with sign² = 1
  return sign * e * h * h - 2.0 * (e * h - sign * (e - 1.0));
}

}  // namespace

// ---------------------------------------------------------------- registry and options

TEST(DpmSolverFamily, RegisteredWithDeclaredTraits) {
  EXPECT_EQ(fs::stepper_traits("dpm_solver_2s").order, 2);
  EXPECT_EQ(fs::stepper_traits("dpm_solver_2s").nfe_per_step, 2);
  EXPECT_EQ(fs::stepper_traits("dpm_solver_3s").order, 3);
  EXPECT_EQ(fs::stepper_traits("dpm_solver_3s").nfe_per_step, 3);
  EXPECT_EQ(fs::stepper_traits("dpm_solver_fast").order, 3);
  EXPECT_EQ(fs::stepper_traits("dpmpp_2s").nfe_per_step, 2);
  EXPECT_EQ(fs::stepper_traits("dpmpp_3m").order, 3);
  EXPECT_EQ(fs::stepper_traits("dpmpp_3m").nfe_per_step, 1);
  EXPECT_TRUE(fs::stepper_traits("dpmpp_3m").multistep);
  EXPECT_FALSE(fs::stepper_traits("dpm_solver_3s").multistep);
  for (const char* name : {"dpm_solver_2s", "dpm_solver_3s", "dpm_solver_fast", "dpmpp_2s", "dpmpp_3m"})
    EXPECT_NE(fs::stepper_traits(name).summary.find("Lu et al. 2022"), std::string::npos) << name;
}

TEST(DpmSolverFamily, OptionsAreChecked) {
  EXPECT_THROW(fs::solver("dpm_solver_3s", {{"lower_order_final", true}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpm_solver_2s", {{"variant", std::string("midpoint")}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpm_solver_2s", {{"r1", 0.0}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpm_solver_3s", {{"r1", 0.7}, {"r2", 0.6}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpmpp_2s", {{"r1", 1.5}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpmpp_3m", {{"variant", std::string("dpmsolver")}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpm_solver_fast", {{"nfe", int64_t{-1}}}), c10::ValueError);
  EXPECT_THROW(fs::solver("dpm_solver_fast", {{"variant", int64_t{2}}}), c10::TypeError);
  try {
    fs::solver("dpm_solver_fast", {{"order", int64_t{2}}});
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("'order'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("nfe"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------- hand computations

TEST(HandComputation, DpmSolver2BothVariantsOneStep) {
  // Algorithm 1 of arXiv 2206.00927 and its Taylor form, r1 = 1/2 and a non-default r1.
  Sched sc{vp()};
  auto model = linear_model(sc.s);
  auto x = at::randn({4, 2}, generator(21), at::kDouble);
  const double s = 0.85, t = 0.35;
  for (double r1 : {0.5, 0.3}) {
    const double h = sc.lam(t) - sc.lam(s);
    const double s1 = sc.t_of(sc.lam(s) + r1 * h);
    auto e_s = eps_of(x, s);
    auto u = sc.alp(s1) / sc.alp(s) * x - sc.sig(s1) * (std::exp(r1 * h) - 1) * e_s;
    auto d = eps_of(u, s1) - e_s;
    auto base = sc.alp(t) / sc.alp(s) * x - sc.sig(t) * (std::exp(h) - 1) * e_s;
    auto dpmsolver = base - sc.sig(t) / (2 * r1) * (std::exp(h) - 1) * d;
    auto taylor = base - sc.sig(t) / r1 * ((std::exp(h) - 1) / h - 1) * d;
    std::vector<double> grid{s, t};
    auto a = fs::sample(model, x, *fs::solver("dpm_solver_2s", {{"r1", r1}}), grid);
    auto b = fs::sample(model, x, *fs::solver("dpm_solver_2s", {{"r1", r1}, {"variant", std::string("taylor")}}),
                        grid);
    EXPECT_EQ(a.nfe, 2);
    EXPECT_TRUE(close(a.x, dpmsolver)) << "r1 = " << r1;
    EXPECT_TRUE(close(b.x, taylor)) << "r1 = " << r1;
    EXPECT_FALSE(close(a.x, taylor, 1e-6)) << "the variants must differ";
  }
}

TEST(HandComputation, DpmSolver3BothVariantsTwoSteps) {
  // Algorithm 2 of arXiv 2206.00927 (r1 = 1/3, r2 = 2/3) over two non-uniform steps.
  Sched sc{vp()};
  auto model = linear_model(sc.s);
  auto x = at::randn({4, 2}, generator(22), at::kDouble);
  std::vector<double> grid{0.9, 0.45, 0.1};
  const double r1 = 1.0 / 3.0, r2 = 2.0 / 3.0;

  // One step, written from the algorithm: the intermediate values and both final combinations.
  auto step = [&](const at::Tensor& xs, double s, double t, bool taylor) {
    const double h = sc.lam(t) - sc.lam(s);
    const double s1 = sc.t_of(sc.lam(s) + r1 * h), s2 = sc.t_of(sc.lam(s) + r2 * h);
    auto e_s = eps_of(xs, s);
    auto u1 = sc.alp(s1) / sc.alp(s) * xs - sc.sig(s1) * (std::exp(r1 * h) - 1) * e_s;
    auto d1 = eps_of(u1, s1) - e_s;
    auto u2 = sc.alp(s2) / sc.alp(s) * xs - sc.sig(s2) * (std::exp(r2 * h) - 1) * e_s -
              sc.sig(s2) * r2 / r1 * ((std::exp(r2 * h) - 1) / (r2 * h) - 1) * d1;
    auto d2 = eps_of(u2, s2) - e_s;
    auto base = sc.alp(t) / sc.alp(s) * xs - sc.sig(t) * (std::exp(h) - 1) * e_s;
    if (!taylor) return base - sc.sig(t) / r2 * ((std::exp(h) - 1) / h - 1) * d2;
    // Taylor form = exact integral of the quadratic in λ through (0, ε̂_s), (r1 h, ε̂_1), (r2 h, ε̂_2):
    // x_t = (α_t/α_s) x_s − α_t e^{−λ_s} ∫_0^h e^{−τ} q(τ) dτ, derived here independently.
    auto e1 = d1 + e_s, e2 = d2 + e_s;
    const double t1 = r1 * h, t2 = r2 * h;
    auto f01 = (e1 - e_s) / t1, f12 = (e2 - e1) / (t2 - t1);
    auto c2 = (f12 - f01) / t2;       // q = e_s + f01 τ + c2 τ (τ − t1)
    auto c1 = f01 - c2 * t1;          //   = e_s + c1 τ + c2 τ²
    auto integral = e_s * int_exp_pow(h, 0, -1) + c1 * int_exp_pow(h, 1, -1) + c2 * int_exp_pow(h, 2, -1);
    return sc.alp(t) / sc.alp(s) * xs - sc.alp(t) * std::exp(-sc.lam(s)) * integral;
  };
  for (bool taylor : {false, true}) {
    auto x1 = step(x, grid[0], grid[1], taylor);
    auto x2 = step(x1, grid[1], grid[2], taylor);
    auto stepper = fs::solver("dpm_solver_3s", {{"variant", std::string(taylor ? "taylor" : "dpmsolver")}});
    auto out = fs::sample(model, x, *stepper, grid);
    EXPECT_EQ(out.nfe, 6);
    EXPECT_TRUE(close(out.x, x2)) << (taylor ? "taylor" : "dpmsolver");
  }
}

TEST(HandComputation, DpmSolverPP2SBothVariantsOneStep) {
  // Algorithm 1 of arXiv 2211.01095 (data prediction, r = 1/2) and its Taylor form.
  Sched sc{vp()};
  auto model = linear_model(sc.s);
  auto x = at::randn({4, 2}, generator(23), at::kDouble);
  const double s = 0.7, t = 0.2, r = 0.5;
  const double h = sc.lam(t) - sc.lam(s);
  const double s1 = sc.t_of(sc.lam(s) + r * h);
  auto m_s = sc.x0_of(x, s);
  auto u = sc.sig(s1) / sc.sig(s) * x - sc.alp(s1) * (std::exp(-r * h) - 1) * m_s;
  auto m_1 = sc.x0_of(u, s1);
  auto base = sc.sig(t) / sc.sig(s) * x;
  auto dpmsolver = base - sc.alp(t) * (std::exp(-h) - 1) * ((1 - 1 / (2 * r)) * m_s + 1 / (2 * r) * m_1);
  auto taylor =
      base - sc.alp(t) * (std::exp(-h) - 1) * m_s + sc.alp(t) / r * ((std::exp(-h) - 1) / h + 1) * (m_1 - m_s);
  std::vector<double> grid{s, t};
  EXPECT_TRUE(close(fs::sample(model, x, *fs::solver("dpmpp_2s"), grid).x, dpmsolver));
  EXPECT_TRUE(close(fs::sample(model, x, *fs::solver("dpmpp_2s", {{"variant", std::string("taylor")}}), grid).x,
                    taylor));
}

TEST(HandComputation, DpmSolverPP3MFourSteps) {
  // Multistep DPM-Solver++ of order 3 (arXiv 2211.01095) on a non-uniform grid: orders 1, 2, 3, 3.
  // The order-3 update is written from the φ-function formula with the second-difference weight
  // w (w = 1: the official code; w = 2: the Taylor expansion), and checked independently against
  // the exact integral of the quadratic interpolant of x̂_0 in λ, which w = 2 must reproduce.
  Sched sc{vp()};
  auto model = linear_model(sc.s);
  auto x = at::randn({4, 2}, generator(24), at::kDouble);
  std::vector<double> g{0.9, 0.6, 0.33, 0.17, 0.06};

  auto first = [&](const at::Tensor& xs, const at::Tensor& m0, double s, double t) {
    const double h = sc.lam(t) - sc.lam(s);
    return sc.sig(t) / sc.sig(s) * xs - sc.alp(t) * (std::exp(-h) - 1) * m0;
  };
  auto second = [&](const at::Tensor& xs, const at::Tensor& m0, const at::Tensor& m1, double p1, double s, double t) {
    const double h = sc.lam(t) - sc.lam(s), r0 = (sc.lam(s) - sc.lam(p1)) / h;
    return sc.sig(t) / sc.sig(s) * xs - sc.alp(t) * (std::exp(-h) - 1) * ((1 + 0.5 / r0) * m0 - 0.5 / r0 * m1);
  };
  auto third = [&](double w, const at::Tensor& xs, const at::Tensor& m0, const at::Tensor& m1, const at::Tensor& m2,
                   double p2, double p1, double s, double t) {
    const double h = sc.lam(t) - sc.lam(s);
    const double r0 = (sc.lam(s) - sc.lam(p1)) / h, r1 = (sc.lam(p1) - sc.lam(p2)) / h;
    auto d1_0 = (m0 - m1) / r0, d1_1 = (m1 - m2) / r1;
    auto d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1);
    auto d2 = (d1_0 - d1_1) / (r0 + r1);
    const double phi1 = std::exp(-h) - 1, phi2 = phi1 / h + 1, phi3 = phi2 / h - 0.5;
    return sc.sig(t) / sc.sig(s) * xs - sc.alp(t) * phi1 * m0 + sc.alp(t) * phi2 * d1 - w * sc.alp(t) * phi3 * d2;
  };
  auto third_by_integral = [&](const at::Tensor& xs, const at::Tensor& m0, const at::Tensor& m1,
                               const at::Tensor& m2, double p2, double p1, double s, double t) {
    // x_t = (σ_t/σ_s) x_s + σ_t e^{λ_s} ∫_0^h e^{τ} P(λ_s + τ) dτ, P through the three (λ, x̂_0).
    const double h = sc.lam(t) - sc.lam(s);
    const double a = sc.lam(p1) - sc.lam(s), b = sc.lam(p2) - sc.lam(s);  // negative offsets
    auto f01 = (m1 - m0) / a, f12 = (m2 - m1) / (b - a);
    auto c2 = (f12 - f01) / b;  // P = m0 + f01 τ + c2 τ (τ − a)
    auto c1 = f01 - c2 * a;
    auto integral = m0 * int_exp_pow(h, 0, 1) + c1 * int_exp_pow(h, 1, 1) + c2 * int_exp_pow(h, 2, 1);
    return sc.sig(t) / sc.sig(s) * xs + sc.sig(t) * std::exp(sc.lam(s)) * integral;
  };

  for (double w : {2.0, 1.0}) {
    auto m0 = sc.x0_of(x, g[0]);
    auto x1 = first(x, m0, g[0], g[1]);
    auto m1 = sc.x0_of(x1, g[1]);
    auto x2 = second(x1, m1, m0, g[0], g[1], g[2]);
    auto m2 = sc.x0_of(x2, g[2]);
    auto x3 = third(w, x2, m2, m1, m0, g[0], g[1], g[2], g[3]);
    auto x3_integral = third_by_integral(x2, m2, m1, m0, g[0], g[1], g[2], g[3]);
    auto m3 = sc.x0_of(x3, g[3]);
    auto x4 = third(w, x3, m3, m2, m1, g[1], g[2], g[3], g[4]);
    auto x4_integral = third_by_integral(x3, m3, m2, m1, g[1], g[2], g[3], g[4]);
    if (w == 2.0) {
      EXPECT_TRUE(close(x3, x3_integral));
      EXPECT_TRUE(close(x4, x4_integral));
    } else {
      EXPECT_FALSE(close(x3, x3_integral, 1e-6)) << "the official weight is not the quadratic's integral";
    }
    const std::string variant = w == 2.0 ? "taylor" : "official";
    auto out = fs::sample(model, x, *fs::solver("dpmpp_3m", {{"lower_order_final", false}, {"variant", variant}}), g);
    EXPECT_EQ(out.nfe, 4);
    EXPECT_TRUE(close(out.x, x4)) << variant;

    // lower_order_final on a grid of 4 < 10 steps: orders 1, 2, min(3, 2) = 2, 1 (the official
    // rule min(order, steps + 1 − step)); no third-order step, so both variants agree.
    auto x3_lof = second(x2, m2, m1, g[1], g[2], g[3]);
    auto x4_lof = first(x3_lof, sc.x0_of(x3_lof, g[3]), g[3], g[4]);
    EXPECT_TRUE(close(fs::sample(model, x, *fs::solver("dpmpp_3m", {{"variant", variant}}), g).x, x4_lof));
    EXPECT_FALSE(close(x4_lof, x4, 1e-6));
    // ... and not on grids of >= lower_order_final_steps steps.
    auto no_lof = fs::sample(model, x, *fs::solver("dpmpp_3m", {{"lower_order_final_steps", int64_t{4}},
                                                                {"variant", variant}}), g);
    EXPECT_TRUE(close(no_lof.x, x4));
  }
}

TEST(HandComputation, DpmSolverPP3MSecondOrderStepsMatchDpmpp2M) {
  // The warm-up step of 3M is the 2M update: on a two-step grid both solvers coincide.
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(25), at::kDouble);
  std::vector<double> g{0.8, 0.4, 0.15};
  fs::Options no_lof{{"lower_order_final", false}};
  auto a = fs::sample(model, x, *fs::solver("dpmpp_3m", no_lof), g).x;
  auto b = fs::sample(model, x, *fs::solver("dpmpp_2m", no_lof), g).x;
  EXPECT_TRUE(close(a, b));
}

// ---------------------------------------------------------------- DPM-Solver-fast

TEST(DpmSolverFast, OrderPlanMatchesThePaper) {
  // arXiv 2206.00927 (DPM-Solver-fast): K = ⌊N/3⌋ + 1 steps; N mod 3 = 0: [3,…,3,2,1]; 1: [3,…,3,1]; 2: [3,…,3,2].
  EXPECT_EQ(fs::dpm_solver_fast_orders(5), (std::vector<int>{3, 2}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(6), (std::vector<int>{3, 2, 1}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(7), (std::vector<int>{3, 3, 1}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(8), (std::vector<int>{3, 3, 2}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(10), (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(12), (std::vector<int>{3, 3, 3, 2, 1}));
  EXPECT_EQ(fs::dpm_solver_fast_orders(20), (std::vector<int>{3, 3, 3, 3, 3, 3, 2}));
  for (int64_t n = 1; n <= 40; ++n) {
    auto orders = fs::dpm_solver_fast_orders(n);
    EXPECT_EQ(static_cast<int64_t>(orders.size()), n / 3 + 1) << n;
    EXPECT_EQ(std::accumulate(orders.begin(), orders.end(), int64_t{0}), n) << n;
    const int64_t threes = std::count(orders.begin(), orders.end(), 3);
    EXPECT_EQ(threes, static_cast<int64_t>(orders.size()) - (n % 3 == 0 ? 2 : 1)) << n;
  }
  EXPECT_THROW(fs::dpm_solver_fast_orders(0), c10::ValueError);
}

TEST(DpmSolverFast, SpendsExactlyTheBudget) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({3, 2}, generator(26), at::kDouble);
  auto stepper = fs::solver("dpm_solver_fast");
  for (int64_t n = 5; n <= 20; ++n) {
    auto out = fs::sample(model, x, "dpm_solver_fast", n);
    EXPECT_EQ(out.nfe, n);
    EXPECT_EQ(stepper->nfe_for_steps(n), n);
    auto orders = fs::dpm_solver_fast_orders(n);
    ASSERT_EQ(out.steps, static_cast<int64_t>(orders.size())) << n;
    for (size_t i = 0; i < orders.size(); ++i) EXPECT_EQ(out.stats[i].nfe, orders[i]) << "N = " << n << ", step " << i;
    // K steps uniform in λ from t_max to t_min.
    auto expected = fs::timesteps(*schedule, out.steps, fs::Spacing::LogSNR);
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_DOUBLE_EQ(out.timesteps[i], expected[i]);
    // With denoise_to_zero the final x̂_0 costs one more.
    fs::SampleOptions opts;
    opts.denoise_to_zero = true;
    EXPECT_EQ(fs::sample(model, x, "dpm_solver_fast", n, fs::Spacing::LogSNR, {}, opts).nfe, n + 1);
  }
}

TEST(DpmSolverFast, IsTheCompositionOfSinglestepUpdates) {
  // N = 9: orders [3, 3, 2, 1] on a 4-step grid = DPM-Solver-3, -3, -2, then DDIM.
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(27), at::kDouble);
  for (const char* variant : {"dpmsolver", "taylor"}) {
    fs::Options v{{"variant", std::string(variant)}};
    auto out = fs::sample(model, x, "dpm_solver_fast", 9, fs::Spacing::LogSNR, v);
    const auto& g = out.timesteps;
    ASSERT_EQ(g.size(), 5u);
    auto y = fs::sample(model, x, *fs::solver("dpm_solver_3s", v), {g[0], g[1], g[2]}).x;
    y = fs::sample(model, y, *fs::solver("dpm_solver_2s", v), {g[2], g[3]}).x;
    y = fs::sample(model, y, *fs::solver("ddim"), {g[3], g[4]}).x;
    EXPECT_TRUE(close(out.x, y)) << variant;
  }
}

TEST(DpmSolverFast, OtherSpacingsTakeTheBudgetGridAtStepBoundaries) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({2, 2}, generator(28), at::kDouble);
  const int64_t n = 10;  // orders [3, 3, 3, 1]: boundaries 0, 3, 6, 9, 10 of the 10-step grid
  auto fine = fs::timesteps(*schedule, n, fs::Spacing::Time);
  auto out = fs::sample(model, x, "dpm_solver_fast", n, fs::Spacing::Time);
  EXPECT_EQ(out.nfe, n);
  EXPECT_EQ(out.timesteps, (std::vector<double>{fine[0], fine[3], fine[6], fine[9], fine[10]}));
}

TEST(DpmSolverFast, ExplicitGrids) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({2, 2}, generator(29), at::kDouble);
  auto grid = fs::timesteps(*schedule, 4, fs::Spacing::LogSNR);
  // No budget: [3, 3, 3, 2], third order under refinement.
  EXPECT_EQ(fs::sample(model, x, *fs::solver("dpm_solver_fast"), grid).nfe, 11);
  // A budget whose plan has this many steps: its orders.
  EXPECT_EQ(fs::sample(model, x, *fs::solver("dpm_solver_fast", {{"nfe", int64_t{10}}}), grid).nfe, 10);
  EXPECT_EQ(fs::sample(model, x, *fs::solver("dpm_solver_fast", {{"nfe", int64_t{9}}}), grid).nfe, 9);
  // A budget whose plan has another number of steps: a ValueError that says what to pass.
  try {
    fs::sample(model, x, *fs::solver("dpm_solver_fast", {{"nfe", int64_t{12}}}), grid);
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("5 steps"), std::string::npos) << msg;
    EXPECT_NE(msg.find("steps=12"), std::string::npos) << msg;
  }
  // steps contradicting an nfe option.
  EXPECT_THROW(fs::sample(model, x, "dpm_solver_fast", 8, fs::Spacing::LogSNR, {{"nfe", int64_t{9}}}),
               c10::ValueError);
  EXPECT_EQ(fs::sample(model, x, "dpm_solver_fast", 9, fs::Spacing::LogSNR, {{"nfe", int64_t{9}}}).nfe, 9);
}

TEST(DpmSolverFast, BeatsFixedOrderSolversAtEqualBudgetOnTheMixture) {
  // Sanity of the whole plan on a smooth problem: at N = 12 it is at least as accurate as DDIM
  // with 12 steps (a loose, robust bound: first vs. third order at the same cost).
  auto schedule = vp();
  auto gmm = fs::GaussianMixture::random(4, 3, 7, false, 1.0, 0.05, 0.3);
  auto model = fs::Denoiser::exact(gmm, schedule);
  auto x = at::randn({32, 4}, generator(30), at::kDouble);
  auto ref = fs::reference_solve(model, x, schedule->t_max(), schedule->t_min()).x;
  auto fast = fs::sample(model, x, "dpm_solver_fast", 12);
  auto ddim = fs::sample(model, x, "ddim", 12);
  EXPECT_LT(fs::testing::rmse(fast.x, ref), fs::testing::rmse(ddim.x, ref));
}
