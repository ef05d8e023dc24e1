// grids/optimize.h: optimised time grids on an exact Gaussian mixture (docs/grids.md), and their use
// by the sampling request (sample/request.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/grids/optimize.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"
#include "test_util.h"

namespace fs = fewstep;

namespace {

fs::Denoiser mixture_model() {
  return fs::Denoiser::exact(fs::GaussianMixture::random(8, 6, 0), std::make_shared<fs::VPLinear>(0.1, 20.0));
}

fs::GridFitSettings small_settings() {
  fs::GridFitSettings s;
  s.sample_shape = {8};
  s.n = 48;
  s.heldout_n = 48;
  s.candidates = 60;
  s.substeps = 4;
  s.progress = false;
  return s;
}

void expect_grid_shape(const fs::OptimizedGrid& g, const fs::NoiseSchedule& schedule, int64_t steps) {
  ASSERT_EQ(static_cast<int64_t>(g.times.size()), steps + 1);
  EXPECT_DOUBLE_EQ(g.times.front(), schedule.t_max());
  EXPECT_DOUBLE_EQ(g.times.back(), schedule.t_min());
  for (size_t i = 1; i < g.times.size(); ++i) EXPECT_LT(g.times[i], g.times[i - 1]);
}

/// The references of `n` seeds from `seed`, solved again as the fit solves them (without the cache).
fs::TeacherSolve references(const fs::Denoiser& model, const fs::GridFitSettings& s, uint64_t seed, int64_t n) {
  fs::TeacherSolveSpec spec;
  spec.sample_shape = s.sample_shape;
  spec.n = n;
  spec.seed = seed;
  spec.solver = s.reference_solver;
  spec.grid = fs::timesteps(model.schedule_ref(), s.candidates * s.substeps, fs::Spacing::LogSNR);
  spec.dtype = at::kDouble;
  spec.progress = false;
  return fs::teacher_solve(model, spec);
}

const std::vector<fs::Spacing> kFixedSpacings = {fs::Spacing::LogSNR, fs::Spacing::Time, fs::Spacing::Quadratic,
                                                 fs::Spacing::Karras};

template <typename F>
std::string value_error(F&& f) {
  try {
    f();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  return "(no ValueError)";
}

}  // namespace

// GITS's claim (arXiv 2405.11326, Table 2): a grid fitted by dynamic programming on the one-step cost
// beats the hand-made spacings at low NFE. Held-out seeds: the fit is not just memorising its samples.
TEST(Grids, DynamicProgrammingBeatsEveryFixedSpacingOnHeldOutSeeds) {
  const fs::Denoiser model = mixture_model();
  for (const std::string solver : {"dpmpp_2m", "unipc"}) {
    const fs::OptimizedGrid g = fs::optimize_timesteps(model, solver, {}, 5, "dp", small_settings());
    expect_grid_shape(g, model.schedule_ref(), 5);
    EXPECT_EQ(g.method, "dp");
    EXPECT_EQ(g.nfe, 5);
    EXPECT_GT(g.reference_nfe, 100);
    EXPECT_FALSE(g.best_fixed_spacing.empty());
    EXPECT_LT(g.heldout_error, g.best_fixed_error) << solver << ": tuned " << g.heldout_error << " vs "
                                                   << g.best_fixed_spacing << " " << g.best_fixed_error;
  }
}

// The selection: whatever the surrogate found, the returned grid's median training error is at most
// every fixed spacing's (recomputed here from fresh references), and the record says which grid it is.
TEST(Grids, TunedGridIsNeverWorseThanAFixedSpacingOnTheTrainingSeeds) {
  const fs::Denoiser model = mixture_model();
  fs::GridFitSettings s = small_settings();
  s.candidates = 12;  // a coarse DP, which a fixed grid can beat
  const fs::TeacherSolve train = references(model, s, s.seed, s.n);
  for (int64_t nfe : {4, 8}) {
    const fs::OptimizedGrid g = fs::optimize_timesteps(model, "dpmpp_2m", {}, nfe, "dp", s);
    expect_grid_shape(g, model.schedule_ref(), nfe);
    const double own = at::quantile(fs::grid_errors(model, "dpmpp_2m", {}, g.times, train.x_T(), train.x_end()), 0.5)
                           .item<double>();
    EXPECT_NEAR(own, g.train_error, 1e-12 * own);
    for (fs::Spacing spacing : kFixedSpacings) {
      const double fixed =
          at::quantile(fs::grid_errors(model, "dpmpp_2m", {}, fs::timesteps(model.schedule_ref(), nfe, spacing),
                                       train.x_T(), train.x_end()),
                       0.5)
              .item<double>();
      EXPECT_LE(g.train_error, fixed * (1 + 1e-12)) << "nfe " << nfe << " vs " << fs::to_string(spacing);
    }
    if (g.selected == "fitted") {
      EXPECT_DOUBLE_EQ(g.train_error, g.fitted_train_error);
    } else {
      EXPECT_EQ(g.selected.rfind("fixed ", 0), 0u) << g.selected;
      EXPECT_LT(g.train_error, g.fitted_train_error);
    }
  }
}

// LD3 (arXiv 2405.15506): descent on the times from the best fixed spacing lowers the training loss, and
// the grid it finds beats the uniform log-SNR grid on samples it never saw.
TEST(Grids, GradientMethodLowersTheLossAndGeneralises) {
  const fs::Denoiser model = mixture_model();
  fs::GridFitSettings s = small_settings();
  s.iterations = 40;
  s.lr = 0.1;
  const fs::OptimizedGrid g = fs::optimize_timesteps(model, "dpmpp_2m", {}, 5, "gradient", s);
  expect_grid_shape(g, model.schedule_ref(), 5);
  ASSERT_EQ(static_cast<int64_t>(g.loss.size()), s.iterations + 1);
  const double best = *std::min_element(g.loss.begin(), g.loss.end());
  EXPECT_LT(best, g.loss.front());
  // The start is the fixed spacing of least training loss (LD3 starts from a standard schedule): the
  // first scored iterate is that grid, up to the round trip t -> λ -> softmax -> λ -> t.
  const fs::TeacherSolve train = references(model, s, s.seed, s.n);
  double start = std::numeric_limits<double>::infinity();
  for (fs::Spacing spacing : kFixedSpacings)
    start = std::min(start, fs::grid_errors(model, "dpmpp_2m", {}, fs::timesteps(model.schedule_ref(), 5, spacing),
                                            train.x_T(), train.x_end())
                                .pow(2)
                                .mean()
                                .item<double>());
  EXPECT_NEAR(g.loss.front(), start, 1e-6 * start);

  // The held-out references of the fit, solved again through the cache-less teacher solve.
  const fs::TeacherSolve held = references(model, s, s.heldout_seed, s.heldout_n);
  const double uniform =
      at::quantile(fs::grid_errors(model, "dpmpp_2m", {}, fs::timesteps(model.schedule_ref(), 5, fs::Spacing::LogSNR),
                                   held.x_T(), held.x_end()),
                   0.5)
          .item<double>();
  EXPECT_LT(g.heldout_error, 0.7 * uniform);
}

TEST(Grids, BadInputNamesTheValue) {
  const fs::Denoiser model = mixture_model();
  const fs::GridFitSettings s = small_settings();
  std::string e = value_error([&] { fs::optimize_timesteps(model, "unipc", {}, 0, "dp", s); });
  EXPECT_NE(e.find("nfe must be >= 1, got 0"), std::string::npos) << e;
  e = value_error([&] { fs::optimize_timesteps(model, "unipc", {}, 5, "annealing", s); });
  EXPECT_NE(e.find("'annealing'"), std::string::npos) << e;
  e = value_error([&] { fs::optimize_timesteps(model, "euler_maruyama", {}, 5, "dp", s); });
  EXPECT_NE(e.find("stochastic"), std::string::npos) << e;
  e = value_error([&] { fs::optimize_timesteps(model, "heun", {}, 5, "dp", s); });
  EXPECT_NE(e.find("nfe=5"), std::string::npos) << e;
  fs::GridFitSettings few = s;
  few.candidates = 3;
  e = value_error([&] { fs::optimize_timesteps(model, "unipc", {}, 5, "dp", few); });
  EXPECT_NE(e.find("candidates (3)"), std::string::npos) << e;
}

// The request samples on a file's tuned grid when solver, options and NFE match, and only then.
TEST(Grids, RequestUsesTheTunedGridForItsSolverOptionsAndNfe) {
  const fs::Denoiser model = mixture_model();
  fs::ModelTunedGrid tuned;
  tuned.solver = "dpmpp_2m";
  tuned.nfe = 3;
  tuned.timesteps = {1.0, 0.5, 0.05, 1e-3};
  fs::SampleRequest r;
  r.model = fs::borrowed(model);
  r.sample_shape = {8};
  r.options.seeds = {0, 1};
  r.solver = "dpmpp_2m";
  r.steps = 3;
  r.model_defaults.tuned_grids = {tuned};
  fs::ResolvedSample job = fs::resolve(r);
  ASSERT_TRUE(job.tuned_grid != nullptr);
  EXPECT_EQ(job.grid, tuned.timesteps);
  EXPECT_TRUE(job.run().tuned_grid);

  fs::SampleRequest by_nfe = r;
  by_nfe.steps.reset();
  by_nfe.nfe = 3;
  EXPECT_EQ(fs::resolve(by_nfe).grid, tuned.timesteps);

  const std::vector<double> generated = fs::timesteps(model.schedule_ref(), 3, fs::Spacing::LogSNR);
  fs::SampleRequest off = r;
  off.use_tuned_grid = false;  // --grid default, --spacing
  EXPECT_EQ(fs::resolve(off).grid, generated);
  EXPECT_FALSE(fs::resolve(off).run().tuned_grid);
  fs::SampleRequest other_nfe = r;
  other_nfe.steps = 4;
  EXPECT_EQ(fs::resolve(other_nfe).tuned_grid, nullptr);
  fs::SampleRequest other_solver = r;
  other_solver.solver = "unipc";
  EXPECT_EQ(fs::resolve(other_solver).tuned_grid, nullptr);
  fs::SampleRequest other_options = r;
  other_options.solver_options.set("lower_order_final", false);
  EXPECT_EQ(fs::resolve(other_options).tuned_grid, nullptr);
  fs::SampleRequest ranged = r;
  ranged.t_end = 0.01;
  EXPECT_EQ(fs::resolve(ranged).tuned_grid, nullptr);
}
