// UniPC and DEIS: hand computations of the published updates, exactness on polynomial ε,
// and convergence orders of the non-default configurations (the defaults run in test_solvers).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "fewstep/fewstep.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/deis.h"
#include "fewstep/solvers/unipc.h"
#include "fewstep/sample/reference.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;
using fewstep::testing::loglog_slope;
using fewstep::testing::rmse;

namespace {

fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }

/// A linear "network" whose ε̂ depends on x and t, so every term of an update matters.
fs::Denoiser linear_model(const fs::SchedulePtr& schedule) {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& t) { return 0.3 * x + 0.1 * t.view({-1, 1}); },
                      schedule, fs::Prediction::Eps);
}

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

/// Fitted order of `stepper` on the Gaussian mixture of test_solvers (against its reference
/// solve), steps n0·2^k, k < 5. The mixture, not a single Gaussian: on Gaussian data UniP-3
/// happens to converge at order 4, which would hide a wrong declaration.
double fitted_order(const fs::Stepper& stepper, int64_t n0, std::string* table) {
  static const auto schedule = vp();
  static const auto model = fs::Denoiser::exact(
      fs::GaussianMixture::random(4, 3, 7, /*diagonal=*/false, /*spread=*/1.0, /*min_var=*/0.05, /*max_var=*/0.3),
      schedule);
  static const auto x_T = at::randn({16, 4}, generator(2), at::kDouble);
  static const auto reference = fs::reference_solve(model, x_T, schedule->t_max(), schedule->t_min()).x;
  std::vector<double> ns, errs;
  for (int k = 0; k < 5; ++k) {
    const int64_t n = n0 << k;
    auto out = fs::sample(model, x_T, stepper, fs::timesteps(*schedule, n, fs::Spacing::LogSNR));
    ns.push_back(static_cast<double>(n));
    errs.push_back(rmse(out.x, reference));
    char cell[48];
    std::snprintf(cell, sizeof(cell), " %lld:%.3e", static_cast<long long>(n), errs.back());
    *table += cell;
  }
  return -loglog_slope(ns, errs);
}

/// Same on single-Gaussian data against the closed-form flow (no reference-solve floor): used for
/// the fourth-order UniPC-3, whose error on the mixture reaches the 1e-10 floor while its slope
/// still oscillates (4.5, 4.7, 4.4, 4.0 from 64 to 1024 steps).
double fitted_order_gaussian(const fs::Stepper& stepper, int64_t n0, std::string* table) {
  auto schedule = vp();
  auto mean = at::tensor({0.5, -1.0, 2.0}, at::kDouble);
  auto var = at::tensor({0.04, 0.25, 1.0}, at::kDouble);
  auto model = fs::Denoiser::exact(fs::testing::single_gaussian(mean, var), schedule);
  auto x_T = at::randn({64, 3}, generator(1), at::kDouble);
  auto exact = fs::testing::single_gaussian_flow(*schedule, x_T, mean, var, schedule->t_max(), schedule->t_min());
  std::vector<double> ns, errs;
  for (int k = 0; k < 5; ++k) {
    const int64_t n = n0 << k;
    auto out = fs::sample(model, x_T, stepper, fs::timesteps(*schedule, n, fs::Spacing::LogSNR));
    ns.push_back(static_cast<double>(n));
    errs.push_back(rmse(out.x, exact));
    char cell[48];
    std::snprintf(cell, sizeof(cell), " %lld:%.3e", static_cast<long long>(n), errs.back());
    *table += cell;
  }
  return -loglog_slope(ns, errs);
}

/// First step count of the asymptotic regime on the mixture, by declared order.
int64_t start_steps(int order) { return order == 1 ? 64 : order == 2 ? 32 : 128; }

}  // namespace

// ---------------------------------------------------------------- registry and options

TEST(UniPCDeis, RegisteredWithDeclaredTraits) {
  const auto& u = fs::stepper_traits("unipc");
  EXPECT_EQ(u.order, 3);  // default order 2 + corrector
  EXPECT_EQ(u.nfe_per_step, 1);
  EXPECT_TRUE(u.multistep);
  EXPECT_FALSE(u.stochastic);
  EXPECT_EQ(fs::solver("unipc", {{"order", int64_t{3}}})->traits().order, 4);
  EXPECT_EQ(fs::solver("unipc", {{"order", int64_t{3}}, {"use_corrector", false}})->traits().order, 3);
  const auto& d = fs::stepper_traits("deis");
  EXPECT_EQ(d.order, 3);
  EXPECT_EQ(d.nfe_per_step, 1);
  EXPECT_EQ(fs::solver("deis", {{"order", int64_t{2}}})->traits().order, 2);
}

TEST(UniPCDeis, BadOptionsAreValueErrors) {
  EXPECT_THROW(fs::solver("unipc", {{"eta", 0.1}}), c10::ValueError);
  EXPECT_THROW(fs::solver("unipc", {{"order", int64_t{4}}}), c10::ValueError);
  EXPECT_THROW(fs::solver("unipc", {{"variant", std::string("vary_coeff")}}), c10::ValueError);
  EXPECT_THROW(fs::solver("unipc", {{"predict_x0", std::string("yes")}}), c10::TypeError);
  EXPECT_THROW(fs::solver("deis", {{"order", int64_t{0}}}), c10::ValueError);
  EXPECT_THROW(fs::solver("deis", {{"variable", std::string("sigma")}}), c10::ValueError);
  EXPECT_THROW(fs::solver("deis", {{"use_corrector", true}}), c10::ValueError);
  try {
    fs::solver("deis", {{"variant", std::string("bh1")}});
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("'variant'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("variable"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------- UniPC hand computation

// UniPC-2 (UniP-2 + UniC) in data prediction on a 3-step non-uniform grid, written out from the
// paper's formulas: x̃_t = (σ_t/σ_s) x_s − α_t(e^{−h}−1) m_s − α_t B(h) Σ a_k D_k, corrector with
// a = R^{−1} g/B, g_1 = φ̂_1(−h)/… (explicit recurrences below, not the library's φ series).
class UniPCHand : public ::testing::TestWithParam<std::string> {};

TEST_P(UniPCHand, ThreeStepsOrderTwo) {
  const std::string variant = GetParam();
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(8), at::kDouble);
  std::vector<double> g{0.9, 0.55, 0.3, 0.12};

  auto m_of = [&](const at::Tensor& xt, double t) {
    return (xt - (0.3 * xt + 0.1 * t) * schedule->sigma(t)) / schedule->alpha(t);
  };
  auto lam = [&](double t) { return schedule->lambda(t); };
  auto sig = [&](double t) { return schedule->sigma(t); };
  auto alp = [&](double t) { return schedule->alpha(t); };
  auto B = [&](double h) { return variant == "bh1" ? -h : std::expm1(-h); };

  // Step 0 (UniP-1 = DDIM) from x at g0.
  auto m0 = m_of(x, g[0]);
  const double h1 = lam(g[1]) - lam(g[0]);
  auto base1 = sig(g[1]) / sig(g[0]) * x - alp(g[1]) * std::expm1(-h1) * m0;
  auto xt1 = base1;
  // Step 1: evaluate at x̃1, UniC-1 (a = 1/2) for step 0, then UniP-2 (a = 1/2) from x^c_1.
  auto m1 = m_of(xt1, g[1]);
  auto xc1 = base1 - alp(g[1]) * B(h1) * 0.5 * (m1 - m0);
  const double h2 = lam(g[2]) - lam(g[1]);
  const double r2 = (lam(g[0]) - lam(g[1])) / h2;
  auto d2 = (m0 - m1) / r2;
  auto base2 = sig(g[2]) / sig(g[1]) * xc1 - alp(g[2]) * std::expm1(-h2) * m1;
  auto xt2 = base2 - alp(g[2]) * B(h2) * 0.5 * d2;
  // Step 2: evaluate at x̃2, UniC-2 for step 1: R = [[1, 1], [r2, 1]], b_i = i!·g_i(−h2)/B(h2) with
  // g_1(z) = (e^z − 1)/z − 1, g_2(z) = g_1(z)/z − 1/2.
  auto m2 = m_of(xt2, g[2]);
  const double z = -h2;
  const double g1 = std::expm1(z) / z - 1.0, g2 = g1 / z - 0.5;
  const double b1 = g1 / B(h2), b2 = 2.0 * g2 / B(h2);
  const double a1 = (b1 - b2) / (1.0 - r2), a2 = (b2 - r2 * b1) / (1.0 - r2);
  auto xc2 = base2 - alp(g[2]) * B(h2) * (a1 * d2 + a2 * (m2 - m1));
  // Last step: UniP-2 without corrector, or DDIM with lower_order_final.
  const double h3 = lam(g[3]) - lam(g[2]);
  const double r3 = (lam(g[1]) - lam(g[2])) / h3;
  auto base3 = sig(g[3]) / sig(g[2]) * xc2 - alp(g[3]) * std::expm1(-h3) * m2;
  auto x3 = base3 - alp(g[3]) * B(h3) * 0.5 * (m1 - m2) / r3;

  auto full = fs::sample(model, x, *fs::solver("unipc", {{"variant", variant}, {"lower_order_final", false}}), g);
  EXPECT_LT(max_abs(full.x, x3), 1e-12);
  EXPECT_EQ(full.nfe, 3) << "the corrector must reuse the next step's evaluation";
  auto lof = fs::sample(model, x, *fs::solver("unipc", {{"variant", variant}}), g);
  EXPECT_LT(max_abs(lof.x, base3), 1e-12);
  EXPECT_EQ(lof.nfe, 3);
  EXPECT_GT(max_abs(lof.x, x3), 1e-6);  // the two really differ
  // The corrector changes the result; without it step 1 starts from x̃1.
  auto nocorr = fs::sample(model, x, *fs::solver("unipc", {{"variant", variant}, {"use_corrector", false}}), g);
  EXPECT_GT(max_abs(nocorr.x, lof.x), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Variants, UniPCHand, ::testing::Values("bh1", "bh2"));

TEST(UniPC, OrderOneWithoutCorrectorIsDdim) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(4), at::kDouble);
  auto grid = fs::timesteps(*schedule, 7, fs::Spacing::LogSNR);
  for (bool x0 : {true, false}) {
    auto a = fs::sample(model, x, *fs::solver("unipc", {{"order", int64_t{1}}, {"use_corrector", false},
                                                        {"predict_x0", x0}}), grid).x;
    auto b = fs::sample(model, x, *fs::solver("ddim"), grid).x;
    EXPECT_LT(max_abs(a, b), 1e-12) << "predict_x0=" << x0;
  }
}

TEST(UniPC, CorrectorCostsNoEvaluation) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(fs::GaussianMixture::random(4, 3, 7), schedule);
  auto x = at::randn({8, 4}, generator(5), at::kDouble);
  for (int64_t order : {1, 2, 3})
    for (int64_t steps : {3, 5, 10}) {
      auto out = fs::sample(model, x, *fs::solver("unipc", {{"order", order}}), fs::timesteps(*schedule, steps,
                                                                                               fs::Spacing::LogSNR));
      EXPECT_EQ(out.nfe, steps) << "order " << order;
      for (const auto& s : out.stats) EXPECT_EQ(s.nfe, 1);
    }
}

// Convergence orders of the non-default configurations; declared = order + 1 with the corrector.
TEST(UniPC, ConvergenceOrdersOfAllConfigurations) {
  struct Config {
    const char* variant;
    bool x0, corrector;
  };
  for (auto c : {Config{"bh1", true, true}, Config{"bh2", true, true}, Config{"bh1", true, false},
                 Config{"bh2", true, false}, Config{"bh2", false, true}})
    for (int64_t order : {1, 2, 3}) {
      auto stepper = fs::solver("unipc", {{"order", order}, {"variant", std::string(c.variant)},
                                          {"predict_x0", c.x0}, {"use_corrector", c.corrector},
                                          {"lower_order_final", false}});
      std::string table;
      const int declared = stepper->traits().order;
      EXPECT_EQ(declared, order + (c.corrector ? 1 : 0));
      const double fitted = declared == 4 ? fitted_order_gaussian(*stepper, 64, &table)
                                          : fitted_order(*stepper, start_steps(declared), &table);
      EXPECT_NEAR(fitted, declared, 0.25) << c.variant << " x0=" << c.x0 << " corrector=" << c.corrector
                                           << " order=" << order << table;
    }
}

// ---------------------------------------------------------------- DEIS

TEST(Deis, OrderOneIsDdim) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(6), at::kDouble);
  auto grid = fs::timesteps(*schedule, 6, fs::Spacing::LogSNR);
  auto b = fs::sample(model, x, *fs::solver("ddim"), grid).x;
  for (const char* v : {"t", "lambda", "rho"}) {
    auto a = fs::sample(model, x, *fs::solver("deis", {{"order", int64_t{1}}, {"variable", std::string(v)}}), grid).x;
    EXPECT_LT(max_abs(a, b), 1e-13 * b.abs().max().item<double>()) << v;
  }
}

TEST(Deis, CoefficientsIntegrateConstantsExactly) {
  // Σ_j c_j = −α_t e^{−λ_s}(1 − e^{−h}) = −σ_t(e^h − 1): the interpolant of a constant is that constant.
  auto schedule = vp();
  std::vector<double> times{0.4, 0.5, 0.65};
  const double t = 0.25;
  const double h = schedule->lambda(t) - schedule->lambda(times[0]);
  const double want = -schedule->sigma(t) * std::expm1(h);
  for (auto v : {fs::DeisVariable::T, fs::DeisVariable::Lambda, fs::DeisVariable::Rho})
    for (size_t n = 1; n <= 3; ++n) {
      auto c = fs::deis_coefficients(*schedule, std::vector<double>(times.begin(), times.begin() + n), t, v);
      double sum = 0;
      for (double ci : c) sum += ci;
      EXPECT_NEAR(sum, want, 1e-14 * std::abs(want)) << static_cast<int>(v) << " n=" << n;
    }
}

// With ε̂ exactly quadratic in the chosen variable (and independent of x) the order-3 step is exact.
TEST(Deis, ExactForQuadraticEpsInItsVariable) {
  auto schedule = vp();
  auto a = at::randn({3, 2}, generator(10), at::kDouble);
  auto b = at::randn({3, 2}, generator(11), at::kDouble);
  auto c = at::randn({3, 2}, generator(12), at::kDouble);
  auto x = at::randn({3, 2}, generator(13), at::kDouble);
  const std::vector<double> times{0.5, 0.62, 0.8};  // s, then the two earlier evaluations
  const double s = times[0], t = 0.31;
  const double ls = schedule->lambda(s), lt = schedule->lambda(t);

  for (auto v : {fs::DeisVariable::T, fs::DeisVariable::Lambda, fs::DeisVariable::Rho}) {
    auto var = [&](double tau) {
      const double l = schedule->lambda(tau);
      return v == fs::DeisVariable::T ? tau : v == fs::DeisVariable::Lambda ? l : std::exp(-l);
    };
    auto eps_at = [&](double tau) { return a + b * var(tau) + c * (var(tau) * var(tau)); };
    // Exact ∫_{λ_s}^{λ_t} e^{−λ} ε dλ, by an independent route for each variable.
    at::Tensor integral;
    if (v == fs::DeisVariable::Lambda) {  // antiderivative −e^{−λ}(a + b(λ+1) + c(λ²+2λ+2))
      auto F = [&](double l) { return -std::exp(-l) * (a + b * (l + 1) + c * (l * l + 2 * l + 2)); };
      integral = F(lt) - F(ls);
    } else if (v == fs::DeisVariable::Rho) {  // = ∫_{ρ_t}^{ρ_s} (a + bρ + cρ²) dρ
      auto F = [&](double r) { return a * r + b * (r * r / 2) + c * (r * r * r / 3); };
      integral = F(std::exp(-ls)) - F(std::exp(-lt));
    } else {  // composite Simpson in τ of e^{−λ(τ)} λ'(τ) ε(τ), 2·10^4 intervals
      const int n = 20000;
      const double dt = (t - s) / n;
      double wa = 0, wb = 0, wc = 0;
      for (int i = 0; i <= n; ++i) {
        const double tau = s + i * dt;
        const double simpson = i == 0 || i == n ? 1 : (i % 2 ? 4 : 2);
        const double f = std::exp(-schedule->lambda(tau)) * schedule->dlambda_dt(tau) * simpson;
        wa += f, wb += f * tau, wc += f * tau * tau;
      }
      integral = (a * wa + b * wb + c * wc) * (dt / 3);
    }
    auto exact = x * (schedule->alpha(t) / schedule->alpha(s)) - integral * schedule->alpha(t);

    std::vector<at::Tensor> eps;
    for (double tau : times) eps.push_back(eps_at(tau));
    auto step = x * fs::deis_linear_factor(*schedule, s, t) + fs::deis_nonlinear_term(*schedule, times, eps, t, v);
    EXPECT_LT(max_abs(step, exact), 1e-12 * exact.abs().max().item<double>()) << static_cast<int>(v);

    // Same through the stepper with a state carrying the two earlier evaluations.
    auto model = fs::Denoiser::direct(
        [&](const at::Tensor& xx, double tau) {
          auto e = eps_at(tau).expand_as(xx);
          return fs::DenoiserOutput{(xx - e * schedule->sigma(tau)) / schedule->alpha(tau), e};
        },
        schedule, "quadratic eps");
    const char* name = v == fs::DeisVariable::T ? "t" : v == fs::DeisVariable::Lambda ? "lambda" : "rho";
    auto stepper = fs::solver("deis", {{"variable", std::string(name)}});
    fs::ModelEvaluator evaluator(model);
    fs::SolverState state;
    for (size_t k = times.size() - 1; k >= 1; --k) state.history.push_back(fs::HistoryEntry{times[k], {}, eps[k]});
    fs::StepContext ctx;  // adaptive-style context: no lower_order_final
    auto res = stepper->step(evaluator, x, s, t, state, ctx);
    EXPECT_LT(max_abs(res.x, exact), 1e-12 * exact.abs().max().item<double>()) << name;
    EXPECT_EQ(evaluator.nfe(), 1);
    // A lower order is not exact for quadratic ε: the test has teeth.
    auto res2 = fs::solver("deis", {{"variable", std::string(name)}, {"order", int64_t{2}}})
                    ->step(evaluator, x, s, t, state, ctx);
    EXPECT_GT(max_abs(res2.x, exact), 1e-6) << name;
  }
}

TEST(Deis, ConvergenceOrdersOfAllConfigurations) {
  for (const char* v : {"t", "lambda", "rho"})
    for (int64_t order : {1, 2, 3}) {
      auto stepper = fs::solver("deis", {{"order", order}, {"variable", std::string(v)}});
      std::string table;
      const double fitted = fitted_order(*stepper, start_steps(static_cast<int>(order)), &table);
      EXPECT_NEAR(fitted, order, 0.25) << v << " order=" << order << table;
    }
}
