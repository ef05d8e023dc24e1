// Micro-distillation: the exact-term limit of the micro step, the learned step-size bounds,
// driver/unroll agreement, gradients through the unrolled run, learning the single-Gaussian integral,
// teacher identity and exact resume.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <filesystem>

#include "fewstep/fewstep.h"
#include "test_util.h"

namespace fs = fewstep;
using fs::testing::generator;
using fs::testing::scratch_dir;
using fs::testing::single_gaussian;
using fs::testing::single_gaussian_flow;
using fs::testing::value_error_message;

namespace {

std::shared_ptr<fs::VPLinear> vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }

std::shared_ptr<fs::GaussianMixture> mixture(int64_t dim = 4) {
  return fs::GaussianMixture::random(dim, 3, /*seed=*/5, /*diagonal=*/false, /*spread=*/1.0, /*min_var=*/0.05,
                                     /*max_var=*/0.3);
}

fs::TrajectorySpec small_spec(int64_t dim, int64_t n) {
  fs::TrajectorySpec spec;
  spec.sample_shape = {dim};
  spec.n = n;
  spec.segments = 16;
  spec.substeps = 8;
  spec.dtype = at::kDouble;
  spec.progress = false;
  return spec;
}

fs::MicroTrainerOptions small_options(fs::MicroMode mode) {
  fs::MicroTrainerOptions o;
  o.mode = mode;
  o.heads.width = 32;
  o.heads.blocks = 2;
  o.batch = 16;
  o.budget_min = 3;
  o.budget_max = 6;
  o.optimizer.schedule.lr = 1e-3;
  o.seed = 3;
  return o;
}

// The coefficient-head runs on the mixture at a fixed budget of 4 steps: training trajectories, held-out
// x_T with their reference x_0 (other seeds), the median error of a sampler on them, and the options
// of a joint coefficient run over `depth` previous evaluations (lr 3e-3, 150 steps, EMA 0.9).
struct CoefficientRunAtBudgetFour {
  fs::Denoiser model = fs::Denoiser::exact(mixture(), vp());
  fs::DenseTrajectories data = fs::dense_trajectories(model, small_spec(4, 64), "mixture(4, 3, 5)");
  at::Tensor x_T, x_0;
  fs::TrainLoopOptions quiet;

  CoefficientRunAtBudgetFour() {
    auto held_out = small_spec(4, 64);
    held_out.seed = 777;
    const auto test = fs::dense_trajectories(model, held_out, "mixture(4, 3, 5)");
    x_T = test.x.select(1, 0);
    x_0 = test.x.select(1, test.segments());
    quiet.progress = false;
  }
  double error(const fs::MicroSampler& s) const {
    return (s.sample(model, x_T, 4).x - x_0).norm(2, {1}).median().item<double>();
  }
  static fs::MicroTrainerOptions options(int64_t depth) {
    auto o = small_options(fs::MicroMode::Joint);
    o.heads.history = true;
    o.heads.history_depth = depth;
    o.heads.residual_kind = "coefficients";
    o.budget_min = o.budget_max = 4;
    o.optimizer.schedule.lr = 3e-3;
    o.optimizer.schedule.total_steps = 150;
    o.ema_decay = 0.9;
    return o;
  }
};

// Every parameter of the module, perturbed away from its zero-initialised output layers, in float64.
void randomise(torch::jit::Module& m, uint64_t seed, double scale) {
  at::NoGradGuard no_grad;
  auto gen = generator(seed);
  m.to(at::kDouble);
  for (const at::Tensor& p : m.parameters()) p.copy_(at::randn(p.sizes(), gen, at::kDouble) * scale);
}

// Every parameter of `a` equals `b`'s, bit for bit.
void expect_same_parameters(const torch::jit::Module& a, const torch::jit::Module& b) {
  auto it = a.parameters().begin();
  for (const at::Tensor& p : b.parameters()) {
    EXPECT_TRUE(at::equal(*it, p));
    ++it;
  }
}

// A residual-mode sampler with an untrained (zero-output) residual head over the schedule's range.
fs::MicroSampler untrained_residual_sampler(const fs::Denoiser& model, const fs::MicroHeadConfig& heads) {
  const auto& schedule = model.schedule_ref();
  fs::MicroSamplerInfo info;
  info.mode = fs::MicroMode::Residual;
  info.heads = heads;
  info.t_start = schedule.t_max();
  info.t_end = schedule.t_min();
  return fs::MicroSampler(fs::make_residual_head(heads, 0), nullptr, info, fs::MicroSampler::probe_teacher(model, info));
}

}  // namespace

// ---------------------------------------------------------------- the exact-term limit

// With r = the exact residual of the single-Gaussian flow (closed form), the micro step is exact on any
// grid: x_t = (α_t/α_s) x_s + r reproduces the flow to round-off, where DDIM (r = c ε̂) errs by O(h).
TEST(MicroStep, ExactResidualReproducesSingleGaussianFlowToRoundOff) {
  auto schedule = vp();
  const at::Tensor mean = at::tensor({0.7, -1.2, 0.3}, at::kDouble), var = at::tensor({0.2, 0.05, 1.5}, at::kDouble);
  auto model = fs::Denoiser::exact(single_gaussian(mean, var), schedule);
  fs::NonlinearTerm exact = [&](const fs::NoiseSchedule& sch, const at::Tensor& x, const at::Tensor&, double s,
                                double t, const std::vector<fs::HistoryEntry>&) {
    return single_gaussian_flow(sch, x, mean, var, s, t) - std::exp(sch.log_alpha(t) - sch.log_alpha(s)) * x;
  };
  fs::MicroStepper micro(exact);
  const at::Tensor x_T = at::randn({64, 3}, generator(1), at::kDouble);
  const auto grid = fs::timesteps(*schedule, 4, fs::Spacing::LogSNR);
  const auto out = fs::sample(model, x_T, micro, grid);
  const at::Tensor truth = single_gaussian_flow(*schedule, x_T, mean, var, grid.front(), grid.back());
  EXPECT_EQ(out.nfe, 4);
  EXPECT_LT((out.x - truth).abs().max().item<double>(), 1e-12);
  const auto ddim = fs::sample(model, x_T, "ddim", 4);
  EXPECT_GT((ddim.x - truth).abs().max().item<double>(), 1e-3) << "the check must be able to fail";
}

// On a (non-Gaussian) mixture the exact residual comes from a tight reference solve between s and t;
// the micro step with it reproduces the reference flow over the whole range to the solve's tolerance.
TEST(MicroStep, ExactResidualFromMixtureReproducesReferenceFlow) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  fs::ReferenceOptions tight;
  tight.rtol = tight.atol = 1e-12;
  fs::NonlinearTerm exact = [&](const fs::NoiseSchedule& sch, const at::Tensor& x, const at::Tensor&, double s,
                                double t, const std::vector<fs::HistoryEntry>&) {
    return fs::reference_solve(model, x, s, t, tight).x - std::exp(sch.log_alpha(t) - sch.log_alpha(s)) * x;
  };
  fs::MicroStepper micro(exact);
  const at::Tensor x_T = at::randn({32, 4}, generator(2), at::kDouble);
  const auto grid = fs::timesteps(*schedule, 5, fs::Spacing::LogSNR);
  const auto out = fs::sample(model, x_T, micro, grid);
  const at::Tensor truth = fs::reference_solve(model, x_T, grid.front(), grid.back(), tight).x;
  EXPECT_LT((out.x - truth).abs().max().item<double>(), 1e-8);
  const auto deis = fs::sample(model, x_T, "deis", 5);
  EXPECT_GT((deis.x - truth).abs().max().item<double>(), 1e-4);
}

// The linear factor goes the right way (α_t/α_s > 1 backward; docs/design.md §1) and
// an untrained g_ψ (zero output layer) is DDIM exactly.
TEST(MicroStep, UntrainedHeadIsDdimAndLinearFactorExceedsOne) {
  auto schedule = vp();
  const at::Tensor ls = at::scalar_tensor(schedule->lambda(0.8), at::kDouble);
  const at::Tensor lt = at::scalar_tensor(schedule->lambda(0.3), at::kDouble);
  const auto step = fs::exponential_step(fs::ScheduleFamily::VP, ls, lt);
  EXPECT_GT(step.linear.item<double>(), 1.0);
  EXPECT_NEAR(step.linear.item<double>(), schedule->alpha(0.3) / schedule->alpha(0.8), 1e-14);
  EXPECT_NEAR(step.ddim.item<double>(),
              schedule->sigma(0.3) - schedule->alpha(0.3) / schedule->alpha(0.8) * schedule->sigma(0.8), 1e-14);

  auto model = fs::Denoiser::exact(mixture(), schedule);
  const at::Tensor x_T = at::randn({16, 4}, generator(3), at::kDouble);
  const auto ddim = fs::sample(model, x_T, "ddim", 7);
  for (const char* kind : {"network", "coefficients", "hybrid"}) {
    fs::MicroHeadConfig heads;
    heads.sample_shape = {4};
    heads.residual_kind = kind;
    const auto micro = untrained_residual_sampler(model, heads).sample(model, x_T, 7);
    EXPECT_LT((micro.x - ddim.x).abs().max().item<double>(), 1e-12) << kind;
  }
  // The registered solver without a file is DDIM too.
  EXPECT_LT((fs::sample(model, x_T, "micro", 7).x - ddim.x).abs().max().item<double>(), 1e-12);
}

// With history, an untrained g_ψ is the two-step DEIS (λ) step: the library's deis(order=2) on the
// same grid (without its lower-order final steps), to round-off.
TEST(MicroStep, UntrainedHistoryHeadIsDeis2) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  const at::Tensor x_T = at::randn({16, 4}, generator(5), at::kDouble);
  const auto deis = fs::sample(model, x_T, "deis", 7, fs::Spacing::LogSNR,
                               {{"order", int64_t{2}}, {"variable", std::string("lambda")}, {"lower_order_final", false}});
  for (const char* kind : {"network", "coefficients", "hybrid"}) {
    for (int64_t depth : {1, 2, 3}) {  // the base term stays DEIS-2 at any depth
      fs::MicroHeadConfig heads;
      heads.sample_shape = {4};
      heads.history = true;
      heads.history_depth = depth;
      heads.residual_kind = kind;
      const auto micro = untrained_residual_sampler(model, heads).sample(model, x_T, 7);
      EXPECT_LT((micro.x - deis.x).abs().max().item<double>(), 1e-12) << kind << ", depth " << depth;
      EXPECT_GT((micro.x - fs::sample(model, x_T, "ddim", 7).x).abs().max().item<double>(), 1e-3);
    }
  }
}

// At history_depth k ≥ 2 the head also sees d_k = ε̂_(k−1) − ε̂_(k), the difference of the run's
// (k−1)-th and k-th evaluations before the current one (zero while there are fewer). A coefficient head
// whose only non-zero weight is a constant c on d_k gives g = r_DEIS2 + c_ddim h c d_k; the sampler
// must equal that rule written out by hand over the stepper's history, and differ from DEIS-2.
TEST(MicroStep, DeepHeadsSeeEvaluationsThatFarBack) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  fs::MicroHeadConfig heads;
  heads.sample_shape = {4};
  heads.history = true;
  heads.residual_kind = "coefficients";
  const double c = 0.3;
  const at::Tensor x_T = at::randn({16, 4}, generator(6), at::kDouble);
  const auto grid = fs::timesteps(*schedule, 6, fs::Spacing::LogSNR);
  for (int64_t depth : {2, 3}) {
    heads.history_depth = depth;
    fs::MicroSampler sampler = untrained_residual_sampler(model, heads);
    {
      at::NoGradGuard no_grad;
      sampler.residual()->to(at::kDouble);
      at::Tensor weights = at::zeros({2 + depth}, at::kDouble);
      weights[1 + depth] = c;
      sampler.residual()->attr("fc_out_bias").toTensor().copy_(weights);
    }
    fs::NonlinearTerm by_hand = [&](const fs::NoiseSchedule& sch, const at::Tensor&, const at::Tensor& eps, double s,
                                    double t, const std::vector<fs::HistoryEntry>& history) {
      auto lambda = [&](double time) { return at::scalar_tensor(sch.lambda(time), at::kDouble); };
      const at::Tensor ls = lambda(s), lt = lambda(t);
      const at::Tensor eps_prev = history.empty() ? eps : history.back().eps;
      const at::Tensor lambda_prev = history.empty() ? ls : lambda(history.back().t);
      at::Tensor r = fs::deis2_nonlinear_term(sch.family(), eps, eps_prev, lambda_prev, ls, lt);
      const size_t n = history.size(), k = static_cast<size_t>(depth);
      if (n >= k) {
        const auto step = fs::exponential_step(sch.family(), ls, lt);
        r = r + (step.ddim * step.h * c) * (history[n - k + 1].eps - history[n - k].eps);
      }
      return r;
    };
    const auto expected = fs::sample(model, x_T, fs::MicroStepper(by_hand), grid);
    const auto micro = sampler.sample(model, x_T, 6);
    EXPECT_EQ(micro.timesteps, grid);
    EXPECT_LT((micro.x - expected.x).abs().max().item<double>(), 1e-12) << "depth " << depth;
    const auto deis = untrained_residual_sampler(model, heads).sample(model, x_T, 6);
    EXPECT_GT((micro.x - deis.x).abs().max().item<double>(), 1e-4) << "the check must be able to fail";
  }

  // Settings are checked, naming the field.
  heads.history_depth = fs::MicroHeadConfig::max_history_depth + 1;
  EXPECT_NE(value_error_message([&] { heads.validate(); }).find("history_depth"), std::string::npos);
  heads.history_depth = 2;
  heads.history = false;
  EXPECT_NE(value_error_message([&] { heads.validate(); }).find("needs history"), std::string::npos);
}

// A deeper head of any kind started from a shallower one (copy_residual_head: the input layers are
// zero-padded) is that sampler exactly, from non-trivial (randomised) weights. The copy refuses the
// other direction, and same-shape copies refuse other shapes, naming the tensor and both shapes.
TEST(MicroStep, DeeperHeadStartsAsTheShallowerSampler) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  const at::Tensor x_T = at::randn({16, 4}, generator(8), at::kDouble);
  for (const char* kind : {"network", "coefficients", "hybrid"}) {
    for (int64_t depth = 1; depth < fs::MicroHeadConfig::max_history_depth; ++depth) {
      fs::MicroHeadConfig shallow;
      shallow.sample_shape = {4};
      shallow.history = true;
      shallow.history_depth = depth;
      shallow.residual_kind = kind;
      fs::MicroHeadConfig deep = shallow;
      deep.history_depth = depth + 1;
      fs::MicroSampler from = untrained_residual_sampler(model, shallow);
      randomise(*from.residual(), 11, 0.05);
      fs::MicroSampler to = untrained_residual_sampler(model, deep);
      to.residual()->to(at::kDouble);
      fs::copy_residual_head(shallow, *from.residual(), deep, *to.residual());
      const at::Tensor a = from.sample(model, x_T, 6).x;
      EXPECT_LT((a - to.sample(model, x_T, 6).x).abs().max().item<double>(), 1e-12) << kind << ", depth " << depth;
      EXPECT_GT((a - untrained_residual_sampler(model, shallow).sample(model, x_T, 6).x).abs().max().item<double>(),
                1e-4)
          << kind << ": the randomised weights must change the sampler, or the check above proves nothing";
      const std::string larger = value_error_message(
          [&] { fs::copy_weights(*to.residual(), *from.residual(), fs::WeightShapes::ZeroPadded); });
      EXPECT_NE(larger.find("in the source and"), std::string::npos) << larger;
      const std::string other =
          value_error_message([&] { fs::copy_weights(*from.residual(), *to.residual(), fs::WeightShapes::Same); });
      EXPECT_NE(other.find("has shape"), std::string::npos) << other;
    }
  }
}

// micro_nonlinear_term takes the run's evaluations so far and fills in what a head needs: a missing
// k-th previous evaluation is the oldest one given, else the current one; older entries are ignored.
TEST(MicroStep, NonlinearTermFillsInMissingPreviousEvaluations) {
  fs::MicroHeadConfig heads;
  heads.sample_shape = {4};
  heads.history = true;
  heads.history_depth = 2;
  heads.residual_kind = "coefficients";
  auto model = fs::Denoiser::exact(mixture(), vp());
  fs::MicroSampler sampler = untrained_residual_sampler(model, heads);
  {
    at::NoGradGuard no_grad;
    sampler.residual()->to(at::kDouble);
    sampler.residual()->attr("fc_out_bias").toTensor().copy_(at::tensor({0.1, 0.2, 0.3, 0.4}, at::kDouble));
  }
  const auto* head = sampler.residual().get();
  const auto family = fs::ScheduleFamily::VP;
  const at::Tensor x = at::randn({8, 4}, generator(11), at::kDouble);
  const at::Tensor eps = at::randn({8, 4}, generator(12), at::kDouble);
  auto lam = [](double v) { return at::scalar_tensor(v, at::kDouble); };
  const at::Tensor ls = lam(-0.5), lt = lam(0.1);
  const fs::PreviousEvaluation p1{at::randn({8, 4}, generator(13), at::kDouble), lam(-1.0)};
  const fs::PreviousEvaluation p2{at::randn({8, 4}, generator(14), at::kDouble), lam(-1.7)};
  const fs::PreviousEvaluation p3{at::randn({8, 4}, generator(15), at::kDouble), lam(-2.5)};
  auto g = [&](const std::vector<fs::PreviousEvaluation>& before) {
    return fs::micro_nonlinear_term(head, 2, family, x, eps, ls, lt, before);
  };
  auto gap = [](const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); };
  EXPECT_LT(gap(g({}), g({{eps, ls}, {eps, ls}})), 1e-14);
  EXPECT_LT(gap(g({p1}), g({p1, p1})), 1e-14);
  EXPECT_LT(gap(g({p3, p2, p1}), g({p2, p1})), 1e-14);
  // ... and each entry matters where it is read.
  EXPECT_GT(gap(g({p2, p1}), g({p1, p1})), 1e-3);
  EXPECT_GT(gap(g({p1}), g({})), 1e-3);
  EXPECT_NE(value_error_message([&] { g({p1, fs::PreviousEvaluation{eps, at::Tensor()}}); }).find("before[1]"),
            std::string::npos);
}

// The coefficient head is a learned multistep rule: its output is a x + b eps + c d with per-sample
// scalars that depend on the step's (λ_s, h, h_prev) only. So it is linear in the vectors, a sample's
// output does not depend on the other samples, and its size does not grow with the data.
TEST(MicroStep, CoefficientHeadIsLinearInTheVectorsAndSmall) {
  fs::MicroHeadConfig heads;
  heads.sample_shape = {1, 6, 5};
  heads.history = true;
  heads.residual_kind = "coefficients";
  fs::ScriptNet head = fs::make_residual_head(heads, 7);
  randomise(*head, 11, 0.5);
  auto gen = generator(12);
  auto draw = [&](int64_t n) { return at::randn({n, 1, 6, 5}, gen, at::kDouble); };
  const at::Tensor x1 = draw(3), x2 = draw(3), e1 = draw(3), e2 = draw(3), d1 = draw(3), d2 = draw(3);
  const at::Tensor lam = at::tensor({-2.0, 0.5, 3.0}, at::kDouble), h = at::tensor({0.4, 0.9, 0.2}, at::kDouble),
                   hp = at::tensor({0.3, 0.0, 0.5}, at::kDouble);
  auto run = [&](const at::Tensor& x, const at::Tensor& e, const at::Tensor& d, int64_t i0, int64_t n) {
    return head->forward({x.narrow(0, i0, n), e.narrow(0, i0, n), d.narrow(0, i0, n), lam.narrow(0, i0, n),
                          h.narrow(0, i0, n), hp.narrow(0, i0, n)})
        .toTensor();
  };
  const at::Tensor sum = run(x1 + 2 * x2, e1 + 2 * e2, d1 + 2 * d2, 0, 3);
  const at::Tensor parts = run(x1, e1, d1, 0, 3) + 2 * run(x2, e2, d2, 0, 3);
  EXPECT_LT((sum - parts).abs().max().item<double>(), 1e-12);
  EXPECT_GT(sum.abs().max().item<double>(), 1e-2) << "a randomised head must not be zero";
  EXPECT_LT((run(x1, e1, d1, 1, 1) - run(x1, e1, d1, 0, 3).narrow(0, 1, 1)).abs().max().item<double>(), 1e-12);
  // Its coefficients change with the step: the same vectors at another h give another output.
  const at::Tensor moved = head->forward({x1, e1, d1, lam, h * 2, hp}).toTensor();
  EXPECT_GT((moved - run(x1, e1, d1, 0, 3)).abs().max().item<double>(), 1e-6);
  // About 10k parameters whatever the data's size; the network head of the same images has ~100k.
  fs::MicroHeadConfig big = heads;
  big.sample_shape = {1, 28, 28};
  EXPECT_EQ(fs::parameter_count(*fs::make_residual_head(big, 0)), fs::parameter_count(*head));
  EXPECT_LT(fs::parameter_count(*head), 20000);
  EXPECT_LT(fs::residual_head_flops(big), fs::residual_head_flops([&] {
              auto net = big;
              net.residual_kind = "network";
              return net;
            }()) / 100);
  heads.residual_kind = "linear";
  EXPECT_NE(value_error_message([&] { heads.validate(); }).find("'linear'"), std::string::npos);
}

// The differentiable DEIS-2 step equals the library's deis(order=2, variable=lambda) on any grid.
TEST(MicroStep, DifferentiableDeis2MatchesLibraryDeis) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  const at::Tensor x_T = at::randn({8, 4}, generator(4), at::kDouble);
  fs::UnrollSpec spec;
  spec.mode = fs::MicroMode::StepSize;
  spec.budget = 9;
  spec.t_start = schedule->t_max();
  spec.t_end = schedule->t_min();
  const auto unrolled = fs::unroll_micro(model, x_T, spec);
  fs::LearnedStepController uniform(nullptr, 9, 0.75);
  const auto deis = fs::solver("deis", {{"order", int64_t{2}}, {"variable", std::string("lambda")}});
  const auto driven = fs::sample_adaptive(model, x_T, *deis, uniform, spec.t_start, spec.t_end);
  EXPECT_EQ(driven.nfe, 9);
  EXPECT_LT((unrolled.x - driven.x).abs().max().item<double>(), 1e-11);
}

// ---------------------------------------------------------------- h_φ

// Whatever its weights, h_φ's steps stay in [(1 − a)R/k, (1 + a)R/k], the run takes exactly the
// budget and lands exactly on t_end.
TEST(StepSize, RespectsBoundsAndBudget) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  fs::MicroHeadConfig heads;
  heads.sample_shape = {4};
  for (uint64_t seed : {1, 2, 3}) {
    auto head = fs::make_step_size_head(heads, seed);
    randomise(*head, seed, 5.0);  // saturating logits: the bounds must still hold
    const double a = 0.6;
    for (int64_t budget : {1, 2, 5, 12}) {
      fs::LearnedStepController control(head, budget, a);
      const at::Tensor x_T = at::randn({10, 4}, generator(seed), at::kDouble);
      const auto out = fs::sample_adaptive(model, x_T, *fs::solver("ddim"), control, schedule->t_max(), schedule->t_min());
      ASSERT_EQ(out.nfe, budget);
      ASSERT_EQ(out.timesteps.size(), static_cast<size_t>(budget + 1));
      EXPECT_EQ(out.timesteps.back(), schedule->t_min());
      const double lambda_end = schedule->lambda(schedule->t_min());
      for (int64_t i = 0; i + 1 < budget; ++i) {
        const double lam = schedule->lambda(out.timesteps[i]), next = schedule->lambda(out.timesteps[i + 1]);
        const double share = (lambda_end - lam) / (budget - i);
        EXPECT_GE(next - lam, (1 - a) * share * (1 - 1e-9)) << "seed " << seed << " step " << i;
        EXPECT_LE(next - lam, (1 + a) * share * (1 + 1e-9)) << "seed " << seed << " step " << i;
      }
    }
  }
  EXPECT_NE(value_error_message([] { fs::LearnedStepController(nullptr, 0, 0.5); }).find("budget"), std::string::npos);
  EXPECT_NE(value_error_message([] { fs::LearnedStepController(nullptr, 5, 1.0); }).find("spread"), std::string::npos);
}

// ---------------------------------------------------------------- unroll

// The unrolled run (training) and the driver + LearnedStepController + micro stepper (sampling) are
// the same computation: with random float64 heads they agree to round-off.
TEST(Unroll, MatchesSamplingDriver) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  for (int64_t history : {0, 1, 2}) {  // previous evaluations the head sees
  fs::MicroHeadConfig heads;
  heads.sample_shape = {4};
  heads.history = history > 0;
  heads.history_depth = std::max<int64_t>(history, 1);
  auto residual = fs::make_residual_head(heads, 1), step = fs::make_step_size_head(heads, 1);
  randomise(*residual, 7, 0.1);
  randomise(*step, 8, 0.5);
  fs::MicroSamplerInfo info;
  info.heads = heads;
  info.spread = 0.7;
  info.t_start = schedule->t_max();
  info.t_end = schedule->t_min();
  fs::MicroSampler sampler(residual, step, info, fs::MicroSampler::probe_teacher(model, info));
  const at::Tensor x_T = at::randn({12, 4}, generator(9), at::kDouble);
  fs::UnrollSpec spec;
  spec.residual = residual.get();
  spec.history = history;
  spec.step_size = step.get();
  spec.budget = 8;
  spec.spread = 0.7;
  spec.t_start = info.t_start;
  spec.t_end = info.t_end;
  at::Tensor unrolled_x;
  std::vector<double> unrolled_times;
  {
    at::NoGradGuard no_grad;
    const auto unrolled = fs::unroll_micro(model, x_T, spec);
    unrolled_x = unrolled.x;
    unrolled_times = unrolled.times;
  }
  const auto driven = sampler.sample(model, x_T, 8);
  EXPECT_EQ(driven.nfe, 8);
  for (size_t i = 0; i < driven.timesteps.size(); ++i) EXPECT_NEAR(driven.timesteps[i], unrolled_times[i], 1e-12);
  EXPECT_LT((unrolled_x - driven.x).abs().max().item<double>(), 1e-10);
  // Non-uniform: the random head moved the steps off the uniform log-SNR grid.
  const auto uniform = fs::timesteps(*schedule, 8, fs::Spacing::LogSNR);
  EXPECT_GT(std::abs(driven.timesteps[3] - uniform[3]), 1e-4);
  }
}

// Gradients flow through every unrolled step: with the step positions fixed (no h_φ), autograd's
// derivative of the final error with respect to a parameter of g_ψ equals a central finite difference
// (the teacher's x input is differentiated too).
TEST(Unroll, GradientsFlowThroughUnrolledSteps) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  fs::MicroHeadConfig heads;
  heads.sample_shape = {4};
  auto residual = fs::make_residual_head(heads, 2), step = fs::make_step_size_head(heads, 2);
  randomise(*residual, 11, 0.1);
  randomise(*step, 12, 0.3);
  for (const at::Tensor& p : residual->parameters()) p.requires_grad_(true);
  for (const at::Tensor& p : step->parameters()) p.requires_grad_(true);
  const at::Tensor x_T = at::randn({6, 4}, generator(13), at::kDouble);
  const at::Tensor target = at::randn({6, 4}, generator(14), at::kDouble);
  fs::UnrollSpec spec;
  spec.residual = residual.get();
  spec.budget = 4;
  spec.t_start = schedule->t_max();
  spec.t_end = schedule->t_min();
  auto loss_of = [&] { return (fs::unroll_micro(model, x_T, spec).x - target).pow(2).sum(); };
  const at::Tensor bias = residual->attr("fc_in_bias").toTensor();
  loss_of().backward();
  const double autograd = bias.grad()[0].item<double>();
  const double eps = 1e-6;
  double fd;
  {
    at::NoGradGuard no_grad;
    bias[0] += eps;
    const double up = loss_of().item<double>();
    bias[0] -= 2 * eps;
    const double down = loss_of().item<double>();
    bias[0] += eps;
    fd = (up - down) / (2 * eps);
  }
  EXPECT_GT(std::abs(autograd), 1e-6);
  EXPECT_NEAR(autograd, fd, 1e-6 * std::max(1.0, std::abs(fd)));

  // With h_φ placing the steps, the gradient also runs through where they land, including the
  // teacher's time input (forward difference, δ = 1e-6 here): autograd matches a central finite
  // difference of the loss in a step-size parameter to O(δ).
  spec.step_size = step.get();
  spec.time_delta = 1e-6;
  const at::Tensor step_bias = step->attr("fc_out_bias").toTensor();
  step_bias.mutable_grad() = at::Tensor();
  loss_of().backward();
  const double step_autograd = step_bias.grad()[0].item<double>();
  double step_fd;
  {
    at::NoGradGuard no_grad;
    step_bias[0] += eps;
    const double up = loss_of().item<double>();
    step_bias[0] -= 2 * eps;
    const double down = loss_of().item<double>();
    step_bias[0] += eps;
    step_fd = (up - down) / (2 * eps);
  }
  EXPECT_GT(std::abs(step_fd), 1e-4);
  EXPECT_NEAR(step_autograd, step_fd, 1e-3 * std::abs(step_fd));
  // Without the time term the gradient is biased: the check above can fail.
  spec.time_gradient = false;
  step_bias.mutable_grad() = at::Tensor();
  loss_of().backward();
  EXPECT_GT(std::abs(step_bias.grad()[0].item<double>() - step_fd), 1e-2 * std::abs(step_fd));
}

// ---------------------------------------------------------------- training

// On single-Gaussian data the residual is the closed-form integral; a short residual-mode run of g_ψ
// learns it: on held-out steps (other x_T, every step length) its error in ε units falls far below
// DDIM's (the untrained g_ψ), which is O(h) relative.
TEST(MicroTrainer, LearnsSingleGaussianClosedFormIntegral) {
  auto schedule = vp();
  const at::Tensor mean = at::tensor({1.0, -0.5}, at::kDouble), var = at::tensor({0.1, 0.4}, at::kDouble);
  auto model = fs::Denoiser::exact(single_gaussian(mean, var), schedule);
  auto spec = small_spec(2, 256);
  auto data = fs::dense_trajectories(model, spec, "single gaussian");
  // The cached knots are the closed-form flow to the DEIS-3 solve's accuracy (128 steps, h ≈ 0.07:
  // O(h³) ≈ 1e-5 at most), far below the residual errors judged below.
  const at::Tensor flow = single_gaussian_flow(*schedule, data.x.select(1, 0), mean, var, data.times.front(),
                                               data.times.back());
  EXPECT_LT((data.x.select(1, spec.segments) - flow).abs().max().item<double>(), 1e-5);

  auto o = small_options(fs::MicroMode::Residual);
  o.batch = 64;
  o.segment_max = 8;
  o.optimizer.schedule.lr = 3e-3;
  o.optimizer.schedule.total_steps = 600;
  o.ema_decay = 0.0;
  fs::MicroTrainer trainer(model, "single gaussian", data, o);
  fs::TrainLoopOptions quiet;
  quiet.progress = false;
  trainer.train(600, quiet);

  // Held-out: fresh x_s on the flow at every knot pair j → j + m, m ≤ 8.
  const at::Tensor x_T = at::randn({200, 2}, generator(77), at::kDouble);
  double err_learned = 0, err_ddim = 0;
  const auto sampler = trainer.sampler();
  for (int64_t m : {1, 4, 8}) {
    for (int64_t j = 0; j + m <= spec.segments; j += 3) {
      const double s = data.times[j], t = data.times[j + m];
      const at::Tensor x_s = single_gaussian_flow(*schedule, x_T, mean, var, data.times[0], s);
      const at::Tensor r = single_gaussian_flow(*schedule, x_s, mean, var, s, t) -
                           std::exp(schedule->log_alpha(t) - schedule->log_alpha(s)) * x_s;
      const at::Tensor eps = model(x_s, s).eps;
      const at::Tensor ls = at::scalar_tensor(schedule->lambda(s), at::kDouble);
      const at::Tensor lt = at::scalar_tensor(schedule->lambda(t), at::kDouble);
      const double c = fs::exponential_step(fs::ScheduleFamily::VP, ls, lt).ddim.item<double>();
      at::NoGradGuard no_grad;
      const at::Tensor g = fs::micro_nonlinear_term(sampler.residual().get(), false, fs::ScheduleFamily::VP, x_s, eps, ls, lt);
      err_learned += ((g - r) / c).pow(2).mean().item<double>();
      err_ddim += ((c * eps - r) / c).pow(2).mean().item<double>();
    }
  }
  EXPECT_LT(err_learned, 0.05 * err_ddim) << "learned " << err_learned << " vs DDIM " << err_ddim;
  std::cout << "single Gaussian: mean squared residual error (eps units) learned " << err_learned << ", DDIM "
            << err_ddim << "\n";
}

// Joint training lowers the unrolled error, and stopping, saving and resuming reproduces the
// uninterrupted run bit for bit (both heads, EMAs, AdamW, RNGs, data order, sampled budgets).
TEST(MicroTrainer, JointLossDecreasesAndResumeIsExact) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  auto data = fs::dense_trajectories(model, small_spec(4, 64), "mixture(4, 3, 5)");
  auto o = small_options(fs::MicroMode::Joint);
  o.heads.history = true;  // the history path of the unrolled step, too
  o.optimizer.schedule.total_steps = 8;
  const std::string dir = scratch_dir("micro", "resume");
  fs::TrainLoopOptions quiet;
  quiet.progress = false;

  fs::MicroTrainer straight(model, "mixture", data, o);
  straight.train(8, quiet);

  fs::MicroTrainer first(model, "mixture", data, o);
  first.train(4, quiet);
  first.save_checkpoint(dir + "/ckpt.pt");
  fs::MicroTrainer resumed(model, "mixture", data, o);
  ASSERT_TRUE(resumed.resume(dir + "/ckpt.pt"));
  EXPECT_EQ(resumed.step_count(), 4);
  resumed.train(4, quiet);
  expect_same_parameters(*straight.residual_head(), *resumed.residual_head());
  expect_same_parameters(*straight.step_size_head(), *resumed.step_size_head());
  // Another mode's checkpoint is refused, naming the setting.
  fs::MicroTrainer other(model, "mixture", data, small_options(fs::MicroMode::Residual));
  EXPECT_NE(value_error_message([&] { other.load_checkpoint(dir + "/ckpt.pt"); }).find("mode"), std::string::npos);

  // Loss decrease over a longer run with a fixed budget.
  auto longer = small_options(fs::MicroMode::Joint);
  longer.budget_min = longer.budget_max = 4;
  longer.optimizer.schedule.lr = 3e-3;
  longer.optimizer.schedule.total_steps = 150;
  fs::MicroTrainer trainer(model, "mixture", data, longer);
  const auto summary = trainer.train(150, quiet);
  double early = 0, late = 0;
  for (int i = 0; i < 15; ++i) early += summary.losses[i], late += summary.losses[summary.losses.size() - 1 - i];
  EXPECT_LT(late, 0.5 * early);
  std::filesystem::remove_all(dir);
}

// Learned coefficients (joint mode, no warm start) beat the rule they start from: on the mixture at a
// fixed budget of 4 steps, the trained sampler's error against the reference x_0 of held-out x_T falls
// well below the untrained one's (DEIS-2 in λ on the uniform log-SNR grid), with one to three previous
// evaluations, and the file keeps the head's kind and depth.
TEST(MicroTrainer, LearnedCoefficientsBeatDeis2AndRoundTrip) {
  CoefficientRunAtBudgetFour run;
  const auto& model = run.model;
  const at::Tensor& x_T = run.x_T;
  for (int64_t depth : {1, 2, 3}) {
    fs::MicroTrainer trainer(model, "mixture(4, 3, 5)", run.data, run.options(depth));
    const double untrained = run.error(trainer.sampler());
    trainer.train(150, run.quiet);
    const double trained = run.error(trainer.sampler());
    EXPECT_LT(trained, 0.5 * untrained) << "depth " << depth << ": trained " << trained << " vs DEIS-2 " << untrained;
    std::cout << "mixture, 4 steps: median error learned coefficients (depth " << depth << ") " << trained
              << ", DEIS-2 " << untrained << "\n";

    const std::string dir = scratch_dir("micro", "coefficients");
    trainer.sampler().save(dir + "/micro.pt");
    const auto loaded = fs::MicroSampler::load(dir + "/micro.pt");
    EXPECT_EQ(loaded->info().heads.residual_kind, "coefficients");
    EXPECT_EQ(loaded->info().heads.history_depth, depth);
    EXPECT_TRUE(at::allclose(loaded->sample(model, x_T, 4).x, trainer.sampler().sample(model, x_T, 4).x, 1e-6, 1e-6));
    std::filesystem::remove_all(dir);
  }
}

// The robust statistics of the end-point errors (MicroTrainerOptions::loss) train too: from DEIS-2 the
// coefficient head at a fixed budget of 4 falls well below it with "rms" and "log-rms" as with "mse",
// and the reported loss is the statistic (positive, of the size of an RMS error, not its square).
// Unknown names, and a robust loss in residual mode, are refused by name.
TEST(MicroTrainer, RobustLossesTrainAndAreValidated) {
  CoefficientRunAtBudgetFour run;
  for (const char* loss : {"rms", "log-rms"}) {
    auto o = run.options(2);
    o.loss = loss;
    fs::MicroTrainer trainer(run.model, "mixture(4, 3, 5)", run.data, o);
    const double untrained = run.error(trainer.sampler());
    const auto first = trainer.step();
    // Per-coordinate RMS errors of a 4-step DEIS-2 run on the mixture: ~1e-2, where the MSE is ~1e-4.
    EXPECT_GT(first.loss, 1e-3) << loss;
    EXPECT_LT(first.loss, 1.0) << loss;
    trainer.train(149, run.quiet);
    const double trained = run.error(trainer.sampler());
    EXPECT_LT(trained, 0.5 * untrained) << loss << ": trained " << trained << " vs DEIS-2 " << untrained;
  }
  auto bad = small_options(fs::MicroMode::Joint);
  bad.loss = "l1";
  EXPECT_NE(value_error_message([&] { bad.validate(); }).find("loss must be 'mse', 'rms' or 'log-rms', got 'l1'"),
            std::string::npos);
  bad = small_options(fs::MicroMode::Residual);
  bad.loss = "rms";
  EXPECT_NE(value_error_message([&] { bad.validate(); }).find("unrolled modes"), std::string::npos);
}

// The hybrid head (coefficients + a network of the sample) started from a trained coefficient sampler is
// that sampler exactly (its network part is zero), and training it on the same unrolled runs lowers the
// held-out error further: the network adds what a rule of the step alone cannot express. Its file keeps
// the kind, its flops are its two parts', and a coefficient sampler with other settings cannot start it.
TEST(MicroTrainer, HybridStartsAtItsCoefficientSamplerAndImprovesOnIt) {
  CoefficientRunAtBudgetFour run;
  const auto& model = run.model;
  const at::Tensor& x_T = run.x_T;
  const auto o = run.options(2);
  fs::MicroTrainer rule(model, "mixture(4, 3, 5)", run.data, o);
  rule.train(150, run.quiet);
  const auto start = std::make_shared<fs::MicroSampler>(rule.sampler());
  const double rule_error = run.error(*start);

  auto hybrid_options = o;
  hybrid_options.heads.residual_kind = "hybrid";
  hybrid_options.optimizer.schedule.lr = 1e-3;
  fs::MicroTrainer hybrid(model, "mixture(4, 3, 5)", run.data, hybrid_options, start);
  EXPECT_LT((hybrid.sampler().sample(model, x_T, 4).x - start->sample(model, x_T, 4).x).abs().max().item<double>(),
            1e-12);
  hybrid.train(150, run.quiet);
  const double hybrid_error = run.error(hybrid.sampler());
  EXPECT_LT(hybrid_error, 0.8 * rule_error) << "hybrid " << hybrid_error << " vs its coefficient rule " << rule_error;
  std::cout << "mixture, 4 steps: median error hybrid " << hybrid_error << ", the coefficient rule it started from "
            << rule_error << "\n";

  const std::string dir = scratch_dir("micro", "hybrid");
  hybrid.sampler().save(dir + "/micro.pt");
  const auto loaded = fs::MicroSampler::load(dir + "/micro.pt");
  EXPECT_EQ(loaded->info().heads.residual_kind, "hybrid");
  EXPECT_TRUE(at::allclose(loaded->sample(model, x_T, 4).x, hybrid.sampler().sample(model, x_T, 4).x, 1e-6, 1e-6));
  std::filesystem::remove_all(dir);

  const fs::MicroHeadConfig heads = loaded->info().heads;
  auto coefficients = heads, network = heads;
  coefficients.residual_kind = "coefficients";
  network.residual_kind = "network";
  EXPECT_EQ(fs::residual_head_flops(heads),
            fs::residual_head_flops(coefficients) + fs::residual_head_flops(network));
  auto other = hybrid_options;
  other.heads.history_depth = 1;
  const std::string message =
      value_error_message([&] { fs::MicroTrainer(model, "mixture", run.data, other, start); });
  EXPECT_NE(message.find("history_depth=2"), std::string::npos) << message;

  // A deeper head (coefficients or hybrid) starts at the same sampler too: the weights of the third
  // evaluation's inputs start at zero. Without history on both sides the base term differs: refused.
  for (const char* kind : {"coefficients", "hybrid"}) {
    auto deeper = hybrid_options;
    deeper.heads.residual_kind = kind;
    deeper.heads.history_depth = 3;
    fs::MicroTrainer grown(model, "mixture(4, 3, 5)", run.data, deeper, start);
    EXPECT_LT((grown.sampler().sample(model, x_T, 4).x - start->sample(model, x_T, 4).x).abs().max().item<double>(),
              1e-12)
        << kind;
    EXPECT_EQ(grown.sampler().info().heads.history_depth, 3);
  }
  fs::MicroHeadConfig plain = start->info().heads, deep = plain;
  plain.history = false;
  plain.history_depth = 1;
  EXPECT_FALSE(deep.can_start_from(plain));
  EXPECT_FALSE(plain.can_start_from(deep));
}

// Residual mode at history_depth 2 and 3 (local regression; each evaluation further back is drawn as
// far back again): the loss falls, and resuming reproduces the uninterrupted run bit for bit.
TEST(MicroTrainer, ResidualModeWithDeepHistoryLearnsAndResumesExactly) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  auto data = fs::dense_trajectories(model, small_spec(4, 64), "mixture(4, 3, 5)");
  for (int64_t depth : {2, 3}) {
    SCOPED_TRACE("history_depth " + std::to_string(depth));
    auto o = small_options(fs::MicroMode::Residual);
    o.heads.history = true;
    o.heads.history_depth = depth;
    o.optimizer.schedule.lr = 3e-3;
    o.optimizer.schedule.total_steps = 200;
    fs::TrainLoopOptions quiet;
    quiet.progress = false;
    fs::MicroTrainer straight(model, "mixture", data, o);
    const auto summary = straight.train(200, quiet);
    double early = 0, late = 0;
    for (int i = 0; i < 20; ++i) early += summary.losses[i], late += summary.losses[summary.losses.size() - 1 - i];
    EXPECT_LT(late, 0.5 * early);

    const std::string dir = scratch_dir("micro", "depth" + std::to_string(depth));
    fs::MicroTrainer first(model, "mixture", data, o);
    first.train(100, quiet);
    first.save_checkpoint(dir + "/ckpt.pt");
    fs::MicroTrainer resumed(model, "mixture", data, o);
    ASSERT_TRUE(resumed.resume(dir + "/ckpt.pt"));
    resumed.train(100, quiet);
    expect_same_parameters(*straight.residual_head(), *resumed.residual_head());
    // A shallower run does not take the checkpoint, naming the setting.
    auto shallow = o;
    shallow.heads.history_depth = depth - 1;
    fs::MicroTrainer other(model, "mixture", data, shallow);
    EXPECT_NE(value_error_message([&] { other.load_checkpoint(dir + "/ckpt.pt"); }).find("history_depth"),
              std::string::npos);
    std::filesystem::remove_all(dir);
  }
}

// ---------------------------------------------------------------- files and teacher identity

TEST(MicroSampler, SaveLoadAndRefuseAnotherTeacher) {
  auto schedule = vp();
  auto model = fs::Denoiser::exact(mixture(), schedule);
  auto data = fs::dense_trajectories(model, small_spec(4, 32), "mixture(4, 3, 5)");
  auto o = small_options(fs::MicroMode::Joint);
  o.optimizer.schedule.total_steps = 3;
  fs::MicroTrainer trainer(model, "mixture(4, 3, 5)", data, o);
  fs::TrainLoopOptions quiet;
  quiet.progress = false;
  trainer.train(3, quiet);
  const std::string dir = scratch_dir("micro", "file");
  trainer.sampler().save(dir + "/micro.pt");
  const auto loaded = fs::MicroSampler::load(dir + "/micro.pt");
  EXPECT_EQ(loaded->info().mode, fs::MicroMode::Joint);
  EXPECT_EQ(loaded->info().teacher, "mixture(4, 3, 5)");
  const at::Tensor x_T = at::randn({5, 4}, generator(1));
  const auto a = trainer.sampler().sample(model, x_T, 6), b = loaded->sample(model, x_T, 6);
  EXPECT_TRUE(at::allclose(a.x, b.x, 1e-6, 1e-6));

  // Another teacher (another mixture), through the sampler and through the registered solver.
  auto other = fs::Denoiser::exact(fs::GaussianMixture::random(4, 3, /*seed=*/6), schedule);
  std::string msg = value_error_message([&] { loaded->sample(other, x_T, 6); });
  EXPECT_NE(msg.find("different teacher"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mixture(4, 3, 5)"), std::string::npos) << msg;
  msg = value_error_message([&] {
    fs::sample(other, x_T, "micro", 6, fs::Spacing::LogSNR, {{"path", dir + "/micro.pt"}});
  });
  EXPECT_NE(msg.find("different teacher"), std::string::npos) << msg;
  // The same teacher works through the registered solver, which is the same sampler (both heads: h_φ places
  // the steps), to the bit.
  const auto door = fs::sample(model, x_T, "micro", 6, fs::Spacing::LogSNR, {{"path", dir + "/micro.pt"}});
  EXPECT_EQ(door.nfe, 6);
  EXPECT_TRUE(at::equal(door.x, b.x));
  EXPECT_EQ(door.timesteps, b.timesteps);

  EXPECT_NE(value_error_message([&] { fs::MicroSampler::load(dir + "/missing.pt"); }).find("missing.pt"),
            std::string::npos);
  fs::save_network(*fs::make_step_size_head({{4}}, 0), dir + "/plain.pt");
  EXPECT_NE(value_error_message([&] { fs::MicroSampler::load(dir + "/plain.pt"); }).find("not a micro"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { fs::parse_micro_mode("both"); }).find("'both'"), std::string::npos);
  std::filesystem::remove_all(dir);
}
