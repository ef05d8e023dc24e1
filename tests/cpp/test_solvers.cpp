// Steppers: the common contract over every registered stepper, convergence orders on exact
// Gaussian mixtures, and hand computations of the published updates.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "fewstep/fewstep.h"
#include "fewstep/sample/reference.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;
using fewstep::testing::loglog_slope;
using fewstep::testing::rmse;

namespace {

fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }

/// A small mixture with well separated, anisotropic modes; the flow from t = 1 bends.
std::shared_ptr<fs::GaussianMixture> mixture() {
  // Variances 0.05–0.3: modes overlap enough that the asymptotic regime starts at ~16 steps.
  static auto gmm = fs::GaussianMixture::random(/*dim=*/4, /*components=*/3, /*seed=*/7, /*diagonal=*/false,
                                                /*spread=*/1.0, /*min_var=*/0.05, /*max_var=*/0.3);
  return gmm;
}

std::vector<std::string> deterministic_steppers() {
  std::vector<std::string> names;
  for (const auto& e : fs::registered_steppers())
    if (!e.traits.stochastic) names.push_back(e.traits.name);
  return names;
}

}  // namespace

// ---------------------------------------------------------------- registry

TEST(Registry, HasTheFoundationSteppers) {
  auto names = fs::stepper_names();
  for (const char* want : {"euler", "heun", "ddim", "dpmpp_2m"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  EXPECT_EQ(fs::stepper_traits("heun").nfe_per_step, 2);
  EXPECT_EQ(fs::stepper_traits("dpmpp_2m").order, 2);
  EXPECT_TRUE(fs::stepper_traits("dpmpp_2m").multistep);
}

// The registry's traits (built when the registry is first used, possibly during another file's static
// initialisation) are the traits of a default-built stepper.
TEST(Registry, TraitsAreThoseOfTheDefaultStepper) {
  for (const auto& e : fs::registered_steppers()) {
    const auto stepper = fs::solver(e.traits.name);  // keeps the traits alive
    const auto& built = stepper->traits();
    EXPECT_EQ(e.traits.options, built.options) << e.traits.name;
    EXPECT_EQ(e.traits.order, built.order) << e.traits.name;
    EXPECT_EQ(e.traits.nfe_per_step, built.nfe_per_step) << e.traits.name;
    EXPECT_EQ(e.traits.summary, built.summary) << e.traits.name;
    EXPECT_FALSE(e.traits.summary.empty()) << e.traits.name;
  }
  EXPECT_TRUE(fs::stepper_traits("unipc").revises_start);
  EXPECT_TRUE(fs::stepper_traits("dpm_adaptive").adaptive_by_default);
  EXPECT_FALSE(fs::stepper_traits("heun_churn").options.empty());
}

TEST(Registry, UnknownNameListsRegisteredSolvers) {
  try {
    fs::solver("dpmpp_9m");
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("'dpmpp_9m'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dpmpp_2m"), std::string::npos) << msg;
  }
}

TEST(Registry, UnknownOptionIsRejectedWithAcceptedList) {
  try {
    fs::solver("dpmpp_2m", {{"eta", 0.5}});
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("'eta'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lower_order_final"), std::string::npos) << msg;
  }
  EXPECT_THROW(fs::solver("dpmpp_2m", {{"lower_order_final", std::string("yes")}}), c10::TypeError);
  EXPECT_THROW(fs::solver("euler", {{"lower_order_final", true}}), c10::ValueError);
}

// ---------------------------------------------------------------- contract over every stepper

class StepperContract : public ::testing::TestWithParam<std::string> {};

TEST_P(StepperContract, ShapeDtypeNfeDeterminism) {
  auto model = fs::Denoiser::exact(mixture(), vp());
  auto stepper = fs::solver(GetParam());
  const auto& traits = stepper->traits();
  for (auto dtype : {at::kFloat, at::kDouble}) {
    auto x_T = at::randn({5, 4}, generator(3)).to(dtype);
    auto x_copy = x_T.clone();
    const int64_t steps = 6;
    // The request reads `steps` through the stepper's plan (a grid of its own for dpm_solver_fast).
    fs::SampleRequest request;
    request.model = fs::borrowed(model);
    request.x_T = x_T;
    request.solver = GetParam();
    request.steps = steps;
    fs::ResolvedSample job = fs::resolve(request);
    const auto& grid = job.grid;
    ASSERT_FALSE(grid.empty()) << "a request with steps runs a fixed grid";
    job.options.generator = generator(11);
    auto a = job.run();
    job.options.generator = generator(11);
    auto b = job.run();
    EXPECT_EQ(a.x.sizes(), x_T.sizes());
    EXPECT_EQ(a.x.scalar_type(), dtype);
    EXPECT_EQ(a.x.device(), x_T.device());
    EXPECT_EQ(a.nfe, stepper->nfe_for_steps(steps)) << "declared nfe_per_step=" << traits.nfe_per_step;
    EXPECT_EQ(a.steps, static_cast<int64_t>(grid.size()) - 1);
    EXPECT_TRUE(at::equal(a.x, b.x)) << "same inputs and generator must give identical results";
    EXPECT_TRUE(at::equal(x_T, x_copy)) << "x_T must not be modified";
    EXPECT_TRUE(at::isfinite(a.x).all().item<bool>());
    int64_t per_step_total = 0;
    for (const auto& s : a.stats) per_step_total += s.nfe;
    EXPECT_EQ(per_step_total, a.nfe);
  }
}

// No tensor may be created on the CPU behind the state's back: on the meta device any
// stray CPU tensor mixed into the computation raises a device mismatch.
TEST_P(StepperContract, RunsOnMetaDevice) {
  fs::Denoiser model([](const at::Tensor& x, const at::Tensor& t) { return x * 0.5 + t.view({-1, 1}); }, vp(),
                     fs::Prediction::Eps);
  auto x_T = at::empty({3, 4}, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  auto out = fs::sample(model, x_T, GetParam(), 5);
  EXPECT_TRUE(out.x.device().is_meta());
  EXPECT_EQ(out.x.sizes(), x_T.sizes());
}

// A stepper's declared needs (StepperTraits::needs) only skip work: the same bits as evaluations
// converted into both predictions (SampleOptions::full_evaluations), for networks of every kind of
// prediction, and the Denoiser then really leaves the unneeded prediction out.
TEST_P(StepperContract, DeclaredNeedsGiveTheSameBits) {
  const auto& traits = fs::stepper_traits(GetParam());
  for (auto prediction : {fs::Prediction::Eps, fs::Prediction::X0, fs::Prediction::V}) {
    fs::Denoiser model([](const at::Tensor& x, const at::Tensor& t) { return 0.3 * x + 0.1 * t.view({-1, 1}); },
                       vp(), prediction);
    auto x_T = at::randn({5, 4}, generator(4), at::kDouble);
    const auto grid = fs::timesteps(model.schedule_ref(), 6, fs::Spacing::LogSNR);
    auto stepper = fs::solver(GetParam());
    fs::SampleOptions full, lean;
    full.full_evaluations = true;
    full.generator = generator(9);
    lean.generator = generator(9);
    auto a = fs::sample(model, x_T, *stepper, grid, full);
    auto b = fs::sample(model, x_T, *stepper, grid, lean);
    EXPECT_TRUE(at::equal(a.x, b.x)) << GetParam() << " prediction " << fs::to_string(prediction);
    EXPECT_EQ(a.nfe, b.nfe);
    const auto out = model(x_T, 0.5, traits.needs);
    EXPECT_EQ(out.x0.defined(), traits.needs != fs::Needs::Eps || prediction == fs::Prediction::X0) << GetParam();
    EXPECT_EQ(out.eps.defined(), traits.needs != fs::Needs::X0 || prediction == fs::Prediction::Eps) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(AllRegistered, StepperContract, ::testing::ValuesIn(fs::stepper_names()),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------- convergence orders

class ConvergenceOrder : public ::testing::TestWithParam<std::string> {
 protected:
  std::string table_;  // steps → error, printed when an assertion fails

  /// Fits the slope of log(error) against log(steps) for step counts n0·2^k, k < 5.
  double fitted_order(const fs::Denoiser& model, const at::Tensor& x_T, const at::Tensor& exact) {
    auto stepper = fs::solver(GetParam(), GetParam() == "dpmpp_2m" ? fs::Options{{"lower_order_final", false}}
                                                                 : fs::Options{});
    const int order = stepper->traits().order;
    // Start where the asymptotic regime begins; higher orders reach round-off sooner. Third-order
    // multistep methods (unipc, deis) leave the pre-asymptotic regime on the mixture near 128 steps.
    const int64_t n0 = order == 1 ? 64 : order == 2 ? 16 : 128;
    std::vector<double> ns, errs;
    for (int k = 0; k < 5; ++k) {
      const int64_t n = n0 << k;
      auto grid = fs::timesteps(model.schedule_ref(), n, fs::Spacing::LogSNR);
      auto out = fs::sample(model, x_T, *stepper, grid);
      ns.push_back(static_cast<double>(n));
      errs.push_back(rmse(out.x, exact));
      table_ += " " + std::to_string(n) + ":" + std::to_string(errs.back());
    }
    return -loglog_slope(ns, errs);
  }
};

TEST_P(ConvergenceOrder, SingleGaussianClosedForm) {
  auto schedule = vp();
  auto mean = at::tensor({0.5, -1.0, 2.0}, at::kDouble);
  auto var = at::tensor({0.04, 0.25, 1.0}, at::kDouble);
  auto model = fs::Denoiser::exact(fs::testing::single_gaussian(mean, var), schedule);
  auto x_T = at::randn({64, 3}, generator(1), at::kDouble);
  auto exact = fs::testing::single_gaussian_flow(*schedule, x_T, mean, var, schedule->t_max(), schedule->t_min());
  const double order = fitted_order(model, x_T, exact);
  EXPECT_NEAR(order, fs::stepper_traits(GetParam()).order, 0.25) << GetParam() << table_;
}

TEST_P(ConvergenceOrder, GaussianMixtureAgainstReferenceSolve) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  auto x_T = at::randn({64, 4}, generator(2), at::kDouble);
  auto reference = fs::reference_solve(model, x_T, schedule->t_max(), schedule->t_min()).x;
  const double order = fitted_order(model, x_T, reference);
  EXPECT_NEAR(order, fs::stepper_traits(GetParam()).order, 0.25) << GetParam() << table_;
}

INSTANTIATE_TEST_SUITE_P(Deterministic, ConvergenceOrder, ::testing::ValuesIn(deterministic_steppers()),
                         [](const auto& info) { return info.param; });

TEST(Needs, NoiseFormSteppersSkipTheDataPredictionAndUnreadErrorEstimates) {
  EXPECT_EQ(fs::stepper_traits("euler").needs, fs::Needs::Eps);
  EXPECT_EQ(fs::stepper_traits("dpm_solver_3m").needs, fs::Needs::Eps);
  EXPECT_EQ(fs::stepper_traits("dpmpp_2m").needs, fs::Needs::X0);
  EXPECT_EQ(fs::stepper_traits("unipc").needs, fs::Needs::Both);
  // Heun declares no error estimate and computes none; heun_euler computes its estimate when asked.
  auto model = fs::Denoiser::exact(mixture(), vp());
  auto x = at::randn({3, 4}, generator(12), at::kDouble);
  fs::ModelEvaluator eval(model, fs::Needs::Eps);
  fs::StepContext ctx;
  auto heun = fs::solver("heun")->step(eval, x, 0.8, 0.6, {}, ctx);
  EXPECT_FALSE(heun.error.has_value());
  auto pair = fs::solver("heun_euler")->step(eval, x, 0.8, 0.6, {}, ctx);
  ASSERT_TRUE(pair.error.has_value());
  ctx.wants_error = false;
  auto quiet = fs::solver("heun_euler")->step(eval, x, 0.8, 0.6, {}, ctx);
  EXPECT_FALSE(quiet.error.has_value());
  EXPECT_TRUE(at::equal(quiet.x, pair.x));
  EXPECT_TRUE(at::equal(heun.x, pair.x));
  // The σ = 0 marker asks for x̂_0 whatever the evaluator's default.
  fs::Denoiser net([](const at::Tensor& y, const at::Tensor& /*t*/) { return 0.3 * y; }, vp(), fs::Prediction::Eps);
  fs::ModelEvaluator eps_only(net, fs::Needs::Eps);
  EXPECT_FALSE(eps_only(x, 0.5).x0.defined());
  EXPECT_TRUE(fs::step_to_zero(eps_only, x, 0.5, {}).x.defined());
}

// ---------------------------------------------------------------- hand computations

namespace {
/// A linear "network" whose ε̂ depends on x and t, so every term of an update matters.
fs::Denoiser linear_model(const fs::SchedulePtr& schedule) {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& t) { return 0.3 * x + 0.1 * t.view({-1, 1}); },
                      schedule, fs::Prediction::Eps);
}
}  // namespace

TEST(HandComputation, DdimEqualsNoiseFormUpdate) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(5), at::kDouble);
  const double s = 0.8, t = 0.3;
  auto out = fs::sample(model, x, "ddim", 1, fs::Spacing::Time, {}, {}, s, t).x;
  auto eps = 0.3 * x + 0.1 * s;
  const double h = schedule->lambda(t) - schedule->lambda(s);
  auto expected = x * (schedule->alpha(t) / schedule->alpha(s)) - eps * (schedule->sigma(t) * std::expm1(h));
  EXPECT_TRUE(at::allclose(out, expected, 1e-13, 1e-13));
}

TEST(HandComputation, EulerOnVEIsKarrasEuler) {
  auto schedule = std::make_shared<fs::VE>(0.002, 80.0);
  fs::Denoiser model([](const at::Tensor& x, const at::Tensor& /*t*/) { return 0.2 * x; }, schedule,
                     fs::Prediction::X0);  // D(x, σ) = 0.2 x
  auto x = at::randn({3, 2}, generator(6), at::kDouble);
  const double s = 10.0, t = 4.0;
  auto out = fs::sample(model, x, "euler", 1, fs::Spacing::Time, {}, {}, s, t).x;
  auto expected = x + (x - 0.2 * x) / s * (t - s);  // x + (σ' − σ) (x − D)/σ
  EXPECT_TRUE(at::allclose(out, expected, 1e-13, 1e-13));
}

TEST(HandComputation, DpmSolverPP2MThreeSteps) {
  // Algorithm 2 of arXiv 2211.01095 written out on an explicit non-uniform grid.
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(8), at::kDouble);
  std::vector<double> grid{0.9, 0.55, 0.3, 0.12};
  auto stepper = fs::solver("dpmpp_2m", {{"lower_order_final", false}});
  auto out = fs::sample(model, x, *stepper, grid).x;

  auto x0_of = [&](const at::Tensor& xt, double t) {
    auto eps = 0.3 * xt + 0.1 * t;
    return (xt - eps * schedule->sigma(t)) / schedule->alpha(t);
  };
  auto lam = [&](double t) { return schedule->lambda(t); };
  auto sig = [&](double t) { return schedule->sigma(t); };
  auto alp = [&](double t) { return schedule->alpha(t); };
  // step 1: first order
  auto m0 = x0_of(x, grid[0]);
  double h = lam(grid[1]) - lam(grid[0]);
  auto x1 = sig(grid[1]) / sig(grid[0]) * x - alp(grid[1]) * std::expm1(-h) * m0;
  // steps 2, 3: D = (1 + 1/(2r)) m_i − 1/(2r) m_{i−1}
  auto m1 = x0_of(x1, grid[1]);
  h = lam(grid[2]) - lam(grid[1]);
  double r = (lam(grid[1]) - lam(grid[0])) / h;
  auto x2 = sig(grid[2]) / sig(grid[1]) * x1 - alp(grid[2]) * std::expm1(-h) * ((1 + 0.5 / r) * m1 - 0.5 / r * m0);
  auto m2 = x0_of(x2, grid[2]);
  h = lam(grid[3]) - lam(grid[2]);
  r = (lam(grid[2]) - lam(grid[1])) / h;
  auto x3 = sig(grid[3]) / sig(grid[2]) * x2 - alp(grid[3]) * std::expm1(-h) * ((1 + 0.5 / r) * m2 - 0.5 / r * m1);
  EXPECT_TRUE(at::allclose(out, x3, 1e-12, 1e-12)) << (out - x3).abs().max().item<double>();

  // With lower_order_final (grid of 3 < 10 steps) the last step is the DDIM update from x2.
  auto lof = fs::sample(model, x, *fs::solver("dpmpp_2m"), grid).x;
  auto x3_ddim = fs::ddim_update(*schedule, x2, m2, grid[2], grid[3]);
  EXPECT_TRUE(at::allclose(lof, x3_ddim, 1e-12, 1e-12));
  EXPECT_FALSE(at::allclose(lof, x3, 1e-6, 1e-6));
}

TEST(HandComputation, HeunIsTrapezoidOnPFODE) {
  auto schedule = std::make_shared<fs::FlowMatching>();
  fs::Denoiser model([](const at::Tensor& x, const at::Tensor& /*t*/) { return -0.5 * x; }, schedule,
                     fs::Prediction::Flow);  // velocity u(x) = −x/2
  auto x = at::randn({3, 2}, generator(9), at::kDouble);
  const double s = 0.9, t = 0.5;
  auto out = fs::sample(model, x, "heun", 1, fs::Spacing::Time, {}, {}, s, t).x;
  // dx/dt = u: Heun gives x + dt/2 (u(x) + u(x + dt u(x))) = x (1 − dt/2 + dt²/8) for u = −x/2.
  const double dt = t - s;
  auto expected = x * (1 - 0.5 * dt + dt * dt / 8.0);
  EXPECT_TRUE(at::allclose(out, expected, 1e-12, 1e-12)) << (out - expected).abs().max().item<double>();
}
