// Tests of the distillation trainers beyond progressive distillation's own (test_progressive.cpp):
// closed-form optimal students on single-Gaussian data (knowledge distillation and a one-round
// progressive distillation), guidance distillation, the shared Trainer shape
// (kinds of checkpoints, resume), network specs and weight copies.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "fewstep/data/mixture_data.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/sample/sample.h"
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

}  // namespace
