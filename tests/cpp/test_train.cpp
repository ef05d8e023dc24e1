// Tests of the training layer: learning-rate schedule, loss weightings, EMA, atomic writes,
// checkpoints, and exact resume of the denoiser trainer (in-process and after SIGKILL).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "fewstep/core/atomic_file.h"
#include "fewstep/core/interrupt.h"
#include "fewstep/core/check.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/unet.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/denoiser_trainer.h"
#include "fewstep/train/dsm_loss.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/lr_schedule.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using fewstep::DenoiserTrainer;
using fewstep::DenoiserTrainerOptions;
using fewstep::LossWeighting;
using fewstep::Prediction;

std::string temp_dir(const std::string& name) {
  const char* env = std::getenv("FEWSTEP_TEST_TMP");
  fs::path dir = env && *env ? env : "/tmp";
  dir /= "fewstep_test_train_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

template <class F>
std::string value_error_message(F f) {
  try {
    f();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "no c10::ValueError thrown";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedule

TEST(LrSchedule, WarmupThenCosine) {
  fewstep::LrSchedule s{1e-3, 10, 110, 1e-5};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);  // (0 + 1)/10 of the peak
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);                          // cosine starts at the peak
  EXPECT_NEAR(s.at(60), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-15);  // half way: cos(π/2) = 0
  EXPECT_NEAR(s.at(35), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-5);
  EXPECT_DOUBLE_EQ(s.at(500), 1e-5);  // stays at the floor
  fewstep::LrSchedule constant{3e-4, 0, 0, 0.0};
  EXPECT_DOUBLE_EQ(constant.at(0), 3e-4);
  EXPECT_DOUBLE_EQ(constant.at(12345), 3e-4);
  fewstep::LrSchedule bad{1e-3, 0, 0, 2e-3};
  EXPECT_NE(value_error_message([&] { bad.validate(); }).find("min_lr"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Loss weightings

TEST(DsmLoss, ErrorScalesAndWeightsMatchTheirFormulas) {
  const fewstep::VPLinear vp;
  const fewstep::VE ve;
  for (double t : {0.01, 0.2, 0.5, 0.9}) {
    const double a = vp.alpha(t), s = vp.sigma(t), snr = a * a / (s * s);
    EXPECT_NEAR(fewstep::native_error_scale(Prediction::Eps, vp, t), snr, 1e-9 * snr) << t;
    EXPECT_NEAR(fewstep::native_error_scale(Prediction::X0, vp, t), 1.0, 1e-12) << t;
    EXPECT_NEAR(fewstep::native_error_scale(Prediction::V, vp, t), snr + 1.0, 1e-9 * (snr + 1)) << t;
    EXPECT_NEAR(fewstep::native_error_scale(Prediction::Score, vp, t), snr / (s * s), 1e-9 * snr / (s * s)) << t;
    EXPECT_NEAR(fewstep::x0_loss_weight(LossWeighting::TruncatedSNR, Prediction::Eps, vp, t), std::max(snr, 1.0),
                1e-12 * std::max(snr, 1.0));
    EXPECT_NEAR(fewstep::x0_loss_weight(LossWeighting::MinSNR, Prediction::V, vp, t, 5.0), std::min(snr, 5.0),
                1e-12 * snr);
    EXPECT_NEAR(fewstep::x0_loss_weight(LossWeighting::Uniform, Prediction::Eps, vp, t), snr, 1e-9 * snr);
  }
  // VE (α = 1, σ = t): v = ε − t x_0, so c = (1 + t²)²/t².
  for (double t : {0.1, 1.0, 10.0}) {
    EXPECT_NEAR(fewstep::native_error_scale(Prediction::V, ve, t), std::pow(1 + t * t, 2) / (t * t),
                1e-9 * (1 + t * t));
  }
  EXPECT_EQ(fewstep::parse_loss_weighting("min_snr"), LossWeighting::MinSNR);
  EXPECT_NE(value_error_message([] { fewstep::parse_loss_weighting("snr"); }).find("'snr'"), std::string::npos);
}

// The weighted native loss equals w(t)·mean((x̂_0 − x_0)²), x̂_0 from the Denoiser conversion.
TEST(DsmLoss, LossIsTheWeightedX0Error) {
  const auto vp = std::make_shared<fewstep::VPLinear>();
  const auto ve = std::make_shared<fewstep::VE>();
  const int64_t n = 6;
  const at::Tensor x0 = at::randn({n, 3}, gen(1), at::kDouble);
  const at::Tensor eps = at::randn({n, 3}, gen(2), at::kDouble);
  const at::Tensor output = at::randn({n, 3}, gen(3), at::kDouble);  // any network output
  for (const fewstep::SchedulePtr& sched : {fewstep::SchedulePtr(vp), fewstep::SchedulePtr(ve)}) {
    const at::Tensor t = sched->t_min() + (sched->t_max() - sched->t_min()) * at::rand({n}, gen(4), at::kDouble);
    for (Prediction p : {Prediction::Eps, Prediction::X0, Prediction::V}) {
      for (LossWeighting w : {LossWeighting::Uniform, LossWeighting::TruncatedSNR, LossWeighting::MinSNR}) {
        fewstep::DsmOptions o;
        o.prediction = p;
        o.weighting = w;
        const fewstep::DsmInputs in = fewstep::dsm_inputs(x0, eps, t, *sched, o);
        double expected = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const double ti = t[i].item<double>();
          EXPECT_TRUE(at::allclose(in.x_t[i], sched->alpha(ti) * x0[i] + sched->sigma(ti) * eps[i], 1e-12, 1e-12));
          const at::Tensor x0_hat =
              fewstep::convert_prediction(in.x_t[i].unsqueeze(0), output[i].unsqueeze(0), p, *sched, ti).x0;
          expected += fewstep::x0_loss_weight(w, p, *sched, ti) * (x0_hat - x0[i]).pow(2).mean().item<double>();
        }
        expected /= n;
        const double got = fewstep::dsm_loss(output, in).item<double>();
        EXPECT_NEAR(got, expected, 1e-9 * std::abs(expected))
            << sched->name() << " " << fewstep::to_string(p) << " " << fewstep::to_string(w);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// EMA

TEST(Ema, MatchesAHandUpdate) {
  auto net = fewstep::make_mlp(fewstep::MlpConfig{}, 0);
  fewstep::Ema ema(*net, 0.9);
  std::vector<at::Tensor> before;
  for (const at::Tensor& p : net->parameters()) before.push_back(p.detach().clone());
  {
    at::NoGradGuard g;
    int k = 0;
    for (const at::Tensor& p : net->parameters()) at::Tensor(p).add_(at::randn(p.sizes(), gen(++k)));
  }
  ema.update(*net);
  std::vector<at::Tensor> averaged;
  for (const at::Tensor& e : ema.module()->parameters()) averaged.push_back(e);
  size_t i = 0;
  for (const at::Tensor& p : net->parameters()) {
    const at::Tensor& e = averaged[i];
    // One fused multiply-add per element in float32: a few ulp.
    EXPECT_TRUE(at::allclose(e, 0.9 * before[i] + 0.1 * p.detach(), 1e-6, 1e-6)) << i;
    EXPECT_FALSE(e.requires_grad());
    ++i;
  }
  EXPECT_NE(value_error_message([&] { fewstep::Ema(*net, 1.5); }).find("decay"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Atomic writes and checkpoints

size_t temp_files(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

TEST(AtomicWrite, FailedWriterLeavesTheOldFileAndNoTemporary) {
  const std::string dir = temp_dir("atomic");
  const std::string path = dir + "/file.bin";
  const std::string old_text = "complete old content";
  fewstep::atomic_write_bytes(path, old_text.data(), old_text.size());
  EXPECT_THROW(fewstep::atomic_write(path,
                                     [](const std::string& temp) {
                                       std::ofstream(temp) << "half of the new";
                                       throw std::runtime_error("interrupted");
                                     }),
               std::runtime_error);
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), old_text);
  EXPECT_EQ(temp_files(dir), 0u);
  // The temporary file is a hidden sibling in the same directory (same file system for rename).
  EXPECT_EQ(fewstep::atomic_temp_prefix(path), dir + "/.file.bin.tmp.");
}

TEST(Checkpoint, RoundTripAndErrors) {
  const std::string dir = temp_dir("ckpt");
  fewstep::Checkpoint c;
  c.set_tensor("a/x", at::arange(5, at::kFloat));
  c.set_int("step", 42);
  c.set_string("name", "fewstep");
  c.save(dir + "/c.pt");
  const fewstep::Checkpoint d = fewstep::Checkpoint::load(dir + "/c.pt");
  EXPECT_TRUE(at::equal(d.tensor("a/x"), at::arange(5, at::kFloat)));
  EXPECT_EQ(d.integer("step"), 42);
  EXPECT_EQ(d.string("name"), "fewstep");
  EXPECT_NE(value_error_message([&] { d.tensor("missing"); }).find("'missing'"), std::string::npos);
  EXPECT_NE(value_error_message([&] { fewstep::Checkpoint::load(dir + "/none.pt"); }).find("none.pt"),
            std::string::npos);
  std::ofstream(dir + "/junk.pt") << "not a checkpoint";
  EXPECT_NE(value_error_message([&] { fewstep::Checkpoint::load(dir + "/junk.pt"); }).find("junk.pt"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Trainer

std::shared_ptr<const fewstep::GaussianMixture> mixture() {
  static auto gmm = fewstep::GaussianMixture::random(2, 4, /*seed=*/11, /*diagonal=*/false, /*spread=*/1.0);
  return gmm;
}

fewstep::MlpConfig small_mlp() {
  fewstep::MlpConfig c;
  c.hidden = 64;
  c.blocks = 2;
  c.time_embed_dim = 64;
  return c;
}

DenoiserTrainerOptions quick_options() {
  DenoiserTrainerOptions o;
  o.optimizer.schedule = {2e-3, 20, 400, 1e-4};
  o.optimizer.weight_decay = 1e-4;
  o.ema_decay = 0.99;
  o.seed = 123;
  return o;
}

fewstep::TrainLoopOptions checkpointing(const std::string& path, int64_t every) {
  fewstep::TrainLoopOptions loop;
  loop.checkpoint_path = path;
  loop.checkpoint_every = every;
  loop.progress = false;
  return loop;
}

std::unique_ptr<DenoiserTrainer> mixture_trainer(const DenoiserTrainerOptions& o, uint64_t net_seed = 5) {
  return std::make_unique<DenoiserTrainer>(fewstep::make_mlp(small_mlp(), net_seed),
                                           std::make_shared<fewstep::VPLinear>(),
                                           std::make_shared<fewstep::MixtureData>(mixture(), 128, uint64_t{9}), o);
}

void expect_same_weights(const DenoiserTrainer& a, const DenoiserTrainer& b) {
  for (const auto& [x, y] : {std::make_pair(a.net(), b.net()), std::make_pair(a.ema_net(), b.ema_net())}) {
    const auto px = x->named_parameters(), py = y->named_parameters();
    auto iy = py.begin();
    for (auto ix = px.begin(); ix != px.end(); ++ix, ++iy) {
      EXPECT_TRUE(at::equal((*ix).value, (*iy).value)) << (*ix).name;
    }
  }
}

TEST(DenoiserTrainer, LossDecreasesOnAMixture) {
  at::set_num_threads(1);
  auto trainer = mixture_trainer(quick_options());
  const fewstep::TrainSummary s = trainer->train(300);
  ASSERT_EQ(s.losses.size(), 300u);
  const double first = std::accumulate(s.losses.begin(), s.losses.begin() + 50, 0.0) / 50;
  const double last = std::accumulate(s.losses.end() - 50, s.losses.end(), 0.0) / 50;
  // ε-prediction starts near E‖ε − f‖² ≈ 1 + output variance; a fitted model removes the part of ε
  // that x_t determines (most of it at low noise for these narrow modes).
  EXPECT_LT(last, 0.75 * first) << "first 50: " << first << ", last 50: " << last;
  EXPECT_EQ(trainer->step_count(), 300);
  std::cerr << "[ info ] mixture DSM loss: first 50 steps " << first << ", last 50 " << last << ", " << 300 / s.seconds
            << " it/s\n";
}

TEST(DenoiserTrainer, ExactResumeInProcess) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("resume");
  const int64_t n = 30, k = 12;
  auto full = mixture_trainer(quick_options());
  full->train(n);

  auto first = mixture_trainer(quick_options());
  first->train(k, checkpointing(dir + "/ckpt.pt", 6));
  // A trainer whose network starts from other weights: everything must come from the checkpoint.
  auto resumed = mixture_trainer(quick_options(), /*net_seed=*/77);
  ASSERT_TRUE(resumed->resume(dir + "/ckpt.pt"));
  EXPECT_EQ(resumed->step_count(), k);
  resumed->train(n - k);
  expect_same_weights(*full, *resumed);
  EXPECT_EQ(temp_files(dir), 0u);
}

TEST(DenoiserTrainer, ExactResumeWithShuffledImagesAndUNet) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("resume_unet");
  fewstep::UNetConfig u;
  u.base_channels = 8;
  u.groups = 4;
  u.channel_mult = {1, 2};
  u.image_size = 8;
  const at::Tensor images = at::rand({20, 1, 8, 8}, gen(3)) * 2 - 1;
  auto make = [&](uint64_t net_seed) {
    DenoiserTrainerOptions o = quick_options();
    o.loss.prediction = Prediction::V;
    o.loss.weighting = LossWeighting::MinSNR;
    return std::make_unique<DenoiserTrainer>(
        fewstep::make_unet(u, net_seed), std::make_shared<fewstep::VPCosine>(),
        std::make_shared<fewstep::ShuffledBatches>(images, at::Tensor(), 6, /*seed=*/4), o);
  };
  auto full = make(1);
  full->train(8);  // 3 batches per epoch: crosses two epoch boundaries
  auto first = make(1);
  first->train(4);
  first->save_checkpoint(dir + "/ckpt.pt");
  auto resumed = make(2);
  resumed->load_checkpoint(dir + "/ckpt.pt");
  resumed->train(4);
  expect_same_weights(*full, *resumed);
}

TEST(DenoiserTrainer, CheckpointFromAnotherSetupIsRejected) {
  const std::string dir = temp_dir("mismatch");
  auto a = mixture_trainer(quick_options());
  a->train(2);
  a->save_checkpoint(dir + "/ckpt.pt");
  DenoiserTrainerOptions o = quick_options();
  o.loss.prediction = Prediction::X0;
  auto b = mixture_trainer(o);
  std::string msg = value_error_message([&] { b->load_checkpoint(dir + "/ckpt.pt"); });
  EXPECT_NE(msg.find("prediction is \"x0\" here, \"eps\" in the checkpoint"), std::string::npos) << msg;
  // Another architecture.
  fewstep::MlpConfig wide = small_mlp();
  wide.hidden = 32;
  DenoiserTrainer c(fewstep::make_mlp(wide, 0), std::make_shared<fewstep::VPLinear>(),
                    std::make_shared<fewstep::MixtureData>(mixture(), 128, uint64_t{9}), quick_options());
  msg = value_error_message([&] { c.load_checkpoint(dir + "/ckpt.pt"); });
  EXPECT_NE(msg.find("shape"), std::string::npos) << msg;
  // Python-readable layout: one flat dict.
  const fewstep::Checkpoint ck = fewstep::Checkpoint::load(dir + "/ckpt.pt");
  EXPECT_EQ(ck.integer("step"), 2);
  EXPECT_TRUE(ck.contains("rng/noise"));
  EXPECT_TRUE(ck.contains("data/generator"));
  EXPECT_TRUE(ck.contains("optimizer/0/exp_avg"));
  EXPECT_EQ(ck.string("format"), "fewstep.denoiser_trainer.v1");
  EXPECT_EQ(ck.string("options"), a->options_json());
}

// The one resume check (train/trainer.h): every option is stored and compared; only the resumable ones
// (total_steps) may change, and the front end's run options are compared the same way.
TEST(Trainer, ResumeComparesEveryOptionExceptTheResumableOnes) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("options");
  auto a = mixture_trainer(quick_options());
  a->set_run_options(R"({"--batch": 8, "--net": "mlp"})", {"--steps"});
  a->train(3);
  a->save_checkpoint(dir + "/ckpt.pt");
  // total_steps may change: the run goes on with the new length of its learning-rate decay.
  DenoiserTrainerOptions longer = quick_options();
  longer.optimizer.schedule.total_steps += 10;
  auto b = mixture_trainer(longer);
  b->set_run_options(R"({"--batch": 8, "--net": "mlp", "--steps": 99})", {"--steps"});
  ASSERT_TRUE(b->resume(dir + "/ckpt.pt"));
  EXPECT_EQ(b->step_count(), 3);
  for (const auto& [field, expected] : std::vector<std::pair<std::function<void(DenoiserTrainerOptions&)>, std::string>>{
           {[](DenoiserTrainerOptions& o) { o.optimizer.schedule.lr = 0.5; }, "lr is 0.5 here"},
           {[](DenoiserTrainerOptions& o) { o.ema_decay = 0.5; }, "ema_decay is 0.5 here"},
           {[](DenoiserTrainerOptions& o) { o.seed = 9; }, "seed is 9 here, 123 in the checkpoint"},
           {[](DenoiserTrainerOptions& o) { o.loss.time_scale = 2.0; }, "time_scale is 2.0 here, 1.0 in the checkpoint"},
           {[](DenoiserTrainerOptions& o) { o.t_max = 0.5; }, "t_max is 0.5 here, 1.0 in the checkpoint"}}) {
    DenoiserTrainerOptions o = quick_options();
    field(o);
    auto c = mixture_trainer(o);
    c->set_run_options(R"({"--batch": 8, "--net": "mlp"})", {"--steps"});
    const std::string msg = value_error_message([&] { c->load_checkpoint(dir + "/ckpt.pt"); });
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
    EXPECT_NE(msg.find("only total_steps may change"), std::string::npos) << msg;
    EXPECT_EQ(c->step_count(), 0);
  }
  auto d = mixture_trainer(quick_options());
  d->set_run_options(R"({"--batch": 16, "--net": "mlp"})");
  const std::string msg = value_error_message([&] { d->load_checkpoint(dir + "/ckpt.pt"); });
  EXPECT_NE(msg.find("--batch is 16 here, 8 in the checkpoint"), std::string::npos) << msg;
  // A setting the checkpoint does not have differs too.
  auto e = mixture_trainer(quick_options());
  e->set_run_options(R"({"--batch": 8, "--net": "mlp", "--hidden": 4})");
  EXPECT_NE(value_error_message([&] { e->load_checkpoint(dir + "/ckpt.pt"); }).find("--hidden is 4 here, absent"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Trainer, OptionsRoundTripThroughJson) {
  DenoiserTrainerOptions o = quick_options();
  o.loss.prediction = Prediction::V;
  o.t_min = 0.02;
  o.optimizer.schedule.decay = fewstep::LrDecay::Linear;
  o.conditioning.num_classes = 3;
  const std::string j = fewstep::options_to_json(o);
  DenoiserTrainerOptions back;
  fewstep::options_from_json(j, back);
  EXPECT_EQ(fewstep::options_to_json(back), j);
  EXPECT_EQ(back.loss.prediction, Prediction::V);
  ASSERT_TRUE(back.t_min.has_value());
  EXPECT_EQ(*back.t_min, 0.02);
  std::string msg = value_error_message([&] { fewstep::options_from_json(R"({"lrr": 1})", back); });
  EXPECT_NE(msg.find("unknown option 'lrr'"), std::string::npos) << msg;
  msg = value_error_message([&] { fewstep::options_from_json(R"({"decay": "step"})", back); });
  EXPECT_NE(msg.find("decay should be 'cosine' or 'linear', got 'step'"), std::string::npos) << msg;
  EXPECT_THROW(fewstep::options_from_json(R"({"lr": "fast"})", back), c10::TypeError);
  EXPECT_THROW(fewstep::options_from_json(R"({"seed": -1})", back), c10::ValueError);
}

TEST(Trainer, CheckResumeOptionsNamesTheSettingAndBothValues) {
  fewstep::check_resume_options("t", "c.pt", R"({"a": 1, "b": "x"})", R"({"b": "x", "a": 1})", {});
  fewstep::check_resume_options("t", "c.pt", R"({"a": 1})", R"({"a": 2})", {"a"});
  const std::string msg =
      value_error_message([] { fewstep::check_resume_options("t", "c.pt", R"({"a": 1})", R"({"a": 2})", {}); });
  EXPECT_NE(msg.find("t: checkpoint 'c.pt' was written with other options: a is 2 here, 1 in the checkpoint"),
            std::string::npos)
      << msg;
  // An option added later: a checkpoint without it resumes when the value is the one it ran with.
  fewstep::check_resume_options("t", "c.pt", R"({"a": 1})", R"({"a": 1, "depth": 1})", {}, R"({"depth": 1})");
  for (const char* added : {R"({"depth": 1})", "{}"}) {
    const std::string other = value_error_message([&] {
      fewstep::check_resume_options("t", "c.pt", R"({"a": 1})", R"({"a": 1, "depth": 2})", {}, added);
    });
    EXPECT_NE(other.find("depth is 2 here"), std::string::npos) << other;
  }
}

TEST(DenoiserTrainer, BadArgumentsAreNamed) {
  DenoiserTrainerOptions o = quick_options();
  o.t_min = 0.5;
  o.t_max = 0.4;
  EXPECT_NE(value_error_message([&] { mixture_trainer(o); }).find("t_min < t_max"), std::string::npos);
  EXPECT_NE(value_error_message([&] {
              DenoiserTrainer(nullptr, std::make_shared<fewstep::VPLinear>(),
                              std::make_shared<fewstep::MixtureData>(mixture(), 8, uint64_t{0}));
            }).find("net"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// SIGKILL: a child process (this binary, re-invoked) trains with periodic checkpoints and is
// killed; training resumed from its last checkpoint matches an uninterrupted run.

constexpr const char* kChildEnv = "FEWSTEP_TRAIN_CHILD_DIR";
constexpr const char* kWriterEnv = "FEWSTEP_ATOMIC_CHILD_DIR";

pid_t spawn_self(const std::string& filter, const std::string& env_var, const std::string& value) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(env_var + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string arg = "--gtest_filter=" + filter;
  char* argv[] = {exe.data(), arg.data(), nullptr};
  // The child's GoogleTest output goes to a log beside its files (shown if it fails early).
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, (value + "/child.log").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

void kill_and_reap(pid_t pid) {
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
}

// Runs only inside the child process.
TEST(ChildProcess, TrainsUntilKilled) {
  const char* dir = std::getenv(kChildEnv);
  if (dir == nullptr) GTEST_SKIP() << "helper of DenoiserTrainer.ExactResumeAfterSigkill";
  at::set_num_threads(1);
  auto trainer = mixture_trainer(quick_options());
  trainer->train(1000000, checkpointing(std::string(dir) + "/ckpt.pt", 5));
}

TEST(ChildProcess, WritesCheckpointsUntilKilled) {
  const char* dir = std::getenv(kWriterEnv);
  if (dir == nullptr) GTEST_SKIP() << "helper of AtomicWrite.SigkillLeavesACompleteFile";
  for (int64_t i = 0;; ++i) {
    fewstep::Checkpoint c;
    c.set_tensor("data", at::full({1 << 20}, static_cast<float>(i)));  // 4 MB: writes take a while
    c.set_int("i", i);
    c.save(std::string(dir) + "/big.pt");
  }
}

TEST(DenoiserTrainer, ExactResumeAfterSigkill) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("sigkill");
  const std::string path = dir + "/ckpt.pt";
  const pid_t pid = spawn_self("ChildProcess.TrainsUntilKilled", kChildEnv, dir);
  ASSERT_GT(pid, 0);
  // Wait for a checkpoint past step 10, then kill the child wherever it is.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  int64_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, WNOHANG), 0)
        << "the training child exited early with status " << status << ":\n"
        << std::string(std::istreambuf_iterator<char>(std::ifstream(dir + "/child.log").rdbuf()), {});
    if (fs::exists(path)) {
      seen = fewstep::Checkpoint::load(path).integer("step");  // always complete thanks to rename
      if (seen >= 10) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill_and_reap(pid);
  ASSERT_GE(seen, 10) << "the child wrote no checkpoint past step 10 in 40 s";

  auto resumed = mixture_trainer(quick_options(), /*net_seed=*/99);
  ASSERT_TRUE(resumed->resume(path));
  const int64_t k = resumed->step_count();
  ASSERT_GE(k, 10);
  ASSERT_EQ(k % 5, 0);
  resumed->train(7);
  auto full = mixture_trainer(quick_options());
  full->train(k + 7);
  expect_same_weights(*full, *resumed);
  std::cerr << "[ info ] child killed after its checkpoint at step " << k << "\n";
}

TEST(AtomicWrite, SigkillLeavesACompleteFile) {
  const std::string dir = temp_dir("sigkill_write");
  const std::string path = dir + "/big.pt";
  for (int round = 0; round < 3; ++round) {
    const pid_t pid = spawn_self("ChildProcess.WritesCheckpointsUntilKilled", kWriterEnv, dir);
    ASSERT_GT(pid, 0);
    // Let it write a few files, then kill it at an arbitrary point (often mid-write).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!fs::exists(path) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + 37 * round));
    kill_and_reap(pid);
    ASSERT_TRUE(fs::exists(path));
    const fewstep::Checkpoint c = fewstep::Checkpoint::load(path);
    const int64_t i = c.integer("i");
    EXPECT_TRUE(at::equal(c.tensor("data"), at::full({1 << 20}, static_cast<float>(i)))) << "round " << round;
  }
}

}  // namespace

namespace {
int always_interrupted() { return 15; }  // SIGTERM
}  // namespace

TEST(Trainer, InterruptStopsBetweenStepsAndKeepsTheLastCheckpoint) {
  at::set_num_threads(1);
  const std::string dir = temp_dir("interrupt");
  auto trainer = mixture_trainer(quick_options());
  trainer->train(6, checkpointing(dir + "/ckpt.pt", 3));
  const std::string before = fewstep::read_file(dir + "/ckpt.pt", "checkpoint");
  int64_t steps_run = 0;
  fewstep::TrainLoopOptions loop = checkpointing(dir + "/ckpt.pt", 1);
  loop.on_step = [&](const fewstep::TrainStepStats&) {
    if (++steps_run == 2) fewstep::set_interrupt_check(&always_interrupted);
  };
  try {
    trainer->train(100, loop);
    FAIL() << "not interrupted";
  } catch (const fewstep::Interrupted& e) {
    EXPECT_EQ(e.signal(), 15);
  }
  fewstep::set_interrupt_check(nullptr);
  EXPECT_EQ(steps_run, 2);
  EXPECT_EQ(trainer->step_count(), 8);
  // The checkpoint of step 8 was written whole before the interrupt; it resumes.
  auto resumed = mixture_trainer(quick_options(), 77);
  ASSERT_TRUE(resumed->resume(dir + "/ckpt.pt"));
  EXPECT_EQ(resumed->step_count(), 8);
  EXPECT_NE(fewstep::read_file(dir + "/ckpt.pt", "checkpoint"), before);
}
