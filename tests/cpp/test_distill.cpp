// Tests of the distillation trainers beyond progressive distillation's own (test_progressive.cpp):
// closed-form optimal students on single-Gaussian data (knowledge distillation and a one-round
// progressive distillation), guidance distillation, the shared Trainer shape
// (kinds of checkpoints, resume), network specs and weight copies.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "fewstep/data/mixture_data.h"
#include "fewstep/metrics/solver_choice.h"
#include "fewstep/models/model_file.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/guidance_trainer.h"
#include "fewstep/train/kd_trainer.h"
#include "fewstep/train/lr_schedule.h"
#include "fewstep/train/progressive_trainer.h"
#include "fewstep/sample/teacher_cache.h"
#include "test_util.h"

namespace {

using fewstep::Prediction;
using fewstep::ScriptNet;
using fewstep::testing::generator;
using fewstep::testing::scratch_dir;
using fewstep::testing::value_error_message;

// The data: one Gaussian N(μ, diag(v)) in 2-D.
const at::Tensor& mean() {
  static const at::Tensor m = at::tensor({0.5, -1.0}, at::kDouble);
  return m;
}
const at::Tensor& var() {
  static const at::Tensor v = at::tensor({0.25, 2.0}, at::kDouble);
  return v;
}

// A student whose data prediction is affine and time-independent: x̂_0 = a ⊙ x + b.
ScriptNet affine_student() {
  auto m = std::make_shared<torch::jit::Module>("__torch__.AffineStudent");
  m->register_parameter("a", at::ones({2}).requires_grad_(), false);
  m->register_parameter("b", at::zeros({2}).requires_grad_(), false);
  m->define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    return x * self.a + self.b
)");
  return m;
}

double mean_of(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + static_cast<long>(from), v.begin() + static_cast<long>(to), 0.0) /
         static_cast<double>(to - from);
}

// ---------------------------------------------------------------------------------------------
// Closed-form optimal students on single-Gaussian data

// With exact rollouts the 1-step DDIM student's map z ↦ α_lo x̂ + σ_lo (z − α_hi x̂)/σ_hi with
// x̂ = a z + b is affine, and so is the exact flow map T → t_lo (each coordinate's standardised
// value is preserved): the regression has an exact zero-loss solution, which the trainer must reach.
TEST(KnowledgeDistillation, OneStepStudentReachesTheClosedFormFlowMap) {
  at::set_num_threads(1);
  auto schedule = std::make_shared<fewstep::VPLinear>();
  auto gaussian = fewstep::testing::single_gaussian(mean(), var());
  fewstep::TeacherSolveSpec spec;
  spec.sample_shape = {2};
  spec.n = 512;
  spec.seed = 7;
  spec.solver = "unipc";
  spec.grid = fewstep::timesteps(*schedule, 200, "logsnr");
  spec.progress = false;
  fewstep::RolloutPairs pairs =
      fewstep::rollout_pairs(fewstep::teacher_solve(fewstep::Denoiser::exact(gaussian, schedule), spec));
  const double lo = schedule->t_min(), hi = schedule->t_max();
  // The rollouts themselves against the closed form: unipc (order 3) with 200 steps; 40 steps give
  // 4.4e-3, so (40/200)³ predicts ~4e-5.
  const at::Tensor exact = fewstep::testing::single_gaussian_flow(*schedule, pairs.x_T.to(at::kDouble), mean(), var(),
                                                                  hi, lo);
  ASSERT_LT((pairs.x_0.to(at::kDouble) - exact).abs().max().item<double>(), 2e-4);

  fewstep::KdTrainerOptions o;
  o.timesteps = {hi, lo};
  o.student_prediction = Prediction::X0;
  o.batch = 128;
  o.optimizer.schedule = {5e-2, 0, 800, 1e-4};
  o.ema_decay = 0.0;  // the EMA is the current student
  fewstep::KnowledgeDistillationTrainer trainer(affine_student(), schedule, pairs, o);
  const fewstep::TrainSummary s = trainer.train(800);
  EXPECT_LT(mean_of(s.losses, 750, 800), 1e-3 * mean_of(s.losses, 0, 10));

  const at::Tensor z = at::randn({256, 2}, generator(3), at::kFloat);
  at::Tensor out;
  {
    at::NoGradGuard no_grad;
    out = fewstep::sample(trainer.student_denoiser(trainer.ema_student()), z, *fewstep::solver("ddim"), o.timesteps).x;
  }
  const at::Tensor want = fewstep::testing::single_gaussian_flow(*schedule, z.to(at::kDouble), mean(), var(), hi, lo);
  // Float32 training to a loss ~1e-6 relative: the map agrees to a few 1e-3 on N(0, I) inputs.
  EXPECT_LT((out.to(at::kDouble) - want).abs().max().item<double>(), 5e-3);
}

// One round with N = 1: the target is the teacher's x̂ after one DDIM half step, an affine
// function of z_T when the teacher is the exact Gaussian denoiser. Written out here without the
// library: x̂(z, t) = μ + α v/(α² v + σ²)(z − α μ), DDIM z' = α' x̂ + σ'(z − α x̂)/σ.
TEST(ProgressiveDistillation, OneStepStudentReachesTheClosedFormTarget) {
  at::set_num_threads(1);
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const double lo = schedule->t_min(), hi = schedule->t_max();
  const double mid = fewstep::progressive_grid_time(0.5, 1, lo, hi);
  // The exact x0-predicting teacher as a TorchScript module (VPLinear(0.1, 20) written out).
  auto teacher = std::make_shared<torch::jit::Module>("__torch__.ExactGaussianTeacher");
  teacher->register_buffer("mu", mean().to(at::kFloat));
  teacher->register_buffer("v", var().to(at::kFloat));
  teacher->register_parameter("unused", at::zeros({1}), false);
  teacher->define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    t = t.to(x.dtype).reshape([-1, 1])
    a = torch.exp(-0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1)
    s2 = 1.0 - a * a
    return self.mu + a * self.v / (a * a * self.v + s2) * (x - a * self.mu) + 0.0 * self.unused
)");
  auto xhat = [&](double z, double t, int d) {
    const double a = schedule->alpha(t), s = schedule->sigma(t), m = mean()[d].item<double>(),
                 v = var()[d].item<double>();
    return m + a * v / (a * a * v + s * s) * (z - a * m);
  };
  auto target = [&](double z, int d) {  // teacher DDIM hi → mid, then its x̂ at mid
    const double x0 = xhat(z, hi, d);
    const double z_mid = schedule->alpha(mid) * x0 + schedule->sigma(mid) * (z - schedule->alpha(hi) * x0) /
                                                         schedule->sigma(hi);
    return xhat(z_mid, mid, d);
  };

  fewstep::ProgressiveTrainerOptions o;
  o.initial_steps = o.final_steps = 1;
  o.iterations_per_round = 600;
  o.teacher_prediction = Prediction::X0;
  o.student_prediction = Prediction::X0;
  o.optimizer.schedule = {5e-2, 0, 600, 1e-4};
  o.ema_decay = 0.0;
  auto data = std::make_shared<fewstep::MixtureData>(fewstep::testing::single_gaussian(mean(), var()), 128,
                                                     uint64_t{5});
  fewstep::ProgressiveDistillationTrainer trainer(teacher, schedule, data, o, affine_student());
  trainer.train(600);
  const auto params = trainer.ema_student()->named_parameters();
  at::Tensor a, b;
  for (const auto& p : params) (p.name == "a" ? a : b) = p.value;
  for (int d = 0; d < 2; ++d) {
    const double b_want = target(0.0, d), a_want = target(1.0, d) - b_want;
    // The target is exactly affine and the weight is constant at t = t_max: least squares has the
    // exact solution; float32 Adam gets within ~1e-3.
    EXPECT_NEAR(a[d].item<double>(), a_want, 2e-3 * std::max(1.0, std::abs(a_want))) << "dimension " << d;
    EXPECT_NEAR(b[d].item<double>(), b_want, 2e-3 * std::max(1.0, std::abs(b_want))) << "dimension " << d;
  }
}

// ---------------------------------------------------------------------------------------------
// Guidance distillation

fewstep::MlpConfig tiny_conditional(bool guidance_input) {
  fewstep::MlpConfig c;
  c.hidden = 32;
  c.blocks = 1;
  c.time_frequencies = 16;
  c.time_embed_dim = 32;
  c.num_classes = 4;
  c.guidance_input = guidance_input;
  return c;
}

std::shared_ptr<fewstep::GaussianMixture> four_modes() {
  static auto gmm = fewstep::GaussianMixture::random(2, 4, /*seed=*/11, /*diagonal=*/false, /*spread=*/1.0);
  return gmm;
}

// A random conditional teacher whose labels matter: its label embedding is scaled up three-fold.
ScriptNet conditional_teacher() {
  ScriptNet teacher = fewstep::make_mlp(tiny_conditional(false), 3);
  at::NoGradGuard no_grad;
  teacher->attr("time_embed").toModule().attr("label_weight").toTensor().mul_(3.0);
  return teacher;
}

std::unique_ptr<fewstep::GuidanceDistillationTrainer> guidance_trainer(uint64_t student_seed = 1) {
  ScriptNet teacher = conditional_teacher();
  ScriptNet student = fewstep::make_mlp(tiny_conditional(true), student_seed);
  fewstep::copy_weights(*teacher, *student);
  fewstep::GuidanceTrainerOptions o;
  o.num_classes = 4;
  o.guidance_min = 1.0;
  o.guidance_max = 5.0;
  o.optimizer.schedule = {1e-2, 0, 1000, 1e-4};
  o.ema_decay = 0.9;
  o.seed = 4;
  return std::make_unique<fewstep::GuidanceDistillationTrainer>(
      teacher, student, std::make_shared<fewstep::VPLinear>(),
      std::make_shared<fewstep::MixtureData>(four_modes(), 64, uint64_t{2}), o);
}

TEST(GuidanceDistillation, StudentStartsAsTheConditionalTeacher) {
  ScriptNet teacher = conditional_teacher();
  ScriptNet student = fewstep::make_mlp(tiny_conditional(true), 9);
  fewstep::copy_weights(*teacher, *student);
  const at::Tensor x = at::randn({8, 2}, generator(1)), t = at::rand({8}, generator(2));
  const at::Tensor y = at::randint(0, 4, {8}, generator(3), at::kLong);
  const at::Tensor want = fewstep::forward_network(*teacher, x, t, y, {}, "teacher");
  for (double w : {1.0, 2.7, 5.0}) {
    const at::Tensor got = fewstep::forward_network(*student, x, t, y, at::full({8}, w), "student");
    EXPECT_TRUE(at::equal(got, want)) << "w = " << w;  // the guidance layer starts at zero
  }
}

TEST(GuidanceDistillation, LossDecreasesAndResumesExactly) {
  at::set_num_threads(1);
  auto trainer = guidance_trainer();
  const fewstep::TrainSummary s = trainer->train(1000);
  // With Δ = out_c − out_u and s ~ U[1, 5], the initial student (= the conditional teacher, s = 1)
  // has loss E(s − 1)² ‖Δ‖² = (Var s + (E s − 1)²) ‖Δ‖² = (4/3 + 4) ‖Δ‖²; the best student that
  // ignores s has Var s ‖Δ‖² = (4/3) ‖Δ‖², a quarter of that. Going below a quarter needs the
  // guidance input.
  EXPECT_LT(mean_of(s.losses, 950, 1000), 0.25 * mean_of(s.losses, 0, 5))
      << "first 5: " << mean_of(s.losses, 0, 5) << ", last 50: " << mean_of(s.losses, 950, 1000);
  // The student learned to use s: F(s = 5) − F(s = 1) points along the teacher's 4Δ.
  {
    at::NoGradGuard no_grad;
    ScriptNet teacher = conditional_teacher();
    const at::Tensor x = at::randn({256, 2}, generator(11)), t = 0.05 + 0.9 * at::rand({256}, generator(12));
    const at::Tensor y = at::randint(0, 4, {256}, generator(13), at::kLong);
    const at::Tensor delta = fewstep::forward_network(*teacher, x, t, y, {}, "teacher") -
                             fewstep::forward_network(*teacher, x, t, at::full_like(y, 4), {}, "teacher");
    const ScriptNet& st = trainer->ema_student();
    const at::Tensor moved = fewstep::forward_network(*st, x, t, y, at::full({256}, 5.0), "student") -
                             fewstep::forward_network(*st, x, t, y, at::full({256}, 1.0), "student");
    const double cosine = (moved * delta).sum().item<double>() / (moved.norm() * delta.norm()).item<double>();
    const double ratio = (moved.norm() / (4.0 * delta.norm())).item<double>();
    EXPECT_GT(cosine, 0.95);
    EXPECT_NEAR(ratio, 1.0, 0.2);
  }

  const std::string dir = scratch_dir("distill", "guidance_resume");
  auto full = guidance_trainer();
  full->train(10);
  auto first = guidance_trainer();
  first->train(6);
  first->save_checkpoint(dir + "/ckpt.pt");
  auto resumed = guidance_trainer(/*student_seed=*/77);
  ASSERT_TRUE(resumed->resume(dir + "/ckpt.pt"));
  resumed->train(4);
  const auto pa = full->ema_student()->parameters(), pb = resumed->ema_student()->parameters();
  auto ib = pb.begin();
  for (auto ia = pa.begin(); ia != pa.end(); ++ia, ++ib) EXPECT_TRUE(at::equal(*ia, *ib));
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Knowledge distillation, the Trainer shape (the rollout cache: tests/cpp/test_files.cpp)

std::unique_ptr<fewstep::KnowledgeDistillationTrainer> kd_trainer(const fewstep::RolloutPairs& pairs,
                                                                  uint64_t net_seed = 5) {
  fewstep::MlpConfig c = tiny_conditional(false);
  c.num_classes = 0;
  fewstep::KdTrainerOptions o;
  auto schedule = std::make_shared<fewstep::VPLinear>();
  o.timesteps = fewstep::timesteps(*schedule, 2, "time");
  o.student_prediction = Prediction::X0;
  o.batch = 32;
  o.optimizer.schedule = {3e-3, 0, 200, 1e-4};
  o.ema_decay = 0.9;
  o.seed = 3;
  return std::make_unique<fewstep::KnowledgeDistillationTrainer>(fewstep::make_mlp(c, net_seed), schedule, pairs, o);
}

TEST(KnowledgeDistillation, TwoStepStudentLossDecreasesAndResumesExactly) {
  at::set_num_threads(1);
  auto schedule = std::make_shared<fewstep::VPLinear>();
  fewstep::TeacherSolveSpec spec;
  spec.sample_shape = {2};
  spec.n = 256;
  spec.solver = "unipc";
  spec.grid = fewstep::timesteps(*schedule, 20, "logsnr");
  spec.progress = false;
  const fewstep::RolloutPairs pairs =
      fewstep::rollout_pairs(fewstep::teacher_solve(fewstep::Denoiser::exact(four_modes(), schedule), spec));
  auto trainer = kd_trainer(pairs);
  const fewstep::TrainSummary s = trainer->train(200);
  EXPECT_LT(mean_of(s.losses, 180, 200), 0.5 * mean_of(s.losses, 0, 10));

  const std::string dir = scratch_dir("distill", "kd_resume");
  auto full = kd_trainer(pairs);
  full->train(12);  // 8 batches per pass over the pairs: crosses an epoch
  auto first = kd_trainer(pairs);
  first->train(9);
  first->save_checkpoint(dir + "/ckpt.pt");
  auto resumed = kd_trainer(pairs, /*net_seed=*/99);
  resumed->load_checkpoint(dir + "/ckpt.pt");
  resumed->train(3);
  const auto pa = full->ema_student()->parameters(), pb = resumed->ema_student()->parameters();
  auto ib = pb.begin();
  for (auto ia = pa.begin(); ia != pa.end(); ++ia, ++ib) EXPECT_TRUE(at::equal(*ia, *ib));

  // Another kind of checkpoint is refused, naming both formats.
  auto guidance = guidance_trainer();
  const std::string msg = value_error_message([&] { guidance->load_checkpoint(dir + "/ckpt.pt"); });
  EXPECT_NE(msg.find("fewstep.kd_trainer.v1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fewstep.guidance_trainer.v1"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(KnowledgeDistillation, BadOptionsNameTheField) {
  fewstep::RolloutPairs pairs{at::zeros({4, 2}), at::zeros({4, 2}), {}, "", false};
  fewstep::KdTrainerOptions o;
  o.timesteps = {0.5, 0.7};
  EXPECT_NE(value_error_message([&] {
              fewstep::KnowledgeDistillationTrainer(fewstep::make_mlp({}, 0), std::make_shared<fewstep::VPLinear>(),
                                                    pairs, o);
            }).find("timesteps must decrease"),
            std::string::npos);
  o.timesteps = {1.0, 0.001};
  o.batch = 8;
  EXPECT_NE(value_error_message([&] {
              fewstep::KnowledgeDistillationTrainer(fewstep::make_mlp({}, 0), std::make_shared<fewstep::VPLinear>(),
                                                    pairs, o);
            }).find("4 pairs are fewer than batch = 8"),
            std::string::npos);
}

// A guided, class-conditional progressive round: labels and guidance weights reach every teacher call
// (per-row groups) and the student; with lo = hi the teacher is a fixed-w denoiser.
TEST(ProgressiveDistillation, GuidedConditionalStudentTrains) {
  at::set_num_threads(1);
  ScriptNet teacher = fewstep::make_mlp(tiny_conditional(true), 3);
  fewstep::ProgressiveTrainerOptions o;
  o.initial_steps = 4;
  o.final_steps = 2;
  o.iterations_per_round = 40;
  o.conditioning.num_classes = 4;
  o.guidance_range = std::make_pair(2.0, 3.0);
  o.optimizer.schedule.lr = 3e-3;
  fewstep::ProgressiveDistillationTrainer trainer(teacher, std::make_shared<fewstep::VPLinear>(),
                                                  std::make_shared<fewstep::MixtureData>(four_modes(), 32, uint64_t{1}),
                                                  o);
  const fewstep::TrainSummary s = trainer.train(80);
  EXPECT_TRUE(trainer.finished());
  EXPECT_EQ(trainer.current_steps(), 2);
  EXPECT_LT(mean_of(s.losses, 30, 40), mean_of(s.losses, 0, 5));
}

// ---------------------------------------------------------------------------------------------
// Pieces

TEST(NetworkSpec, RoundTripsAndAddsAGuidanceInput) {
  fewstep::MlpConfig c = tiny_conditional(false);
  const std::string spec = fewstep::network_spec(c);
  ScriptNet a = fewstep::network_from_spec(spec, 0, "test");
  EXPECT_EQ(fewstep::parameter_count(*a), fewstep::mlp_parameter_count(c));
  ScriptNet g = fewstep::network_from_spec(spec, 0, "test", /*guidance_input=*/1);
  c.guidance_input = true;
  EXPECT_EQ(fewstep::parameter_count(*g), fewstep::mlp_parameter_count(c));
  EXPECT_EQ(fewstep::network_spec_num_classes(spec, "test"), 4);
  EXPECT_NE(value_error_message([] { fewstep::network_from_spec("{oops", 0, "sidecar x.json"); }).find("sidecar x.json"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { fewstep::network_from_spec(R"({"kind": "Transformer"})", 0, "s"); })
                .find("unknown kind 'Transformer'"),
            std::string::npos);
  // copy_weights: the target may have more tensors, not fewer.
  EXPECT_NE(value_error_message([&] { fewstep::copy_weights(*g, *a); }).find("guidance_fc1"), std::string::npos);
}

TEST(LrSchedule, LinearDecayReachesTheFloor) {
  fewstep::LrSchedule s{1.0, 10, 110, 0.1, fewstep::LrDecay::Linear};
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_DOUBLE_EQ(s.at(60), 0.55);
  EXPECT_DOUBLE_EQ(s.at(110), 0.1);
  EXPECT_DOUBLE_EQ(s.at(500), 0.1);
}

// ---------------------------------------------------------------------------------------------
// Which solver samples a student (metrics/solver_choice.h)

std::shared_ptr<fewstep::GaussianMixture> bent_mixture() {
  static auto gmm = fewstep::GaussianMixture::random(/*dim=*/4, /*components=*/3, /*seed=*/7, /*diagonal=*/false,
                                                     /*spread=*/1.0, /*min_var=*/0.05, /*max_var=*/0.3);
  return gmm;
}

// The two regimes the choice tells apart. The exact model on a coarse grid is what a student that
// has not absorbed the discretisation error looks like: DDIM is first order, the multistep solvers
// second or third, so DDIM must lose. A student that makes each DDIM step land exactly on the ODE
// (the ideal of progressive distillation with a fine target: x̂_0 chosen so the DDIM step from t_i
// reaches the flow's value at t_{i+1}) is sampled exactly by DDIM, and the multistep corrections
// only move it away: DDIM must win, by far.
TEST(SolverChoice, DdimLosesOnTheExactModelAndWinsOnADdimExactStudent) {
  at::set_num_threads(1);
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser exact = fewstep::Denoiser::exact(bent_mixture(), schedule);
  const std::vector<double> grid = fewstep::timesteps(*schedule, 6, "logsnr");
  const at::Tensor x_T = at::randn({256, 4}, generator(11)).to(at::kDouble);
  const at::Tensor reference = fewstep::sample(exact, x_T, "unipc", 400).x;

  const fewstep::SolverChoice teacher = fewstep::choose_grid_solver(exact, x_T, grid, reference);
  ASSERT_EQ(teacher.trials.size(), fewstep::grid_solver_candidates().size());
  EXPECT_EQ(teacher.trials.front().solver, "ddim");
  EXPECT_NE(teacher.solver, "ddim");
  double least = teacher.trials.front().error.median;
  for (const auto& t : teacher.trials) {
    least = std::min(least, t.error.median);
    // Each trial is the coupled error of that solver's samples, as a user would measure it.
    const at::Tensor x = fewstep::sample(exact, x_T, *fewstep::solver(t.solver), grid).x;
    EXPECT_DOUBLE_EQ(t.error.median, fewstep::coupled_error(x, reference).median) << t.solver;
  }
  for (const auto& t : teacher.trials)
    if (t.solver == teacher.solver) {
      EXPECT_LE(t.error.median, least * 1.01);
    }
  EXPECT_LT(least, 0.5 * teacher.trials.front().error.median);  // second order beats first by far here

  // The DDIM-exact student: x_next = (σ_n/σ_t) x + (α_n − σ_n α_t/σ_t) x̂_0, solved for x̂_0.
  const auto next_time = [grid](double t) {
    for (size_t i = 0; i + 1 < grid.size(); ++i)
      if (std::abs(grid[i] - t) < 1e-12) return grid[i + 1];
    ADD_FAILURE() << "the student was called off its grid at t = " << t;
    return grid.back();
  };
  const fewstep::Denoiser student = fewstep::Denoiser::direct(
      [&, schedule](const at::Tensor& x, double t) {
        const double n = next_time(t);
        const at::Tensor x_next = fewstep::sample(exact, x, "unipc", 200, fewstep::Spacing::LogSNR, {}, {}, t, n).x;
        const double at_ = schedule->alpha(t), st = schedule->sigma(t);
        const double an = schedule->alpha(n), sn = schedule->sigma(n);
        const at::Tensor x0 = (x_next - (sn / st) * x) / (an - sn * at_ / st);
        return fewstep::DenoiserOutput{x0, (x - at_ * x0) / st};
      },
      schedule, "DDIM-exact student");
  const fewstep::SolverChoice ideal = fewstep::choose_grid_solver(student, x_T, grid, reference);
  EXPECT_EQ(ideal.solver, "ddim");
  EXPECT_LT(ideal.trials.front().error.median, 1e-3);
  for (size_t i = 1; i < ideal.trials.size(); ++i)
    EXPECT_GT(ideal.trials[i].error.median, 10.0 * ideal.trials.front().error.median) << ideal.trials[i].solver;

  // The tolerance keeps the earlier (simpler) candidate when the others are not clearly better.
  EXPECT_EQ(fewstep::choose_grid_solver(exact, x_T, grid, reference, fewstep::grid_solver_candidates(), 1e6).solver,
            "ddim");
}

TEST(SolverChoice, BadCandidatesAndArgumentsAreErrorsNamingThem) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser exact = fewstep::Denoiser::exact(bent_mixture(), schedule);
  const std::vector<double> grid = fewstep::timesteps(*schedule, 3, "logsnr");
  const at::Tensor x_T = at::randn({8, 4}, generator(3));
  const auto message = [&](std::vector<std::string> candidates, double tolerance = 0.01,
                           at::Tensor reference = at::Tensor()) {
    return value_error_message([&] {
      fewstep::choose_grid_solver(exact, x_T, grid, reference.defined() ? reference : x_T, candidates, tolerance);
    });
  };
  EXPECT_NE(message({}).find("candidates must not be empty"), std::string::npos);
  EXPECT_NE(message({"ddim", "nonsense"}).find("'nonsense' is not a registered solver"), std::string::npos);
  EXPECT_NE(message({"euler_maruyama"}).find("'euler_maruyama' is stochastic"), std::string::npos);
  EXPECT_NE(message({"heun"}).find("'heun' makes 2 evaluations per step"), std::string::npos);
  EXPECT_NE(message({"ddim"}, -1.0).find("tolerance must be finite and >= 0, got -1"), std::string::npos);
  EXPECT_NE(message({"ddim"}, 0.01, at::zeros({8, 3})).find("reference must have x_T's shape"), std::string::npos);
  fewstep::StudentSolverCheck check;
  check.n = 0;
  EXPECT_NE(value_error_message([&] { check.validate(); }).find("n must be > 0, got 0"), std::string::npos);
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A student file: the winner is recorded as its sampler (the sidecar re-sealed, the .pt untouched),
// and sampling the file then reproduces the winning trial.
TEST(SolverChoice, StudentFileRecordsTheMeasuredWinner) {
  at::set_num_threads(1);
  const std::string dir = scratch_dir("distill", "solver_choice");
  auto schedule = std::make_shared<fewstep::VPLinear>();
  fewstep::MlpConfig c;
  c.dim = 3;
  c.hidden = 16;
  c.blocks = 1;
  c.time_frequencies = 8;
  c.time_embed_dim = 16;
  fewstep::ModelFileInfo info;
  info.schedule = schedule;
  info.prediction = Prediction::Eps;
  info.sample_shape = {3};
  info.network = fewstep::network_spec(c);
  const ScriptNet net = fewstep::make_mlp(c, 5);
  const std::string teacher_path = dir + "/teacher.pt", student_path = dir + "/student-4step.pt";
  fewstep::save_model_file(teacher_path, *net, info);
  info.timesteps = fewstep::timesteps(*schedule, 4, "time");
  info.solver = "ddim";
  fewstep::save_model_file(student_path, *net, info);  // the teacher's network on a coarse grid of its own
  const std::string pt_before = file_bytes(student_path);

  const fewstep::ModelFile teacher = fewstep::load_model_file(teacher_path);
  fewstep::StudentSolverCheck check;
  check.n = 64;
  check.reference_steps = 100;
  const fewstep::TeacherSolve reference =
      fewstep::student_check_reference(teacher.denoiser, {3}, info.timesteps.front(), info.timesteps.back(), check);
  const fewstep::SolverChoice choice = fewstep::choose_student_solver(student_path, reference, check);
  const fewstep::ModelFile student = fewstep::load_model_file(student_path);  // still sealed and matching
  EXPECT_EQ(student.solver, choice.solver);
  EXPECT_EQ(student.timesteps, info.timesteps);
  EXPECT_EQ(file_bytes(student_path), pt_before);
  const at::Tensor x = fewstep::sample(student.denoiser, reference.x_T(), *fewstep::solver(student.solver),
                                       student.timesteps).x;
  for (const auto& t : choice.trials)
    if (t.solver == choice.solver) {
      EXPECT_DOUBLE_EQ(fewstep::coupled_error(x, reference.x_end()).median, t.error.median);
    }

  // The overload that makes the reference itself measures the same.
  const fewstep::SolverChoice again = fewstep::choose_student_solver(student_path, teacher.denoiser, check, false);
  EXPECT_EQ(again.solver, choice.solver);
  for (size_t i = 0; i < again.trials.size(); ++i)
    EXPECT_DOUBLE_EQ(again.trials[i].error.median, choice.trials[i].error.median) << again.trials[i].solver;

  // A reference over another span, and a file without a grid, are refused naming them.
  const fewstep::TeacherSolve other = fewstep::student_check_reference(teacher.denoiser, {3}, 0.9,
                                                                       info.timesteps.back(), check);
  EXPECT_NE(value_error_message([&] { fewstep::choose_student_solver(student_path, other, check); })
                .find("the reference spans t = 0.9"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::choose_student_solver(teacher_path, reference, check); })
                .find("has no grid of its own"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::save_model_sampler(teacher_path, "unipc"); })
                .find("has no grid of its own"),
            std::string::npos);

  // A student sampled by a consistency model's re-noising sampler is not re-chosen (nor rewritten).
  const std::string consistency_path = dir + "/consistency-4step.pt";
  info.solver = "consistency";
  fewstep::save_model_file(consistency_path, *net, info);
  const std::string consistency_sidecar = file_bytes(dir + "/consistency-4step.json");
  EXPECT_NE(value_error_message([&] { fewstep::choose_student_solver(consistency_path, reference, check); })
                .find("the student's own solver: 'consistency' is stochastic"),
            std::string::npos);
  EXPECT_EQ(file_bytes(dir + "/consistency-4step.json"), consistency_sidecar);

  // A reference of another sample shape, and a teacher that cannot take the student's samples.
  fewstep::StudentSolverCheck small = check;
  small.n = 4;
  fewstep::TeacherSolve wide;  // x: [n, 2 kept points, 5]
  wide.x = at::randn({4, 2, 5}, at::kDouble);
  wide.times = {info.timesteps.front(), info.timesteps.back()};
  EXPECT_NE(value_error_message([&] { fewstep::choose_student_solver(student_path, wide, small); })
                .find("the reference's samples have shape [4, 5], the student's [4, 3]"),
            std::string::npos);
  fewstep::MlpConfig c5 = c;
  c5.dim = 5;
  fewstep::ModelFileInfo info5 = info;  // the teacher's file, for 5-D data
  info5.sample_shape = {5};
  info5.network = fewstep::network_spec(c5);
  info5.timesteps.clear();
  info5.solver.clear();
  fewstep::save_model_file(dir + "/teacher5.pt", *fewstep::make_mlp(c5, 6), info5);
  const fewstep::ModelFile other_teacher = fewstep::load_model_file(dir + "/teacher5.pt");
  const std::string message = value_error_message(
      [&] { fewstep::choose_student_solver(student_path, other_teacher.denoiser, small, false); });
  EXPECT_NE(message.find("the teacher failed on the student's samples of shape [3]"), std::string::npos) << message;
  EXPECT_EQ(message.find("Traceback"), std::string::npos) << message;
}

}  // namespace
