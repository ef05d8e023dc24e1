// Adaptive step size: the embedded pairs, the PID controller and the adaptive driver.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "fewstep/control/pid.h"
#include "fewstep/fewstep.h"
#include "fewstep/sample/reference.h"
#include "fewstep/solvers/dpm_adaptive.h"
#include "fewstep/solvers/dpm_solver_12.h"
#include "fewstep/solvers/dpm_solver_23.h"
#include "fewstep/solvers/heun_euler.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;

namespace {

std::shared_ptr<fs::VPLinear> vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }

/// The 4-D, 3-component mixture of test_solvers.cpp: modes overlap, the flow from t = 1 bends.
std::shared_ptr<fs::GaussianMixture> mixture() {
  static auto gmm = fs::GaussianMixture::random(4, 3, 7, false, 1.0, 0.05, 0.3);
  return gmm;
}

/// A linear "network" whose ε̂ depends on x and t, so every term of an update matters.
fs::Denoiser linear_model(const fs::SchedulePtr& schedule) {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& t) { return 0.3 * x + 0.1 * t.view({-1, 1}); },
                      schedule, fs::Prediction::Eps);
}

fs::PIDController pid(double rtol, double atol, fs::PIDOptions o = {}) { return fs::PIDController(rtol, atol, o); }

struct Problem {
  fs::SchedulePtr schedule = vp();
  fs::Denoiser model = fs::Denoiser::exact(mixture(), schedule);
  at::Tensor x_T = at::randn({64, 4}, generator(21), at::kDouble);
  at::Tensor reference = fs::reference_solve(model, x_T, 1.0, 1e-3).x;
};

const Problem& problem() {
  static Problem p;
  return p;
}

/// Achieved global error in the controller's own units: max over samples of the RMS of
/// (x − x_ref)/(atol + rtol·|x_ref|). 1 means "exactly at the requested tolerance".
double achieved(const at::Tensor& x, const at::Tensor& ref, double rtol, double atol) {
  return fs::scaled_error_norm(x - ref, ref, ref, rtol, atol);
}

}  // namespace

// ---------------------------------------------------------------- registry and hand computations

TEST(EmbeddedPairs, Registered) {
  for (auto [name, order, nfe] : {std::tuple<const char*, int, int>{"heun_euler", 2, 2}, {"dpm_solver_12", 2, 2},
                                  {"dpm_solver_23", 3, 3}, {"dpm_adaptive", 3, 3}}) {
    const auto& tr = fs::stepper_traits(name);
    EXPECT_TRUE(tr.has_error_estimate) << name;
    EXPECT_EQ(tr.order, order) << name;
    EXPECT_EQ(tr.nfe_per_step, nfe) << name;
    EXPECT_FALSE(tr.stochastic) << name;
  }
  auto two = fs::solver("dpm_adaptive", {{"order", int64_t{2}}});
  EXPECT_EQ(two->traits().order, 2);
  EXPECT_EQ(two->traits().nfe_per_step, 2);
  EXPECT_THROW(fs::solver("dpm_adaptive", {{"order", int64_t{4}}}), c10::ValueError);
}

TEST(EmbeddedPairs, DpmSolver12MatchesPaperFormulas) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(5), at::kDouble);
  const double s = 0.8, t = 0.3;
  fs::ModelEvaluator eval(model);
  auto r = fs::DpmSolver12Stepper().step(eval, x, s, t, {}, {});
  auto eps = [](const at::Tensor& xx, double tt) { return 0.3 * xx + 0.1 * tt; };
  auto& sc = *schedule;
  const double h = sc.lambda(t) - sc.lambda(s);
  const double s1 = sc.t_of_lambda(sc.lambda(s) + 0.5 * h);
  auto x_low = sc.alpha(t) / sc.alpha(s) * x - sc.sigma(t) * std::expm1(h) * eps(x, s);
  auto u = sc.alpha(s1) / sc.alpha(s) * x - sc.sigma(s1) * std::expm1(0.5 * h) * eps(x, s);
  auto x_high = sc.alpha(t) / sc.alpha(s) * x - sc.sigma(t) * std::expm1(h) * eps(x, s) -
                sc.sigma(t) * std::expm1(h) * (eps(u, s1) - eps(x, s));  // 1/(2 r1) = 1
  EXPECT_EQ(eval.nfe(), 2);
  EXPECT_TRUE(at::allclose(r.x, x_high, 1e-13, 1e-13));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(at::allclose(*r.error, x_high - x_low, 1e-13, 1e-13));
}

TEST(EmbeddedPairs, DpmSolver23MatchesPaperFormulas) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({4, 2}, generator(6), at::kDouble);
  const double s = 0.7, t = 0.2;
  fs::ModelEvaluator eval(model);
  auto r = fs::DpmSolver23Stepper().step(eval, x, s, t, {}, {});
  auto eps = [](const at::Tensor& xx, double tt) { return 0.3 * xx + 0.1 * tt; };
  auto& sc = *schedule;
  const double h = sc.lambda(t) - sc.lambda(s), r1 = 1.0 / 3, r2 = 2.0 / 3;
  const double s1 = sc.t_of_lambda(sc.lambda(s) + r1 * h), s2 = sc.t_of_lambda(sc.lambda(s) + r2 * h);
  auto e_s = eps(x, s);
  auto u1 = sc.alpha(s1) / sc.alpha(s) * x - sc.sigma(s1) * std::expm1(r1 * h) * e_s;
  auto d1 = eps(u1, s1) - e_s;
  auto u2 = sc.alpha(s2) / sc.alpha(s) * x - sc.sigma(s2) * std::expm1(r2 * h) * e_s -
            r2 / r1 * sc.sigma(s2) * (std::expm1(r2 * h) / (r2 * h) - 1) * d1;
  auto base = sc.alpha(t) / sc.alpha(s) * x - sc.sigma(t) * std::expm1(h) * e_s;
  auto x_low = base - sc.sigma(t) / (2 * r1) * std::expm1(h) * d1;
  auto x_high = base - sc.sigma(t) / r2 * (std::expm1(h) / h - 1) * (eps(u2, s2) - e_s);
  EXPECT_EQ(eval.nfe(), 3);
  EXPECT_TRUE(at::allclose(r.x, x_high, 1e-13, 1e-13));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(at::allclose(*r.error, x_high - x_low, 1e-13, 1e-13));
}

TEST(EmbeddedPairs, HeunEulerIsHeunWithEulerEstimate) {
  auto schedule = vp();
  auto model = linear_model(schedule);
  auto x = at::randn({3, 2}, generator(7), at::kDouble);
  const double s = 0.6, t = 0.45;
  fs::ModelEvaluator e1(model), e2(model), e3(model);
  auto he = fs::HeunEulerStepper().step(e1, x, s, t, {}, {});
  auto heun = fs::HeunStepper().step(e2, x, s, t, {}, {});
  auto euler = fs::EulerStepper().step(e3, x, s, t, {}, {});
  EXPECT_TRUE(at::allclose(he.x, heun.x, 1e-14, 1e-14));
  ASSERT_TRUE(he.error.has_value());
  EXPECT_TRUE(at::allclose(*he.error, heun.x - euler.x, 1e-13, 1e-13));
}

// The local error estimate has the order the controller assumes: halving h divides it by 2^k.
TEST(EmbeddedPairs, ErrorEstimateHasDeclaredLocalOrder) {
  const auto& p = problem();
  auto x = p.x_T.slice(0, 0, 8);
  const double s = 0.5, lam_s = p.schedule->lambda(s);
  for (const char* name : {"heun_euler", "dpm_solver_12", "dpm_solver_23"}) {
    auto stepper = fs::solver(name);
    std::vector<double> hs, errs;
    for (double h : {0.04, 0.02, 0.01, 0.005}) {
      fs::ModelEvaluator eval(p.model);
      auto r = stepper->step(eval, x, s, p.schedule->t_of_lambda(lam_s + h), {}, {});
      hs.push_back(1.0 / h);
      errs.push_back(r.error->norm().item<double>());
    }
    const double k = -fs::testing::loglog_slope(hs, errs);
    EXPECT_NEAR(k, stepper->traits().order, 0.15) << name;
  }
}

// ---------------------------------------------------------------- the PID controller by hand

TEST(PIDController, ErrorNormIsPerSampleRmsThenMaxOverBatch) {
  auto x = at::zeros({2, 2, 2}, at::kDouble);
  auto x_next = at::ones({2, 2, 2}, at::kDouble);  // scale = atol + rtol·1 = 0.5
  auto err = at::zeros({2, 2, 2}, at::kDouble);
  err[0].fill_(0.1);                               // sample 0: RMS 0.1/0.5 = 0.2
  err[1][0][0] = 0.4;                              // sample 1: RMS sqrt(0.8²/4) = 0.4
  EXPECT_NEAR(fs::scaled_error_norm(err, x, x_next, 0.25, 0.25), 0.4, 1e-15);
}

TEST(PIDController, IControllerDecisionByHand) {
  auto schedule = vp();
  fs::PIDOptions o;
  o.step_variable = fs::StepVariable::Time;
  o.factor_min = 0.2;
  o.factor_max = 1.5;
  auto c = pid(0.1, 0.1, o);  // pcoeff 0, icoeff 1, dcoeff 0, safety 0.9: the I controller
  auto x = at::ones({3, 5}, at::kDouble);
  auto decide = [&](double err, double t, double t_next, double t_end = 1e-3) {
    auto e = at::full({3, 5}, err, at::kDouble);
    fs::ControlInput in{*schedule, t, t_next, 1.0, t_end, x, x, x, nullptr, &e, 2, 0, 0};
    return c.decide(in, fs::ControllerState{});
  };
  // scale = atol + rtol·1 = 0.2. err 0.05 → E = 0.25, factor = 0.9·0.25^{−1/2} = 1.8 → clipped to 1.5.
  auto d = decide(0.05, 0.5, 0.4);
  EXPECT_TRUE(d.accept);
  EXPECT_NEAR(d.error_norm, 0.25, 1e-15);
  EXPECT_NEAR(d.t_next, 0.4 - 0.1 * 1.5, 1e-12);
  // err 0.1 → E = 0.5, factor = 0.9·√2 = 1.2728 (inside the limits).
  d = decide(0.1, 0.5, 0.4);
  EXPECT_TRUE(d.accept);
  EXPECT_NEAR(d.t_next, 0.4 - 0.1 * 0.9 * std::sqrt(2.0), 1e-12);
  // err 0.8 → E = 4: rejected, retried from t with h·0.9·4^{−1/2} = 0.045.
  d = decide(0.8, 0.5, 0.4);
  EXPECT_FALSE(d.accept);
  EXPECT_NEAR(d.t_next, 0.5 - 0.045, 1e-12);
  // err 200 → E = 1000: factor 0.9/√1000 = 0.028 is clipped to factor_min = 0.2.
  d = decide(200.0, 0.5, 0.4);
  EXPECT_FALSE(d.accept);
  EXPECT_NEAR(d.t_next, 0.5 - 0.1 * 0.2, 1e-12);
  // A step that would end within 1% of t_end (or past it) lands exactly on t_end.
  d = decide(0.1, 0.5, 0.4, 0.28);
  EXPECT_EQ(d.t_next, 0.28);
}

TEST(PIDController, PIControllerUsesPreviousAcceptedError) {
  auto schedule = vp();
  fs::PIDOptions o;
  o.pcoeff = 0.4;
  o.icoeff = 0.3;
  o.factor_max = 10;
  auto c = pid(0.1, 0.1, o);  // step in λ
  auto x = at::ones({1, 4}, at::kDouble);
  auto e = at::full({1, 4}, 0.1, at::kDouble);  // E = 0.5
  const double t = 0.5, t_next = schedule->t_of_lambda(schedule->lambda(t) + 0.2);
  fs::ControlInput in{*schedule, t, t_next, 1.0, 1e-3, x, x, x, nullptr, &e, 3, 1, 0};
  fs::ControllerState st{{4.0, 1.0, 0.0}, {}};  // previous accepted step had E = 1/4
  auto d = c.decide(in, st);
  ASSERT_TRUE(d.accept);
  // β1 = 0.7, β2 = −0.4, β3 = 0, k = 3: factor = 0.9 · 2^{0.7/3} · 4^{−0.4/3}.
  const double factor = 0.9 * std::pow(2.0, 0.7 / 3) * std::pow(4.0, -0.4 / 3);
  const double h_next = 0.2 * factor;
  EXPECT_NEAR(schedule->lambda(d.t_next) - schedule->lambda(t_next), h_next, 1e-9);
  // The history shifts: 1/E_n = 2 becomes the previous error.
  EXPECT_EQ(d.state.scalars[0], 2.0);
  EXPECT_EQ(d.state.scalars[1], 4.0);
}

TEST(PIDController, InvalidSettingsNameTheArgument) {
  EXPECT_THROW(pid(-1e-3, 1e-3), c10::ValueError);
  EXPECT_THROW(pid(1e-3, 0.0), c10::ValueError);
  fs::PIDOptions o;
  o.factor_max = 0.5;
  try {
    pid(1e-3, 1e-3, o);
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("factor_max"), std::string::npos);
  }
}

// ---------------------------------------------------------------- the adaptive driver

TEST(SampleAdaptive, MeetsToleranceAndSpendsLessWhenLooser) {
  const auto& p = problem();
  std::printf("  solver          tol     achieved(E)  rmse        nfe  acc  rej\n");
  for (const char* name : {"dpm_adaptive", "dpm_solver_12", "heun_euler"}) {
    double prev_err = 0;
    int64_t prev_nfe = 0;
    for (double tol : {1e-2, 1e-3, 1e-4, 1e-5}) {
      auto out = fs::sample_adaptive(p.model, p.x_T, name, pid(tol, tol));
      const double e = achieved(out.x, p.reference, tol, tol);
      std::printf("  %-14s  %.0e  %10.3g  %10.3g  %5lld %4lld %4lld\n", name, tol, e,
                  fs::testing::rmse(out.x, p.reference), static_cast<long long>(out.nfe),
                  static_cast<long long>(out.accepted), static_cast<long long>(out.rejected));
      // The controller bounds each step's local error of the *lower*-order solution by the tolerance,
      // and returns the higher-order one (local extrapolation), so the global error stays at the
      // tolerance's scale (E = O(1)); it is not a guarantee, hence a small factor. Measured max E:
      // dpm_adaptive 1.04, heun_euler 1.8, dpm_solver_12 2.44 (all at 1e-5..1e-4).
      EXPECT_LT(e, 3.0) << name << " tol " << tol;
      const double abs_err = (out.x - p.reference).abs().max().item<double>();
      if (prev_nfe > 0) {
        EXPECT_LT(abs_err, prev_err) << name << ": error must decrease as the tolerance tightens";
        EXPECT_GT(out.nfe, prev_nfe) << name << ": a looser tolerance must spend fewer evaluations";
      }
      prev_err = abs_err;
      prev_nfe = out.nfe;
      EXPECT_EQ(out.nfe, (out.accepted + out.rejected) * fs::stepper_traits(name).nfe_per_step);
    }
  }
}

// The I controller oscillates (accept, grow, reject, shrink, ...) where the error estimate is not yet
// in its asymptotic h^k regime (large λ-steps at high noise); the PI controller (Gustafsson's
// pcoeff 0.4, icoeff 0.3) damps it. Measured at tol 1e-3: I 25 accepted + 9 rejected, PI 28 + 2.
TEST(SampleAdaptive, PIControllerRejectsLessThanI) {
  const auto& p = problem();
  fs::PIDOptions pi;
  pi.pcoeff = 0.4;
  pi.icoeff = 0.3;
  auto i_run = fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-3, 1e-3));
  auto pi_run = fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-3, 1e-3, pi));
  EXPECT_LT(pi_run.rejected, i_run.rejected);
  EXPECT_LT(achieved(pi_run.x, p.reference, 1e-3, 1e-3), 3.0);
}

TEST(SampleAdaptive, LandsExactlyOnTEndWithDecreasingTimes) {
  const auto& p = problem();
  auto out = fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-3, 1e-3), {}, {}, 0.9, 0.02);
  ASSERT_GE(out.timesteps.size(), 2u);
  EXPECT_EQ(out.timesteps.front(), 0.9);
  EXPECT_EQ(out.timesteps.back(), 0.02);
  for (size_t i = 1; i < out.timesteps.size(); ++i) EXPECT_LT(out.timesteps[i], out.timesteps[i - 1]);
  EXPECT_EQ(out.steps, out.accepted);
  EXPECT_EQ(static_cast<int64_t>(out.stats.size()), out.accepted);
  auto ref = fs::reference_solve(p.model, p.x_T, 0.9, 0.02).x;
  EXPECT_LT(achieved(out.x, ref, 1e-3, 1e-3), 3.0);
}

TEST(SampleAdaptive, RejectsStepsWhenItMustAndCountsTheirEvaluations) {
  const auto& p = problem();
  fs::PIDOptions o;
  o.first_step = 8.0;  // most of the λ range in one step: far too large at rtol = atol = 1e-4
  auto out = fs::sample_adaptive(p.model, p.x_T, "dpm_solver_23", pid(1e-4, 1e-4, o));
  EXPECT_GT(out.rejected, 0);
  EXPECT_EQ(out.nfe, 3 * (out.accepted + out.rejected));
  int64_t nfe = 0, rejected = 0;
  for (const auto& s : out.stats) nfe += s.nfe, rejected += s.rejected;
  EXPECT_EQ(nfe, out.nfe);
  EXPECT_EQ(rejected, out.rejected);
  EXPECT_GT(out.stats.front().rejected, 0);
  EXPECT_LT(achieved(out.x, p.reference, 1e-4, 1e-4), 3.0) << "rejections must not cost accuracy";

  // Denoising to zero adds exactly one evaluation.
  fs::SampleOptions so;
  so.denoise_to_zero = true;
  auto d = fs::sample_adaptive(p.model, p.x_T, "dpm_solver_23", pid(1e-4, 1e-4, o), {}, so);
  EXPECT_EQ(d.nfe, out.nfe + 1);
}

TEST(SampleAdaptive, ControllerHoldsNoStateBetweenRuns) {
  const auto& p = problem();
  auto c = pid(1e-3, 1e-3);
  auto stepper = fs::solver("dpm_adaptive", {{"order", int64_t{2}}});
  auto a = fs::sample_adaptive(p.model, p.x_T, *stepper, c, 1.0, 1e-3);
  auto b = fs::sample_adaptive(p.model, p.x_T, *stepper, c, 1.0, 1e-3);
  EXPECT_TRUE(at::equal(a.x, b.x));
  EXPECT_EQ(a.timesteps, b.timesteps);
  EXPECT_EQ(a.nfe, b.nfe);
}

TEST(SampleAdaptive, StepControlInTimeAndFloat32) {
  const auto& p = problem();
  fs::PIDOptions o;
  o.step_variable = fs::StepVariable::Time;
  auto out = fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-4, 1e-4, o));
  EXPECT_LT(achieved(out.x, p.reference, 1e-4, 1e-4), 3.0);
  auto f = fs::sample_adaptive(p.model, p.x_T.to(at::kFloat), "dpm_adaptive", pid(1e-3, 1e-3));
  EXPECT_EQ(f.x.scalar_type(), at::kFloat);
  EXPECT_LT(achieved(f.x, p.reference, 1e-3, 1e-3), 3.0);
}

TEST(SampleAdaptive, MaxStepsErrorSaysWhatToChange) {
  const auto& p = problem();
  fs::PIDOptions o;
  o.max_steps = 5;
  try {
    fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-6, 1e-6, o));
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("max_steps = 5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at t = "), std::string::npos) << msg;
    EXPECT_NE(msg.find("raise max_steps or loosen rtol/atol"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rtol=1e-06"), std::string::npos) << msg;
  }
}

TEST(SampleAdaptive, SolverWithoutErrorEstimateIsAValueErrorNamingIt) {
  const auto& p = problem();
  try {
    fs::sample_adaptive(p.model, p.x_T, "ddim", pid(1e-3, 1e-3));
    FAIL() << "no error";
  } catch (const c10::ValueError& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("'ddim'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no error estimate"), std::string::npos) << msg;
    EXPECT_NE(msg.find("heun_euler"), std::string::npos) << msg;
  }
  EXPECT_THROW(fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-3, 1e-3), {}, {}, 0.2, 0.5),
               c10::ValueError);
  EXPECT_THROW(fs::sample_adaptive(p.model, p.x_T, "dpm_adaptive", pid(1e-3, 1e-3), {}, {}, 2.0, 0.5),
               c10::ValueError);
}
