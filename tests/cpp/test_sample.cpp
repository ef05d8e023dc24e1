// The sampling driver: callbacks, statistics, trajectory, finite checks, inference mode,
// grids and input validation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <optional>

#include "fewstep/fewstep.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;

namespace {
fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }
fs::Denoiser toy_model() {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& /*t*/) { return 0.5 * x; }, vp(), fs::Prediction::Eps);
}
std::string message(const c10::Error& e) { return e.what_without_backtrace(); }
}  // namespace

TEST(Sample, CallbackSeesEveryStepInOrder) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(0));
  std::vector<fs::StepInfo> seen;
  std::vector<int64_t> nfes;
  fs::SampleOptions opts;
  opts.callback = [&](const fs::StepInfo& info) {
    seen.push_back(info);
    nfes.push_back(info.nfe);
    EXPECT_EQ(info.x.sizes(), x_T.sizes());
    EXPECT_EQ(info.x0.sizes(), x_T.sizes());
  };
  auto out = fs::sample(model, x_T, "heun", 4, fs::Spacing::Time, {}, opts);
  ASSERT_EQ(seen.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen[i].index, i);
    EXPECT_EQ(seen[i].num_steps, 4);
    EXPECT_DOUBLE_EQ(seen[i].t, out.timesteps[i]);
    EXPECT_DOUBLE_EQ(seen[i].t_next, out.timesteps[i + 1]);
    EXPECT_EQ(nfes[i], 2 * (i + 1));
  }
}

TEST(Sample, TrajectoryAndStats) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(1));
  fs::SampleOptions opts;
  opts.keep_trajectory = true;
  auto out = fs::sample(model, x_T, "ddim", 5, fs::Spacing::LogSNR, {}, opts);
  ASSERT_EQ(out.trajectory.size(), 6u);
  EXPECT_TRUE(at::equal(out.trajectory.front(), x_T));
  EXPECT_TRUE(at::equal(out.trajectory.back(), out.x));
  ASSERT_EQ(out.stats.size(), 5u);
  for (const auto& s : out.stats) EXPECT_EQ(s.nfe, 1);
  EXPECT_EQ(out.timesteps.size(), 6u);
}

TEST(Sample, DenoiseToZeroCostsOneEvaluationAndReturnsX0) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(2));
  fs::SampleOptions opts;
  auto plain = fs::sample(model, x_T, "ddim", 3, fs::Spacing::LogSNR, {}, opts);
  opts.denoise_to_zero = true;
  auto denoised = fs::sample(model, x_T, "ddim", 3, fs::Spacing::LogSNR, {}, opts);
  EXPECT_EQ(denoised.nfe, plain.nfe + 1);
  auto expected = model(plain.x, plain.timesteps.back()).x0;
  EXPECT_TRUE(at::allclose(denoised.x, expected));
}

TEST(Sample, FiniteCheckNamesStepAndTime) {
  // The model returns NaN once t < 0.7, i.e. from the third step of a uniform 4-step grid.
  fs::Denoiser model(
      [](const at::Tensor& x, const at::Tensor& t) {
        return at::where(t.view({-1, 1}) < 0.7, at::full_like(x, NAN), 0.5 * x);
      },
      vp(), fs::Prediction::Eps);
  auto x_T = at::randn({2, 3}, generator(3));
  fs::SampleOptions opts;
  opts.check_finite = true;
  try {
    fs::sample(model, x_T, "euler", 4, fs::Spacing::Time, {}, opts, 1.0, 0.2);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    auto msg = message(e);
    EXPECT_NE(msg.find("step 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("t = 0.4"), std::string::npos) << msg;
  }
  opts.check_finite = false;  // without the check the NaN simply propagates
  auto out = fs::sample(model, x_T, "euler", 4, fs::Spacing::Time, {}, opts, 1.0, 0.2);
  EXPECT_TRUE(at::isnan(out.x).all().item<bool>());
}

TEST(Sample, InferenceModeByDefaultGradientsWhenAsked) {
  auto weight = at::full({1}, 0.5, at::kDouble).requires_grad_(true);
  fs::Denoiser model([&](const at::Tensor& x, const at::Tensor&) { return x * weight; }, vp(), fs::Prediction::Eps);
  auto x_T = at::randn({2, 3}, generator(4), at::kDouble);
  auto out = fs::sample(model, x_T, "dpmpp_2m", 3);
  EXPECT_TRUE(out.x.is_inference());
  fs::SampleOptions opts;
  opts.inference_mode = false;
  auto trained = fs::sample(model, x_T, "dpmpp_2m", 3, fs::Spacing::LogSNR, {}, opts);
  ASSERT_TRUE(trained.x.requires_grad());
  trained.x.sum().backward();
  ASSERT_TRUE(weight.grad().defined());
  EXPECT_NE(weight.grad().item<double>(), 0.0);
}

TEST(Sample, ExplicitGridIsValidated) {
  auto model = toy_model();
  auto stepper = fs::solver("ddim");
  auto x_T = at::randn({2, 3}, generator(5));
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {0.5, 0.7, 0.1}), c10::ValueError);  // not decreasing
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {1.5, 0.1}), c10::ValueError);       // outside range
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {0.5}), c10::ValueError);            // one point
  auto out = fs::sample(model, x_T, *stepper, {0.9, 0.5, 0.01});
  EXPECT_EQ(out.nfe, 2);
}

TEST(Sample, BadInputsNameTheArgument) {
  auto model = toy_model();
  try {
    fs::sample(model, at::zeros({2, 3}, at::kLong), "ddim", 3);
    FAIL();
  } catch (const c10::TypeError& e) {
    EXPECT_NE(message(e).find("x_T"), std::string::npos);
  }
  try {
    fs::sample(model, at::Tensor(), "ddim", 3);
    FAIL();
  } catch (const c10::ValueError& e) {
    EXPECT_NE(message(e).find("x_T"), std::string::npos);
  }
  try {
    fs::sample(model, at::zeros({2, 3}), "ddim", 0);
    FAIL();
  } catch (const c10::ValueError& e) {
    EXPECT_NE(message(e).find("steps"), std::string::npos) << message(e);
  }
}

TEST(Sample, FollowsDtype) {
  auto gmm = fs::GaussianMixture::random(3, 2, 0);
  auto model = fs::Denoiser::exact(gmm, vp());
  auto x64 = at::randn({4, 3}, generator(6), at::kDouble);
  auto out64 = fs::sample(model, x64, "dpmpp_2m", 10);
  auto out32 = fs::sample(model, x64.to(at::kFloat), "dpmpp_2m", 10);
  EXPECT_EQ(out64.x.scalar_type(), at::kDouble);
  EXPECT_EQ(out32.x.scalar_type(), at::kFloat);
  // float32 arithmetic stays within float32 round-off of the float64 run.
  EXPECT_LT((out32.x.to(at::kDouble) - out64.x).abs().max().item<double>(), 1e-4);
}

// ---------------------------------------------------------------- the sampling request

namespace {
std::shared_ptr<const fs::Denoiser> mixture_model() {
  static auto model = std::make_shared<const fs::Denoiser>(
      fs::Denoiser::exact(fs::GaussianMixture::random(3, 2, 0), vp()));
  return model;
}
fs::SampleRequest request_of(const std::string& solver) {
  fs::SampleRequest r;
  r.model = mixture_model();
  r.x_T = at::randn({4, 3}, generator(9), at::kDouble);
  r.solver = solver;
  return r;
}
}  // namespace

TEST(SampleRequest, StepsGoThroughThePlan) {
  // dpm_solver_fast reads steps as its budget: 10 evaluations on ⌊10/3⌋ + 1 = 4 steps.
  auto r = request_of("dpm_solver_fast");
  r.steps = 10;
  const auto job = fs::resolve(r);
  EXPECT_EQ(job.grid.size(), 5u);
  EXPECT_EQ(job.run().nfe, 10);
  // An NFE budget is the step count that spends it, through the plan too.
  r.steps.reset();
  r.nfe = 7;
  EXPECT_EQ(fs::sample(r).nfe, 7);
  auto heun = request_of("heun");
  heun.nfe = 6;
  const auto h = fs::sample(heun);
  EXPECT_EQ(h.nfe, 6);
  EXPECT_EQ(h.steps, 3);
  heun.nfe = 7;
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(heun); }).find("nfe=7"), std::string::npos);
}

TEST(SampleRequest, OneWayToStepAndClearErrors) {
  auto r = request_of("heun_euler");
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(r); }).find("rtol=/atol= or controller= also work"),
            std::string::npos);
  r.steps = 4;
  r.rtol = 0.01;
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(r); }).find("one or the other"), std::string::npos);
  r.rtol.reset();
  r.timesteps = {0.9, 0.1};
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(r); }).find("steps= or timesteps="), std::string::npos);
  r.steps.reset();
  r.t_start = 0.5;
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(r); }).find("t_start"), std::string::npos);
  auto d = request_of("ddim");
  d.options.seeds = {1, 2};
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(d); }).find("one seed per sample"), std::string::npos);
  d.options.seeds = {1, 2, 3, 4};
  d.options.generator = generator(1);
  d.steps = 3;
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(d); }).find("not both"), std::string::npos);
}

TEST(SampleRequest, DefaultsInTheirOrder) {
  // dpm_adaptive samples adaptively (PID, DPM-Solver's tolerances) when nothing says otherwise.
  auto a = request_of("dpm_adaptive");
  const auto adaptive = fs::resolve(a);
  EXPECT_TRUE(adaptive.adaptive());
  EXPECT_NE(adaptive.controller->describe().find("rtol=0.05"), std::string::npos) << adaptive.controller->describe();
  // A model file's own sampler when the request names neither steps nor a solver ...
  auto r = request_of("");
  r.model_defaults = {"ddim", {0.9, 0.4, 0.05}, {}, {}};
  auto own = fs::resolve(r);
  EXPECT_EQ(own.solver, "ddim");
  EXPECT_EQ(own.grid, (std::vector<double>{0.9, 0.4, 0.05}));
  EXPECT_TRUE(own.own_grid);
  // ... and a solver it names runs on that grid too (ddim: a progressive student as it was trained) ...
  r.solver = "euler";
  r.fallback_steps = 7;
  auto named = fs::resolve(r);
  EXPECT_EQ(named.solver, "euler");
  EXPECT_EQ(named.grid, (std::vector<double>{0.9, 0.4, 0.05}));
  EXPECT_TRUE(named.own_grid);
  // ... unless that solver chooses its own steps; the fallback steps come last, for a model without a grid.
  r.solver = "dpm_adaptive";
  EXPECT_TRUE(fs::resolve(r).adaptive());
  r.solver = "euler";
  const std::vector<double> own_timesteps = r.model_defaults.timesteps;
  r.model_defaults.timesteps.clear();
  EXPECT_EQ(fs::resolve(r).grid.size(), 8u);
  r.model_defaults.timesteps = own_timesteps;
  // Steps without a solver: the file's own solver on a generated grid; dpmpp_2m only for a file without one.
  r.solver.clear();
  r.steps = 3;
  EXPECT_EQ(fs::resolve(r).solver, "ddim");
  EXPECT_EQ(fs::resolve(r).grid.size(), 4u);
  EXPECT_FALSE(fs::resolve(r).own_grid);
  r.model_defaults = {};
  EXPECT_EQ(fs::resolve(r).solver, "dpmpp_2m");
}

TEST(SampleRequest, XTMustMatchTheModelFilesSampleShape) {
  // The mixture's samples are [3]: x_T [4, 3] passes; a missing or extra dimension, or other coordinates,
  // is named before the network sees it.
  auto r = request_of("ddim");
  r.steps = 2;
  r.model_defaults.sample_shape = {3};
  EXPECT_EQ(fs::sample(r).x.sizes(), (std::vector<int64_t>{4, 3}));
  for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 2}, {4, 1, 3}, {3}}) {
    r.x_T = at::zeros(shape, at::kDouble);
    const std::string message = fs::testing::value_error_message([&] { fs::resolve(r); });
    EXPECT_NE(message.find("x_T has shape " + c10::str(c10::IntArrayRef(shape))), std::string::npos) << message;
    EXPECT_NE(message.find("[batch, 3]"), std::string::npos) << message;
  }
  // An image's channels are checked, its height and width are not (a convolutional net takes other sizes).
  r.model_defaults.sample_shape = {1, 28, 28};
  r.x_T = at::zeros({2, 28, 28}, at::kDouble);
  const std::string message = fs::testing::value_error_message([&] { fs::resolve(r); });
  EXPECT_NE(message.find("[batch, 1, 28, 28] (height and width may differ, the channels may not)"), std::string::npos)
      << message;
}

TEST(SampleRequest, DrawsXTFromPerSampleSeeds) {
  fs::SampleRequest r;
  r.model = mixture_model();
  r.sample_shape = {3};
  r.options.seeds = {5, 6, 7};
  r.solver = "ddim";
  r.steps = 4;
  const auto job = fs::resolve(r);
  EXPECT_TRUE(at::equal(job.x_T, fs::randn_per_sample({3}, {5, 6, 7}, at::TensorOptions().dtype(at::kFloat))));
  r.options.seeds.clear();
  EXPECT_NE(fs::testing::value_error_message([&] { fs::resolve(r); }).find("seeds"), std::string::npos);
}

// A fixed grid run by the one loop is the same run as the same grid given explicitly, with a
// GridController, or through the adaptive entry point.
TEST(SampleRequest, FixedGridIsAController) {
  auto model = mixture_model();
  auto x_T = at::randn({4, 3}, generator(10), at::kDouble);
  auto stepper = fs::solver("dpmpp_3m");
  const auto grid = fs::timesteps(model->schedule_ref(), 6, fs::Spacing::LogSNR);
  const auto fixed = fs::sample(*model, x_T, *stepper, grid);
  fs::GridController controller(grid);
  const auto driven = fs::sample_adaptive(*model, x_T, *stepper, controller, grid.front(), grid.back());
  // Through sample_adaptive the steppers do not see the grid's length, so lower_order_final is off there;
  // the same grid as a request is bit-identical.
  fs::SampleRequest r;
  r.model = model;
  r.x_T = x_T;
  r.stepper = stepper;
  r.timesteps = grid;
  EXPECT_TRUE(at::equal(fs::sample(r).x, fixed.x));
  EXPECT_EQ(driven.nfe, 6);
  EXPECT_EQ(driven.timesteps, grid);
}

// UniPC's corrector revises the value at t_i during step i: the trajectory and the callback of step
// i − 1 report the corrected value, which is the point the next predictor starts from.
TEST(SampleRequest, TrajectoryAndCallbackReportTheCorrectedValue) {
  auto model = mixture_model();
  auto x_T = at::randn({4, 3}, generator(11), at::kDouble);
  std::vector<at::Tensor> seen;
  std::vector<int64_t> indices, nfes;
  fs::SampleOptions opts;
  opts.keep_trajectory = true;
  opts.callback = [&](const fs::StepInfo& info) {
    seen.push_back(info.x.clone());
    indices.push_back(info.index);
    nfes.push_back(info.nfe);
  };
  const auto with = fs::sample(*model, x_T, "unipc", 5, fs::Spacing::LogSNR, {}, opts);
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(indices, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(nfes, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  ASSERT_EQ(with.trajectory.size(), 6u);
  for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(seen[i], with.trajectory[i + 1])) << i;
  EXPECT_TRUE(at::equal(with.trajectory.back(), with.x));  // the last step is never corrected
  // Driving the stepper by hand: step i's revised_start is trajectory[i], and step 0 (UniP-1, no
  // history) returns DDIM's value, which the corrector then replaces.
  auto stepper = fs::solver("unipc");
  const auto& grid = with.timesteps;
  fs::ModelEvaluator evaluator(*model);
  fs::StepContext ctx;
  ctx.num_steps = 5;
  ctx.grid = &grid;
  at::Tensor x = x_T;
  fs::SolverState state = stepper->init(x);
  std::vector<at::Tensor> predicted;
  for (int64_t i = 0; i < 5; ++i) {
    ctx.index = i;
    auto result = stepper->step(evaluator, x, grid[i], grid[i + 1], std::move(state), ctx);
    ASSERT_EQ(result.revised_start.has_value(), i > 0) << i;
    if (i > 0) {
      EXPECT_TRUE(at::equal(*result.revised_start, with.trajectory[i])) << i;
    }
    predicted.push_back(result.x);
    x = result.x;
    state = std::move(result.state);
  }
  EXPECT_TRUE(at::equal(x, with.x));
  fs::SampleOptions keep;
  keep.keep_trajectory = true;
  const auto ddim = fs::sample(*model, x_T, "ddim", 5, fs::Spacing::LogSNR, {}, keep);
  EXPECT_TRUE(at::allclose(predicted[0], ddim.trajectory[1], 1e-12, 1e-12));
  EXPECT_FALSE(at::equal(with.trajectory[1], predicted[0]));
  // Without the corrector nothing is revised: the trajectory is the predictor's.
  const auto plain = fs::sample(*model, x_T, "unipc", 5, fs::Spacing::LogSNR, {{"use_corrector", false}}, keep);
  EXPECT_TRUE(at::equal(plain.trajectory[1], predicted[0]));
}

// ---------------------------------------------------------------- one request through the C++ API and the CLI

namespace {
/// The `fewstep` binary and the shipped 2-D mixture model, found from this test binary's place in the build
/// tree (<build>/bin, with the build directory inside the source tree); empty if absent.
std::pair<std::string, std::string> cli_and_model() {
  namespace fsys = std::filesystem;
  std::error_code ec;
  const fsys::path bin = fsys::read_symlink("/proc/self/exe", ec).parent_path();
  const fsys::path cli = bin / "fewstep";
  const fsys::path model = bin.parent_path().parent_path() / "models" / "gmm2d-mlp-eps.pt";
  if (ec || !fsys::is_regular_file(cli) || !fsys::is_regular_file(model)) return {};
  return {cli.string(), model.string()};
}
}  // namespace

// The same request through fewstep::sample(SampleRequest) and `fewstep sample` spends the same NFE and gives
// the same bits, for every registered solver (stochastic ones with per-sample seeds), dpm_solver_fast's budget
// and dpm_adaptive's adaptive default included. tests/python/test_cross_interface.py checks Python against the
// same CLI runs.
TEST(CrossInterface, CppRequestMatchesTheCli) {
  const auto [cli, model_path] = cli_and_model();
  if (cli.empty()) GTEST_SKIP() << "build/bin/fewstep or models/gmm2d-mlp-eps.pt not found";
  const fs::ModelFile file = fs::load_model_file(model_path);
  const std::string dir = fs::testing::scratch_dir("sample", "cross");
  const int64_t n = 5;
  const uint64_t seed = 21;
  struct Case {
    std::string solver;
    std::optional<int64_t> steps;
  };
  std::vector<Case> cases;
  for (const auto& name : fs::stepper_names()) cases.push_back({name, 4});
  cases.push_back({"dpm_solver_fast", 10});
  cases.push_back({"dpm_adaptive", std::nullopt});
  // The CLI runs first, four at a time (most of a run is loading LibTorch).
  auto command_of = [&](const Case& c, size_t i) {
    std::string command = cli + " sample --model " + model_path + " --solver " + c.solver + " --n " +
                          std::to_string(n) + " --seed " + std::to_string(seed) + " --quiet --out " + dir + "/" +
                          std::to_string(i) + ".png --save-samples " + dir + "/" + std::to_string(i) + ".pt";
    if (c.steps) command += " --steps " + std::to_string(*c.steps);
    return command;
  };
  for (size_t first = 0; first < cases.size(); first += 4) {
    std::vector<std::future<int>> running;
    for (size_t i = first; i < std::min(cases.size(), first + 4); ++i)
      running.push_back(std::async(std::launch::async, [command = command_of(cases[i], i)] {
        return std::system(command.c_str());
      }));
    for (size_t k = 0; k < running.size(); ++k) ASSERT_EQ(running[k].get(), 0) << command_of(cases[first + k], first + k);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const fs::TensorArchive from_cli = fs::TensorArchive::load(dir + "/" + std::to_string(i) + ".pt");
    fs::SampleRequest r;
    r.model = std::make_shared<const fs::Denoiser>(file.denoiser);
    r.sample_shape = file.sample_shape;
    for (int64_t k = 0; k < n; ++k) r.options.seeds.push_back(seed + static_cast<uint64_t>(k));
    r.solver = c.solver;
    r.steps = c.steps;
    const fs::Solution sol = fs::sample(r);
    EXPECT_EQ(from_cli.integer("nfe"), sol.nfe) << c.solver;
    EXPECT_TRUE(at::equal(from_cli.tensor("x"), sol.x)) << c.solver;
  }
  std::filesystem::remove_all(dir);
}

TEST(Sample, FinalSigmaZeroEndsWithTheLastEvaluationsX0) {
  // The grid's σ = 0 marker: the last step is one evaluation at the previous time whose x̂_0 is the
  // result; the stepper's lower_order_final counts that step (num_steps includes it).
  auto gmm = fs::GaussianMixture::random(3, 2, 0);
  auto model = fs::Denoiser::exact(gmm, vp());
  auto x_T = at::randn({5, 3}, generator(1)).to(at::kDouble);
  const auto grid = fs::timesteps(*vp(), 6, fs::Spacing::LogSNR, std::nullopt, std::nullopt, 7.0, std::nullopt,
                                  fs::FinalSigma::Zero);
  ASSERT_EQ(grid.back(), 0.0);
  std::vector<int64_t> num_steps;
  fs::SampleOptions opts;
  opts.callback = [&](const fs::StepInfo& info) { num_steps.push_back(info.num_steps); };
  auto out = fs::sample(model, x_T, *fs::solver("dpmpp_2m"), grid, opts);
  EXPECT_EQ(out.nfe, 6);
  EXPECT_EQ(num_steps, std::vector<int64_t>(6, 6));
  // The same as 5 steps of the solver (which sees 6 steps: no lowered order before the last)
  // followed by x̂_0 at the fifth step's end.
  std::vector<double> head(grid.begin(), grid.end() - 1);
  fs::ModelEvaluator eval(model);
  auto stepper = fs::solver("dpmpp_2m");
  fs::SolverState state = stepper->init(x_T);
  fs::StepContext ctx;
  ctx.num_steps = 6;
  at::Tensor x = x_T;
  for (int64_t i = 0; i + 1 < static_cast<int64_t>(head.size()); ++i) {
    ctx.index = i;
    auto r = stepper->step(eval, x, head[i], head[i + 1], std::move(state), ctx);
    x = r.x;
    state = std::move(r.state);
  }
  auto expect = model(x, head.back()).x0;
  EXPECT_TRUE(at::equal(out.x, expect));
  // denoise_to_zero would evaluate at t = 0: refused.
  fs::SampleOptions dz;
  dz.denoise_to_zero = true;
  EXPECT_THROW(fs::sample(model, x_T, *fs::solver("ddim"), grid, dz), c10::ValueError);
}

// ---- interrupts between steps (core/interrupt.h) ----
namespace {
std::atomic<int> g_calls{0};
std::atomic<int> g_fire_at{0};
int interrupt_after_calls() { return ++g_calls >= g_fire_at ? 2 : 0; }  // 2 = SIGINT
struct InterruptCheckScope {
  explicit InterruptCheckScope(int fire_at) {
    g_calls = 0;
    g_fire_at = fire_at;
    previous = fs::set_interrupt_check(&interrupt_after_calls);
  }
  ~InterruptCheckScope() { fs::set_interrupt_check(previous); }
  fs::InterruptCheck previous;
};
}  // namespace

TEST(Interrupt, SamplingLoopStopsBetweenSteps) {
  auto model = fs::Denoiser::exact(fs::GaussianMixture::random(3, 2, 0), vp());
  auto x_T = at::randn({2, 3}, generator(0));
  int64_t steps_seen = 0;
  fs::SampleOptions opts;
  opts.callback = [&](const fs::StepInfo&) { ++steps_seen; };
  {
    InterruptCheckScope scope(/*fire_at=*/5);
    try {
      fs::sample(model, x_T, "heun", 100, fs::Spacing::Time, {}, opts);
      FAIL() << "not interrupted";
    } catch (const fs::Interrupted& e) {
      EXPECT_EQ(e.signal(), 2);
    }
  }
  EXPECT_EQ(steps_seen, 4);  // checked before each step: the 5th check fired
  // Without a pending interrupt (no check installed) the same run completes.
  EXPECT_EQ(fs::sample(model, x_T, "heun", 100, fs::Spacing::Time, {}, {}).steps, 100);
}

TEST(Interrupt, ReferenceSolveStopsBetweenEvaluations) {
  auto model = fs::Denoiser::exact(fs::GaussianMixture::random(3, 2, 0), vp());
  auto x_T = at::randn({2, 3}, generator(1)).to(at::kDouble);
  InterruptCheckScope scope(/*fire_at=*/20);
  EXPECT_THROW(fs::reference_solve(model, x_T, vp()->t_max(), vp()->t_min(), fs::ReferenceOptions{}), fs::Interrupted);
  EXPECT_EQ(g_calls.load(), 20);
}

TEST(Sample, NonFiniteInputsAndModelOutputsAreNamedAtOnce) {
  auto model = fs::Denoiser::exact(fs::GaussianMixture::random(3, 2, 0), vp());
  auto x_T = at::randn({2, 3}, generator(0));
  x_T[1][2] = NAN;
  try {
    fs::SampleRequest bad;
    bad.model = std::make_shared<fs::Denoiser>(model);
    bad.x_T = x_T;
    bad.solver = "dpm_adaptive";
    fs::sample(bad);
    FAIL() << "accepted a NaN x_T";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(message(e).find("x_T must be finite, got NaN at index (1, 2)"), std::string::npos) << message(e);
  }
  int64_t calls = 0;
  fs::Denoiser nan_model([&](const at::Tensor& x, const at::Tensor&) { ++calls; return x * NAN; }, vp(),
                         fs::Prediction::Eps);
  fs::SampleRequest r;
  r.model = std::make_shared<fs::Denoiser>(nan_model);
  r.x_T = at::randn({2, 3}, generator(0));
  r.solver = "dpm_adaptive";
  try {
    fs::sample(r);
    FAIL() << "a NaN model was sampled";
  } catch (const c10::Error& e) {
    EXPECT_NE(message(e).find("the model returned non-finite values (NaN/Inf)"), std::string::npos) << message(e);
  }
  EXPECT_LT(calls, 10);  // named at the first rejected attempt, not after max_steps
}

TEST(SampleRequest, StepCountsAreBoundedBeforeAllocation) {
  fs::SampleRequest r;
  r.model = std::make_shared<fs::Denoiser>(toy_model());
  r.x_T = at::randn({2, 3}, generator(0));
  r.steps = int64_t{1} << 62;
  EXPECT_THROW(fs::resolve(r), c10::ValueError);
  r.steps.reset();
  r.nfe = fs::kMaxGridSteps + 1;
  EXPECT_THROW(fs::resolve(r), c10::ValueError);
  EXPECT_THROW(fs::timesteps(*vp(), fs::kMaxGridSteps + 1), c10::ValueError);
}
