// Tests of progressive distillation (Salimans & Ho 2022, Algorithm 2): the two-step target, its
// definedness with an exact teacher, the round structure, learning, exact resume and the
// refusal of ε-students at 1-2 steps.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/student_init.h"
#include "fewstep/sample/reference.h"
#include "fewstep/sample/sample.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/progressive_target.h"
#include "fewstep/train/progressive_trainer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using fewstep::Prediction;
using fewstep::ProgressiveDistillationTrainer;
using fewstep::ProgressiveTrainerOptions;

std::string temp_dir(const std::string& name) { return fewstep::testing::scratch_dir("progressive", name); }

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

fewstep::MlpConfig tiny_mlp() {
  fewstep::MlpConfig c;
  c.hidden = 32;
  c.blocks = 1;
  c.time_frequencies = 16;
  c.time_embed_dim = 32;
  return c;
}

std::shared_ptr<fewstep::GaussianMixture> mixture() {
  static auto gmm = fewstep::GaussianMixture::random(2, 4, /*seed=*/11, /*diagonal=*/false, /*spread=*/1.0);
  return gmm;
}

// A float64 MLP teacher predicting ε, as a Denoiser.
fewstep::Denoiser mlp_teacher(const fewstep::SchedulePtr& schedule, uint64_t seed) {
  fewstep::ScriptNet net = fewstep::make_mlp(tiny_mlp(), seed);
  net->to(at::kDouble);
  net->eval();
  return fewstep::Denoiser(
      [net](const at::Tensor& x, const at::Tensor& t) {
        at::NoGradGuard no_grad;
        return net->forward({x, t}).toTensor();
      },
      schedule, Prediction::Eps);
}

// Every index 1..N, twice, in a shuffled order.
at::Tensor all_indices(int64_t steps) {
  at::Tensor idx = at::arange(1, steps + 1, at::kLong).repeat({2});
  return idx.index_select(0, at::randperm(idx.size(0), gen(3), at::kLong));
}

using fewstep::testing::value_error_message;

// ---------------------------------------------------------------------------------------------
// The target

// The defining property: one student DDIM step t → t'' with x̂_0 = x̃ lands on the teacher's z_{t''}
// after two DDIM steps, computed here independently (per sample, two calls of the `ddim` stepper).
// At the last step (σ_{t''} = 0) the student's step gives x̃ itself, which must be the teacher's x̂.
TEST(ProgressiveTarget, OneStudentStepEqualsTwoTeacherSteps) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser teacher = mlp_teacher(schedule, 21);
  const int64_t steps = 8;
  const double lo = schedule->t_min(), hi = schedule->t_max();
  const at::Tensor index = all_indices(steps);
  const int64_t n = index.size(0);
  const at::Tensor z = at::randn({n, 2}, gen(4), at::kDouble) * 1.5;
  const fewstep::ProgressiveTarget tgt = fewstep::progressive_target(teacher, z, index, steps, lo, hi);
  ASSERT_EQ(tgt.target.sizes(), z.sizes());

  const auto ddim = fewstep::solver("ddim");
  double worst = 0.0;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t i = index[b].item<int64_t>();
    const double t = fewstep::progressive_grid_time(i, steps, lo, hi);
    const double t_mid = fewstep::progressive_grid_time(i - 0.5, steps, lo, hi);
    const double t_end = fewstep::progressive_grid_time(i - 1, steps, lo, hi);
    EXPECT_DOUBLE_EQ(tgt.t[b].item<double>(), t);
    const at::Tensor zb = z.slice(0, b, b + 1);
    fewstep::ModelEvaluator model(teacher);
    fewstep::StepContext ctx;
    auto r1 = ddim->step(model, zb, t, t_mid, ddim->init(zb), ctx);
    auto r2 = ddim->step(model, r1.x, t_mid, t_end, r1.state, ctx);
    const at::Tensor xt = tgt.target.slice(0, b, b + 1);
    // Teacher rows were evaluated in a batch of their index group here one by one: round-off only.
    EXPECT_TRUE(at::allclose(tgt.z_mid.slice(0, b, b + 1), r1.x, 1e-10, 1e-12)) << "i = " << i;
    worst = std::max(worst, (i == 1 ? (xt - r2.x0) : (fewstep::ddim_update(*schedule, zb, xt, t, t_end) - r2.x))
                                .abs().max().item<double>());
    if (i == 1) {
      EXPECT_TRUE(at::allclose(xt, r2.x0, 1e-10, 1e-12)) << "last step: target must be the teacher's x̂";
    } else {
      const at::Tensor student = fewstep::ddim_update(*schedule, zb, xt, t, t_end);
      EXPECT_TRUE(at::allclose(student, r2.x, 1e-10, 1e-12))
          << "i = " << i << ": student " << student << " teacher " << r2.x;
    }
  }
  std::cerr << "[ info ] max |student one step - teacher two steps| = " << worst << "\n";
  EXPECT_DOUBLE_EQ(fewstep::progressive_grid_time(steps, steps, lo, hi), hi);
  EXPECT_DOUBLE_EQ(fewstep::progressive_grid_time(0, steps, lo, hi), lo);
}

TEST(ProgressiveTarget, FiniteEverywhereWithTheExactMixtureTeacher) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser exact = fewstep::Denoiser::exact(mixture(), schedule);
  for (int64_t steps : {1, 2, 64}) {
    const at::Tensor index = all_indices(steps);
    const int64_t n = index.size(0);
    const at::Tensor x0 = mixture()->sample(n, gen(5)).to(at::kDouble);
    const at::Tensor eps = at::randn({n, 2}, gen(6), at::kDouble);
    std::vector<double> a(n), s(n);
    for (int64_t b = 0; b < n; ++b) {
      const double t = fewstep::progressive_grid_time(index[b].item<int64_t>(), steps, schedule->t_min(),
                                                      schedule->t_max());
      a[b] = schedule->alpha(t), s[b] = schedule->sigma(t);
    }
    const at::Tensor z = x0 * at::tensor(a, at::kDouble).view({n, 1}) + eps * at::tensor(s, at::kDouble).view({n, 1});
    const auto tgt = fewstep::progressive_target(exact, z, index, steps, schedule->t_min(), schedule->t_max());
    EXPECT_TRUE(at::isfinite(tgt.target).all().item<bool>()) << "steps = " << steps;
    // x̃ is a data prediction: it stays on the scale of the data (means ~ N(0, 1) here).
    EXPECT_LT(tgt.target.abs().max().item<double>(), 50.0) << "steps = " << steps;
    // The defining property with the exact teacher too (batched over the grid's indices).
    for (int64_t b = 0; b < n; ++b) {
      const int64_t i = index[b].item<int64_t>();
      if (i == 1) continue;  // σ_{t''} = 0 there: checked with the MLP teacher
      const double t = tgt.t[b].item<double>();
      const double t_end = fewstep::progressive_grid_time(i - 1, steps, schedule->t_min(), schedule->t_max());
      const at::Tensor student =
          fewstep::ddim_update(*schedule, z.slice(0, b, b + 1), tgt.target.slice(0, b, b + 1), t, t_end);
      EXPECT_TRUE(at::allclose(student, tgt.z_end.slice(0, b, b + 1), 1e-10, 1e-12)) << "steps " << steps << ", i " << i;
    }
  }
}

// K substeps: the target makes one student DDIM step land on K teacher DDIM calls along the uniform
// subdivision (computed here call by call); K = 2 is the default exactly. As K grows the landing point
// tends to the teacher's exact ODE flow from t to t'' at DDIM's first order: doubling K halves the error.
TEST(ProgressiveTarget, SubstepsComposeKTeacherCallsAndConvergeAtFirstOrder) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser exact = fewstep::Denoiser::exact(mixture(), schedule);
  const int64_t steps = 4;
  const double lo = schedule->t_min(), hi = schedule->t_max();
  const at::Tensor index = at::tensor({2, 3, 4, 2, 3, 4}, at::kLong);  // i = 1 has no landing state
  const int64_t n = index.size(0);
  const at::Tensor z = at::randn({n, 2}, gen(8), at::kDouble);
  const auto two = fewstep::progressive_target(exact, z, index, steps, lo, hi);
  const auto two_explicit = fewstep::progressive_target(exact, z, index, steps, lo, hi, 2);
  EXPECT_TRUE(at::equal(two.target, two_explicit.target));

  const auto ddim = fewstep::solver("ddim");
  std::vector<double> errors;
  for (int64_t k : {4, 8, 16, 32}) {
    const auto tgt = fewstep::progressive_target(exact, z, index, steps, lo, hi, k);
    double err = 0.0;
    for (int64_t b = 0; b < n; ++b) {
      const int64_t i = index[b].item<int64_t>();
      const double t = fewstep::progressive_grid_time(i, steps, lo, hi);
      const double t_end = fewstep::progressive_grid_time(i - 1, steps, lo, hi);
      at::Tensor x = z.slice(0, b, b + 1), mid;
      fewstep::ModelEvaluator model(exact);
      fewstep::StepContext ctx;
      fewstep::SolverState state = ddim->init(x);
      for (int64_t j = 1; j <= k; ++j) {
        auto r = ddim->step(model, x, fewstep::progressive_grid_time(i - double(j - 1) / k, steps, lo, hi),
                            fewstep::progressive_grid_time(i - double(j) / k, steps, lo, hi), std::move(state), ctx);
        x = r.x;
        state = std::move(r.state);
        if (2 * j == k) mid = x;
      }
      EXPECT_TRUE(at::allclose(tgt.z_end.slice(0, b, b + 1), x, 1e-10, 1e-12)) << "K " << k << ", i " << i;
      EXPECT_TRUE(at::allclose(tgt.z_mid.slice(0, b, b + 1), mid, 1e-10, 1e-12)) << "K " << k << ", i " << i;
      const at::Tensor student = fewstep::ddim_update(*schedule, z.slice(0, b, b + 1), tgt.target.slice(0, b, b + 1),
                                                      t, t_end);
      EXPECT_TRUE(at::allclose(student, x, 1e-10, 1e-12)) << "K " << k << ", i " << i;
      fewstep::ReferenceOptions ro;
      ro.rtol = ro.atol = 1e-12;
      const at::Tensor flow = fewstep::reference_solve(exact, z.slice(0, b, b + 1), t, t_end, ro).x;
      err = std::max(err, (tgt.z_end.slice(0, b, b + 1) - flow).abs().max().item<double>());
    }
    errors.push_back(err);
  }
  for (size_t j = 1; j < errors.size(); ++j) {
    const double ratio = errors[j - 1] / errors[j];
    std::cerr << "[ info ] K " << (4 << (j - 1)) << " -> " << (4 << j) << ": error " << errors[j - 1] << " -> "
              << errors[j] << " (ratio " << ratio << ")\n";
    EXPECT_GT(ratio, 1.7) << "first order: doubling K should about halve the error";
    EXPECT_LT(ratio, 2.4);
  }
  EXPECT_NE(value_error_message([&] { fewstep::progressive_target(exact, z, index, steps, lo, hi, 3); })
                .find("substeps must be an even number"),
            std::string::npos);
}

TEST(ProgressiveTarget, BadIndicesAreNamed) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const fewstep::Denoiser exact = fewstep::Denoiser::exact(mixture(), schedule);
  const at::Tensor z = at::zeros({2, 2}, at::kDouble);
  const std::string msg = value_error_message([&] {
    fewstep::progressive_target(exact, z, at::tensor({1, 5}, at::kLong), 4, schedule->t_min(), schedule->t_max());
  });
  EXPECT_NE(msg.find("index[1] = 5"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// The trainer

ProgressiveTrainerOptions quick_options(int64_t initial, int64_t final_steps, int64_t per_round) {
  ProgressiveTrainerOptions o;
  o.initial_steps = initial;
  o.final_steps = final_steps;
  o.iterations_per_round = per_round;
  o.teacher_prediction = Prediction::X0;  // an untrained x0-teacher gives bounded targets
  o.student_prediction = Prediction::V;
  o.optimizer.schedule = {2e-3, 0, 0, 0.0};
  o.ema_decay = 0.99;
  o.seed = 123;
  return o;
}

std::unique_ptr<ProgressiveDistillationTrainer> make_trainer(const ProgressiveTrainerOptions& o,
                                                             uint64_t teacher_seed = 5) {
  return std::make_unique<ProgressiveDistillationTrainer>(
      fewstep::make_mlp(tiny_mlp(), teacher_seed), std::make_shared<fewstep::VPLinear>(),
      std::make_shared<fewstep::MixtureData>(mixture(), 64, uint64_t{9}), o);
}

bool same_weights(const torch::jit::Module& a, const torch::jit::Module& b) {
  const auto pa = a.parameters(true), pb = b.parameters(true);
  auto ib = pb.begin();
  for (auto ia = pa.begin(); ia != pa.end(); ++ia, ++ib) {
    if (!at::equal(*ia, *ib)) return false;
  }
  return true;
}

size_t optimizer_state_tensors(const fewstep::Optimizer& opt) {
  fewstep::Checkpoint c;
  opt.save(c, "opt");
  return c.tensor_keys("opt/").size();
}

TEST(ProgressiveTrainer, RoundsHalveStepsReplaceTheTeacherAndResetTheOptimiser) {
  at::set_num_threads(1);
  fewstep::ScriptNet given = fewstep::make_mlp(tiny_mlp(), 5);
  const fewstep::ScriptNet given_copy = std::make_shared<torch::jit::Module>(given->deepcopy());
  ProgressiveDistillationTrainer tr(given, std::make_shared<fewstep::VPLinear>(),
                                    std::make_shared<fewstep::MixtureData>(mixture(), 64, uint64_t{9}),
                                    quick_options(8, 2, 5));
  EXPECT_EQ(tr.num_rounds(), 3);
  EXPECT_EQ(tr.current_steps(), 8);
  EXPECT_TRUE(same_weights(*tr.student(), *tr.teacher()));  // student initialised from the teacher
  // ... as a deep copy: no storage shared with the teacher.
  const auto first_param = [](const torch::jit::Module& m) { return (*m.parameters(true).begin()).data_ptr(); };
  EXPECT_NE(first_param(*tr.student()), first_param(*tr.teacher()));
  EXPECT_NE(first_param(*tr.student()), first_param(*given));
  EXPECT_NE(first_param(*tr.teacher()), first_param(*given));
  for (int64_t k = 1; k <= 2; ++k) {
    for (int i = 0; i < 4; ++i) tr.step();
    EXPECT_EQ(tr.round(), k - 1);
    EXPECT_FALSE(same_weights(*tr.student(), *tr.teacher()));
    EXPECT_GT(optimizer_state_tensors(tr.optimizer()), 0u);
    tr.step();  // the round's last iteration
    EXPECT_EQ(tr.round(), k);
    EXPECT_EQ(tr.current_steps(), 8 >> k);
    EXPECT_TRUE(same_weights(*tr.student(), *tr.teacher())) << "round " << k;
    EXPECT_TRUE(same_weights(*tr.student(), *tr.ema_student())) << "round " << k;
    EXPECT_EQ(optimizer_state_tensors(tr.optimizer()), 0u) << "round " << k;
    // The new teacher is the student's function: read with the student's prediction type (v), its
    // x̂_0 equals the student's.
    const at::Tensor x = at::randn({8, 2}, gen(8));
    const double t = 0.6;
    at::Tensor v;
    {
      at::NoGradGuard no_grad;
      v = tr.student()->forward({x, at::full({8}, t)}).toTensor();
    }
    const auto mine = fewstep::convert_prediction(x, v, Prediction::V, *tr.teacher_denoiser().schedule(), t);
    EXPECT_TRUE(at::allclose(tr.teacher_denoiser()(x, t).x0, mine.x0, 1e-5, 1e-6)) << "round " << k;
  }
  for (int i = 0; i < 5; ++i) tr.step();
  EXPECT_EQ(tr.round(), 2);
  EXPECT_EQ(tr.current_steps(), 2);
  EXPECT_TRUE(tr.finished());
  const std::string msg = value_error_message([&] { tr.step(); });
  EXPECT_NE(msg.find("rounds"), std::string::npos) << msg;
  EXPECT_TRUE(same_weights(*given, *given_copy)) << "the given teacher module must not be modified";
}

TEST(ProgressiveTrainer, LossDecreasesOnAMixture) {
  at::set_num_threads(1);
  auto tr = make_trainer(quick_options(16, 16, 300));
  const fewstep::TrainSummary s = tr->train(300);
  ASSERT_EQ(s.losses.size(), 300u);
  const double first = std::accumulate(s.losses.begin(), s.losses.begin() + 50, 0.0) / 50;
  const double last = std::accumulate(s.losses.end() - 50, s.losses.end(), 0.0) / 50;
  // The v-student starts from x0-teacher weights read as v (a large mismatch); matching the teacher's
  // two DDIM steps is learnable whatever the teacher's quality.
  EXPECT_LT(last, 0.5 * first) << "first 50: " << first << ", last 50: " << last;
  std::cerr << "[ info ] progressive loss: first 50 steps " << first << ", last 50 " << last << ", "
            << 300 / s.seconds << " it/s\n";
}

TEST(ProgressiveTrainer, ExactResume) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("resume");
  const auto o = quick_options(8, 2, 4);
  const int64_t total = 11;
  auto full = make_trainer(o);
  full->train(total);
  for (int64_t k : {4, 6}) {  // at a round boundary (fresh optimiser) and inside a round
    auto first = make_trainer(o);
    first->train(k);
    const std::string path = dir + "/ckpt_" + std::to_string(k) + ".pt";
    first->save_checkpoint(path);
    // Another teacher: everything must come from the checkpoint.
    auto resumed = make_trainer(o, /*teacher_seed=*/77);
    EXPECT_FALSE(resumed->resume(dir + "/missing.pt"));
    ASSERT_TRUE(resumed->resume(path));
    EXPECT_EQ(resumed->step_count(), k);
    EXPECT_EQ(resumed->round(), first->round());
    EXPECT_EQ(resumed->current_steps(), first->current_steps());
    resumed->train(total - k);
    EXPECT_EQ(resumed->round(), full->round());
    EXPECT_TRUE(same_weights(*full->student(), *resumed->student())) << "k = " << k;
    EXPECT_TRUE(same_weights(*full->teacher(), *resumed->teacher())) << "k = " << k;
    EXPECT_TRUE(same_weights(*full->ema_student(), *resumed->ema_student())) << "k = " << k;
  }
  // A checkpoint from other settings is refused, naming the setting and both values.
  auto other = make_trainer(quick_options(16, 2, 4));
  std::string msg = value_error_message([&] { other->load_checkpoint(dir + "/ckpt_4.pt"); });
  EXPECT_NE(msg.find("initial_steps is 16 here, 8 in the checkpoint"), std::string::npos) << msg;
  // Another time range (the grid of every round) used to continue silently: it is refused too.
  auto range = quick_options(8, 2, 4);
  range.t_min = 0.01;
  auto shifted = make_trainer(range);
  msg = value_error_message([&] { shifted->load_checkpoint(dir + "/ckpt_4.pt"); });
  EXPECT_NE(msg.find("t_min is 0.01 here, 0.001 in the checkpoint"), std::string::npos) << msg;
  range = quick_options(8, 2, 4);
  range.t_max = 0.9;
  shifted = make_trainer(range);
  msg = value_error_message([&] { shifted->load_checkpoint(dir + "/ckpt_4.pt"); });
  EXPECT_NE(msg.find("t_max is 0.9 here, 1.0 in the checkpoint"), std::string::npos) << msg;
  EXPECT_EQ(shifted->step_count(), 0) << "a refused checkpoint must leave the trainer as it was";
  fs::remove_all(dir);
}

// A given student may have another architecture than the round-0 teacher (here the teacher wrapped
// in its output conversion, as an exported student is): the round change makes the next teacher a
// copy of the student's module, and a checkpoint inside a later round resumes bit-exactly.
TEST(ProgressiveTrainer, GivenStudentOfAnotherArchitectureCrossesRoundsAndResumes) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("given_student");
  const auto o = quick_options(4, 1, 3);
  auto schedule = std::make_shared<fewstep::VPLinear>();
  const auto make = [&] {
    fewstep::ScriptNet teacher = fewstep::make_mlp(tiny_mlp(), 5);
    fewstep::ScriptNet student = fewstep::student_from_teacher(*teacher, *schedule, {Prediction::X0},
                                                               {Prediction::V, std::nullopt});
    return std::make_unique<ProgressiveDistillationTrainer>(
        teacher, schedule, std::make_shared<fewstep::MixtureData>(mixture(), 64, uint64_t{9}), o, student);
  };
  auto full = make();
  full->train(3);
  ASSERT_EQ(full->round(), 1);
  EXPECT_TRUE(same_weights(*full->student(), *full->teacher()));
  full->train(2);
  auto first = make();
  first->train(5);
  first->save_checkpoint(dir + "/ckpt.pt");
  full->train(4);
  EXPECT_TRUE(full->finished());
  auto resumed = make();
  ASSERT_TRUE(resumed->resume(dir + "/ckpt.pt"));
  resumed->train(4);
  EXPECT_TRUE(same_weights(*full->student(), *resumed->student()));
  EXPECT_TRUE(same_weights(*full->teacher(), *resumed->teacher()));
  EXPECT_TRUE(same_weights(*full->ema_student(), *resumed->ema_student()));
  fs::remove_all(dir);
}

TEST(ProgressiveTrainer, EpsStudentRefusedAtTwoOrFewerSteps) {
  for (int64_t final_steps : {1, 2}) {
    auto o = quick_options(8, final_steps, 4);
    o.student_prediction = Prediction::Eps;
    const std::string msg = value_error_message([&] { make_trainer(o); });
    EXPECT_NE(msg.find("student_prediction"), std::string::npos) << msg;
  }
  auto o = quick_options(8, 4, 4);
  o.student_prediction = Prediction::Eps;
  EXPECT_NO_THROW(make_trainer(o));
  auto bad = quick_options(8, 3, 4);
  const std::string msg = value_error_message([&] { make_trainer(bad); });
  EXPECT_NE(msg.find("power of 2"), std::string::npos) << msg;
}

// first_round_substeps: validated by name, stored in the options (absent from the checkpoint's
// options at its default, so older checkpoints resume), and changing round 0's target only: from
// the same draws a K = 8 trainer's round-0 loss differs from the K = 2 one.
TEST(ProgressiveTrainer, FirstRoundSubstepsChangeRoundZerosTarget) {
  at::set_num_threads(1);
  auto bad = quick_options(4, 2, 3);
  bad.first_round_substeps = 3;
  std::string msg = value_error_message([&] { make_trainer(bad); });
  EXPECT_NE(msg.find("first_round_substeps must be an even number"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 3"), std::string::npos) << msg;

  auto o2 = quick_options(4, 2, 3), o8 = o2;
  o8.first_round_substeps = 8;
  ProgressiveTrainerOptions back;
  fewstep::options_from_json(fewstep::options_to_json(o8), back);
  EXPECT_EQ(back.first_round_substeps, 8);
  auto a = make_trainer(o2), b = make_trainer(o8);
  EXPECT_EQ(a->options_json().find("first_round_substeps"), std::string::npos);
  EXPECT_NE(b->options_json().find("\"first_round_substeps\":8"), std::string::npos) << b->options_json();
  const double la = a->step().loss, lb = b->step().loss;
  EXPECT_GT(std::abs(la - lb), 1e-6 * std::abs(la)) << "K = 8 must change round 0's target";
  for (int i = 0; i < 5; ++i) b->step();  // through round 1 (teacher = the round-0 student, 2 calls)
  EXPECT_TRUE(b->finished());
}

// ---------------------------------------------------------------------------------------------
// Students start at the teacher in function space (models/student_init.h)

fewstep::Denoiser net_denoiser(const fewstep::ScriptNet& net, const fewstep::SchedulePtr& schedule, Prediction p) {
  return fewstep::Denoiser(
      [net](const at::Tensor& x, const at::Tensor& t) {
        at::NoGradGuard no_grad;
        return net->forward({x, t}).toTensor();
      },
      schedule, p);
}

std::vector<double> student_grid(int64_t n, const fewstep::NoiseSchedule& s) {
  std::vector<double> grid;
  for (int64_t i = n; i >= 0; --i)
    grid.push_back(fewstep::progressive_grid_time(static_cast<double>(i), n, s.t_min(), s.t_max()));
  return grid;
}

// The untrained N-step progressive student (iteration 0, its EMA), sampled with DDIM on its own grid,
// is the teacher's N-step DDIM on that grid, to float64 round-off (before: an ε teacher read as a
// v student sampled noise).
TEST(StudentInit, UntrainedProgressiveStudentIsTheTeachersDdim) {
  at::set_num_threads(1);
  const fewstep::SchedulePtr schedule = std::make_shared<fewstep::VPLinear>();
  for (Prediction student_p : {Prediction::V, Prediction::X0}) {
    fewstep::ScriptNet teacher = fewstep::make_mlp(tiny_mlp(), 5);
    teacher->to(at::kDouble);
    auto o = quick_options(4, 2, 5);
    o.teacher_prediction = Prediction::Eps;
    o.student_prediction = student_p;
    ProgressiveDistillationTrainer tr(teacher, schedule,
                                      std::make_shared<fewstep::MixtureData>(mixture(), 64, uint64_t{9}), o);
    const fewstep::Denoiser student = net_denoiser(tr.ema_student(), schedule, student_p);
    const fewstep::Denoiser teach = net_denoiser(teacher, schedule, Prediction::Eps);
    const at::Tensor x_T = at::randn({16, 2}, gen(21), at::kDouble);
    const auto grid = student_grid(4, *schedule);
    const fewstep::DdimStepper ddim;
    const at::Tensor a = fewstep::sample(student, x_T, ddim, grid).x;
    const at::Tensor b = fewstep::sample(teach, x_T, ddim, grid).x;
    const double err = (a - b).abs().max().item<double>();
    EXPECT_LT(err, 1e-10) << to_string(student_p);
    // A copy of the weights read as the student's type is another function entirely.
    const at::Tensor c = fewstep::sample(net_denoiser(teacher, schedule, student_p), x_T, ddim, grid).x;
    EXPECT_GT((c - b).abs().max().item<double>(), 1e-2);
  }
}

// Where a student starts: auto wraps x0 and v teachers exactly (a conversion of slope <= 1) and copies an
// eps or score teacher's weights (its x0 = (x - sigma eps)/alpha has slope sigma/alpha, ~150 at the top of
// VP-linear: docs/distillation.md, "Where a student starts").
TEST(StudentStart, AutoWrapsOnlyWellConditionedTeachers) {
  using fewstep::StudentStart;
  for (const char* name : {"auto", "teacher", "weights"})
    EXPECT_EQ(fewstep::to_string(fewstep::parse_student_start(name)), name);
  const std::string msg = value_error_message([] { fewstep::parse_student_start("exact"); });
  EXPECT_NE(msg.find("auto, teacher, weights, got 'exact'"), std::string::npos) << msg;
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Auto, Prediction::Eps), StudentStart::Weights);
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Auto, Prediction::Score), StudentStart::Weights);
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Auto, Prediction::X0), StudentStart::Teacher);
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Auto, Prediction::V), StudentStart::Teacher);
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Teacher, Prediction::Eps), StudentStart::Teacher);
  EXPECT_EQ(fewstep::resolve_student_start(StudentStart::Weights, Prediction::V), StudentStart::Weights);

  const fewstep::SchedulePtr schedule = std::make_shared<fewstep::VPLinear>();
  fewstep::ScriptNet teacher = fewstep::make_mlp(tiny_mlp(), 5);
  teacher->to(at::kDouble);
  const fewstep::StudentTarget v{Prediction::V, std::nullopt};
  // Weights: the teacher's own network, parameters and output, as an independent trainable copy.
  const fewstep::ScriptNet copy = fewstep::start_student(*teacher, *schedule, {Prediction::Eps}, v, StudentStart::Auto);
  const at::Tensor x = at::randn({6, 2}, gen(3), at::kDouble);
  const at::Tensor t = at::full({6}, 0.9, at::kDouble);
  const auto out = [&](const fewstep::ScriptNet& net) { return net->forward({x, t}).toTensor(); };
  EXPECT_TRUE(at::equal(out(copy), out(teacher)));
  for (const at::Tensor& p : copy->parameters(true)) EXPECT_TRUE(p.requires_grad());
  {
    at::NoGradGuard no_grad;
    for (const at::Tensor& p : copy->parameters(true)) at::Tensor(p).add_(1.0);
  }
  EXPECT_FALSE(at::equal(out(copy), out(teacher)));  // the teacher is untouched
  // Teacher: the exact conversion, whose x0 moves by sigma/alpha per unit of the eps network's output.
  const fewstep::ScriptNet wrapped =
      fewstep::start_student(*teacher, *schedule, {Prediction::Eps}, v, StudentStart::Teacher);
  const double tt = schedule->t_max();
  const auto x0_of = [&](const fewstep::ScriptNet& net, Prediction p) {
    return net_denoiser(net, schedule, p)(x, tt).x0;
  };
  EXPECT_LT((x0_of(wrapped, Prediction::V) - x0_of(teacher, Prediction::Eps)).abs().max().item<double>(),
            1e-9 * schedule->sigma(tt) / schedule->alpha(tt));
  EXPECT_GT(schedule->sigma(tt) / schedule->alpha(tt), 100.0);
}

// The wrapper on every schedule family with a TorchScript form and every native target: the
// student's (x̂0, ε̂) equal the teacher's at random times, in float64.
TEST(StudentInit, ConversionIsExactOnEverySchedule) {
  const std::vector<fewstep::SchedulePtr> schedules = {
      std::make_shared<fewstep::VPLinear>(), std::make_shared<fewstep::VPCosine>(), std::make_shared<fewstep::VE>(),
      std::make_shared<fewstep::FlowMatching>()};
  fewstep::ScriptNet teacher = fewstep::make_mlp(tiny_mlp(), 7);
  teacher->to(at::kDouble);
  const at::Tensor x = at::randn({6, 2}, gen(3), at::kDouble);
  for (const auto& s : schedules) {
    for (Prediction from : {Prediction::Eps, Prediction::X0, Prediction::V}) {
      for (Prediction to : {Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score}) {
        const fewstep::ScriptNet student = fewstep::student_from_teacher(*teacher, *s, {from}, {to, std::nullopt});
        for (double u : {0.05, 0.4, 0.9}) {
          const double t = s->t_min() + u * (s->t_max() - s->t_min());
          const auto want = net_denoiser(teacher, s, from)(x, t);
          const auto got = net_denoiser(student, s, to)(x, t);
          const double scale = 1.0 + want.x0.abs().max().item<double>();
          EXPECT_LT((got.x0 - want.x0).abs().max().item<double>(), 1e-11 * scale / s->alpha(t))
              << s->name() << " " << to_string(from) << "->" << to_string(to) << " t=" << t;
        }
      }
    }
  }
  // No TorchScript form: a clear error naming what is missing.
  const std::string msg = value_error_message([&] {
    fewstep::student_from_teacher(*teacher, *fewstep::VPDiscrete::ddpm_linear(), {Prediction::Eps},
                                  {Prediction::V, std::nullopt});
  });
  EXPECT_NE(msg.find("VPDiscrete"), std::string::npos) << msg;
}

// The consistency student at iteration 0: f(x, t) = the teacher's x̂0(x, t) for t > t_min and
// f(x, t_min) = x (the boundary condition); so one-step consistency sampling from x_T is the teacher's
// one DDIM step from t_max to sigma = 0, x̂0(x_T, t_max).
TEST(StudentInit, UntrainedConsistencyStudentIsTheTeachersDenoiser) {
  at::NoGradGuard no_grad;
  for (const fewstep::SchedulePtr& schedule :
       std::vector<fewstep::SchedulePtr>{std::make_shared<fewstep::VPLinear>(), std::make_shared<fewstep::VE>()}) {
    fewstep::ScriptNet teacher = fewstep::make_mlp(tiny_mlp(), 9);
    teacher->to(at::kDouble);
    fewstep::ConsistencyParameterization p;
    const fewstep::ScriptNet student =
        fewstep::student_from_teacher(*teacher, *schedule, {Prediction::Eps}, {Prediction::X0, p});
    const at::Tensor x = at::randn({6, 2}, gen(4), at::kDouble);
    const fewstep::Denoiser teach = net_denoiser(teacher, schedule, Prediction::Eps);
    for (double u : {0.01, 0.3, 1.0}) {
      const double t = schedule->t_min() + u * (schedule->t_max() - schedule->t_min());
      const at::Tensor f = fewstep::consistency_function(*student, *schedule, p, x, at::full({6}, t, at::kDouble));
      const at::Tensor want = teach(x, t).x0;
      EXPECT_LT((f - want).abs().max().item<double>(), 1e-9 * (1.0 + want.abs().max().item<double>()))
          << schedule->name() << " t=" << t;
    }
    const at::Tensor at_min =
        fewstep::consistency_function(*student, *schedule, p, x, at::full({6}, schedule->t_min(), at::kDouble));
    EXPECT_TRUE(at::equal(at_min, x));
    // One step from t_max with the consistency solver = the teacher's DDIM from t_max to sigma = 0.
    const fewstep::Denoiser cm = fewstep::consistency_denoiser(student, schedule, p);
    const at::Tensor x_T = at::randn({6, 2}, gen(5), at::kDouble) * schedule->sigma(schedule->t_max());
    const fewstep::DdimStepper ddim;
    fewstep::SampleOptions so;
    so.generator = gen(6);
    const at::Tensor one =
        fewstep::sample(cm, x_T, *fewstep::solver("consistency"), {schedule->t_max(), schedule->t_min()}, so).x;
    const at::Tensor ref = fewstep::sample(teach, x_T, ddim, {schedule->t_max(), 0.0}).x;
    EXPECT_LT((one - ref).abs().max().item<double>(), 1e-9 * (1.0 + ref.abs().max().item<double>()))
        << schedule->name();
  }
}

}  // namespace
