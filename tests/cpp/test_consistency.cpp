// Consistency models: the exact boundary condition, the closed-form consistency function of a single
// Gaussian (zero CD loss with an exact teacher step, zero sCM tangent along the exact flow), sCM's tangent
// against a finite difference along the flow, curricula, the `consistency` sampler, loss decrease and
// convergence of ECT and sCD, shared dropout masks and exact resume.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/consistency.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/consistency_curriculum.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/train/consistency_trainer.h"
#include "fewstep/train/continuous_consistency.h"
#include "fewstep/models/denoiser.h"
#include "test_util.h"

namespace {

using fewstep::ConsistencyParameterization;
using fewstep::ConsistencyTrainer;
using fewstep::ConsistencyTrainerOptions;
using fewstep::ScriptNet;
using fewstep::testing::generator;

constexpr double kSigmaData = 0.5;
const std::vector<double> kMean = {0.5, -1.0};
const std::vector<double> kVar = {0.25, 1.5};

at::Tensor mean() { return at::tensor(kMean, at::kDouble); }
at::Tensor var() { return at::tensor(kVar, at::kDouble); }

// F* for the VE schedule: the network whose consistency function is the exact flow map of N(mean, var)
// to the boundary ε, f*(x, t) = μ + √(s² + ε²)/√(s² + t²) (x − μ). The network sees u = c_in x and t,
// so it undoes c_in = 1/√(t² + σ_d²) and returns (f* − c_skip x)/c_out (0 at t = ε, where c_out = 0).
ScriptNet exact_gaussian_net(double eps, double mean_shift = 0.0) {
  auto m = std::make_shared<torch::jit::Module>("__torch__.ExactGaussianConsistency");
  m->register_parameter("mu", (mean() + mean_shift).requires_grad_(), false);
  m->register_buffer("var", var());
  m->register_attribute("eps", c10::FloatType::get(), eps);
  m->register_attribute("sd", c10::FloatType::get(), kSigmaData);
  m->define(R"(
def forward(self, u: Tensor, t: Tensor) -> Tensor:
    t = t.unsqueeze(1)
    x = u * torch.sqrt(t * t + self.sd * self.sd)
    f = self.mu + torch.sqrt(self.var + self.eps * self.eps) / torch.sqrt(self.var + t * t) * (x - self.mu)
    d = t - self.eps
    c_skip = self.sd * self.sd / (d * d + self.sd * self.sd)
    c_out = self.sd * d / torch.sqrt(t * t + self.sd * self.sd)
    safe = torch.where(c_out > 0, c_out, torch.ones_like(c_out))
    return torch.where(c_out > 0, (f - c_skip * x) / safe, torch.zeros_like(x))
)");
  return m;
}

// The exact ε of N(mean, var) on VE (network time input t = σ): ε = σ (x − μ)/(s² + σ²).
ScriptNet exact_gaussian_eps(at::ScalarType dtype) {
  auto m = std::make_shared<torch::jit::Module>("__torch__.ExactGaussianEps");
  m->register_buffer("mu", mean().to(dtype));
  m->register_buffer("var", var().to(dtype));
  m->define(R"(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    t = t.unsqueeze(1)
    return t * (x - self.mu) / (self.var + t * t)
)");
  return m;
}

// A teacher "solver" that moves x along the exact flow of N(mean, var): CD's target is then exact.
class ExactGaussianFlow final : public fewstep::Stepper {
 public:
  const fewstep::StepperTraits& traits() const override {
    static const fewstep::StepperTraits t = fewstep::StepperTraits::named("exact_gaussian_flow", "test only").with_order(99);
    return t;
  }
  fewstep::StepResult step(fewstep::ModelEvaluator& model, const at::Tensor& x, double s, double t,
                           fewstep::SolverState state, const fewstep::StepContext&) const override {
    at::Tensor y = fewstep::testing::single_gaussian_flow(model.schedule(), x, mean(), var(), s, t).to(x.dtype());
    return {y, y, std::nullopt, std::move(state)};
  }
};

std::shared_ptr<fewstep::VE> ve() { return std::make_shared<fewstep::VE>(); }

std::shared_ptr<fewstep::BatchSource> gaussian_data(int64_t batch, uint64_t seed) {
  return std::make_shared<fewstep::MixtureData>(fewstep::testing::single_gaussian(mean(), var()), batch, seed,
                                                at::kDouble);
}

ConsistencyTrainerOptions cd_options() {
  ConsistencyTrainerOptions o;
  o.function.sigma_data = kSigmaData;
  o.num_points = 18;
  o.optimizer.schedule = {1e-3, 0, 40, 0.0};
  o.seed = 4;
  return o;
}

fewstep::MlpConfig tiny_mlp() {
  fewstep::MlpConfig c;
  c.dim = 2;
  c.hidden = 32;
  c.blocks = 1;
  c.time_frequencies = 8;
  c.time_embed_dim = 16;
  return c;
}

// ------------------------------------------------------------------------------------ function

TEST(ConsistencyFunction, BoundaryConditionHoldsExactly) {
  at::set_num_threads(1);
  std::vector<fewstep::SchedulePtr> schedules = {ve(), std::make_shared<fewstep::VPLinear>(),
                                                 std::make_shared<fewstep::VPCosine>()};
  ScriptNet net = fewstep::make_mlp(tiny_mlp(), 3);
  for (const auto& s : schedules) {
    ConsistencyParameterization p;
    const fewstep::ConsistencyScalings c = fewstep::consistency_scalings(*s, p, s->t_min());
    EXPECT_EQ(c.c_skip, 1.0);
    EXPECT_EQ(c.c_out, 0.0);
    for (auto dtype : {at::kFloat, at::kDouble}) {
      net->to(dtype);
      const at::Tensor x = at::randn({7, 2}, generator(1)).to(dtype) * 3.0;
      const at::Tensor f = fewstep::consistency_function(*net, *s, p, x, at::full({7}, s->t_min(), at::kDouble));
      EXPECT_TRUE(at::equal(f, x)) << s->repr();
      // Away from the boundary the network matters.
      const at::Tensor g = fewstep::consistency_function(*net, *s, p, x, at::full({7}, 0.5, at::kDouble));
      EXPECT_FALSE(at::allclose(g, x));
    }
  }
}

TEST(ConsistencyFunction, ScalingsAreThePapersOnVE) {
  auto s = ve();
  ConsistencyParameterization p;
  p.sigma_data = kSigmaData;
  const double eps = s->t_min(), sd = kSigmaData;
  for (double t : {0.01, 0.5, 2.0, 80.0}) {
    const fewstep::ConsistencyScalings c = fewstep::consistency_scalings(*s, p, t);
    EXPECT_NEAR(c.c_skip, sd * sd / ((t - eps) * (t - eps) + sd * sd), 1e-15);
    EXPECT_NEAR(c.c_out, sd * (t - eps) / std::sqrt(t * t + sd * sd), 1e-15);
    EXPECT_NEAR(c.c_in, 1.0 / std::sqrt(t * t + sd * sd), 1e-15);
  }
  // VP: the same at σ̃ = σ/α, with the input normalised by x_t's own standard deviation.
  auto vp = std::make_shared<fewstep::VPLinear>();
  const double t = 0.4, a = vp->alpha(t), sg = vp->sigma(t);
  EXPECT_NEAR(fewstep::consistency_scalings(*vp, p, t).c_in, 1.0 / std::sqrt(sg * sg + a * a * sd * sd), 1e-15);
  EXPECT_THROW(fewstep::consistency_scalings(*s, p, 100.0), c10::ValueError);
}

// ------------------------------------------------------------------------------------ closed form

TEST(ConsistencyDistillation, ExactConsistencyFunctionHasZeroLossWithAnExactTeacherStep) {
  at::set_num_threads(1);
  auto schedule = ve();
  ConsistencyTrainerOptions o = cd_options();
  o.teacher_stepper = std::make_shared<ExactGaussianFlow>();
  const at::Tensor x0 = gaussian_data(256, 9)->next().x;
  for (auto distance : {fewstep::ConsistencyDistance::L2, fewstep::ConsistencyDistance::L1,
                        fewstep::ConsistencyDistance::PseudoHuber}) {
    o.distance = distance;
    ConsistencyTrainer exact(exact_gaussian_net(schedule->t_min()), schedule, gaussian_data(64, 1), o,
                             fewstep::make_mlp(tiny_mlp(), 0));
    // float64 round-off of f* (values ~1, 18 levels up to σ = 80): far below any real inconsistency.
    EXPECT_LT(exact.loss_on(x0, 3), distance == fewstep::ConsistencyDistance::L2 ? 1e-24 : 1e-11)
        << fewstep::to_string(distance);
    ConsistencyTrainer wrong(exact_gaussian_net(schedule->t_min(), 0.05), schedule, gaussian_data(64, 1), o,
                             fewstep::make_mlp(tiny_mlp(), 0));
    EXPECT_GT(wrong.loss_on(x0, 3), 1e-6) << fewstep::to_string(distance);
  }
  // With the library's heun step the teacher is only approximately exact: small, not zero.
  o.teacher_stepper = nullptr;
  o.distance = fewstep::ConsistencyDistance::L2;
  std::shared_ptr<fewstep::GaussianMixture> g = fewstep::testing::single_gaussian(mean(), var());
  // With the library's heun step (on the exact-score teacher) the loss of the exact function is the
  // teacher's local error: Heun's is O(h³) per step, so the squared distance falls like h⁶ — at least
  // 16× (order 2 in the loss) when the levels double, and it is far below a wrong function's loss.
  ScriptNet teacher = exact_gaussian_eps(at::kDouble);
  std::vector<double> losses;
  for (int64_t n : {18, 36}) {
    o.num_points = n;
    ConsistencyTrainer heun(exact_gaussian_net(schedule->t_min()), schedule, gaussian_data(64, 1), o, teacher);
    losses.push_back(heun.loss_on(x0, 3));
  }
  EXPECT_GT(losses[0], 0.0);
  EXPECT_LT(losses[1], losses[0] / 16.0) << losses[0] << " -> " << losses[1];
  ConsistencyTrainer wrong(exact_gaussian_net(schedule->t_min(), 0.5), schedule, gaussian_data(64, 1), o, teacher);
  EXPECT_LT(losses[1], 0.01 * wrong.loss_on(x0, 3));
}

// ------------------------------------------------------------------------------------ curricula

TEST(ConsistencyCurriculum, ValuesMatchTheFormulas) {
  fewstep::CtCurriculum ct;  // s0 = 2, s1 = 150, μ0 = 0.9
  ct.total_steps = 1000;
  EXPECT_EQ(ct.points(0), 2);      // ⌈√(s0²) − 1⌉ + 1 = s0
  EXPECT_EQ(ct.points(500), 107);  // ⌈√(½ (151² − 4) + 4) − 1⌉ + 1 = ⌈105.78⌉ + 1
  EXPECT_EQ(ct.points(1000), 151);  // s1 + 1
  EXPECT_NEAR(ct.target_ema(500), 0.9980325824752019, 1e-15);  // exp(2 ln 0.9 / 107)
  EXPECT_NEAR(ct.target_ema(0), 0.9, 1e-15);                    // μ0 at N = s0

  fewstep::IctCurriculum ict;  // s0 = 10, s1 = 1280: ⌊log2 128⌋ + 1 = 8 stages, K' = 800 / 8 = 100
  ict.total_steps = 800;
  EXPECT_EQ(ict.points(0), 11);
  EXPECT_EQ(ict.points(99), 11);
  EXPECT_EQ(ict.points(100), 21);
  EXPECT_EQ(ict.points(250), 41);
  EXPECT_EQ(ict.points(799), 1281);
  EXPECT_EQ(ict.points(5000), 1281);

  // iCT's lognormal over the levels: a distribution, heaviest where ln σ is near P_mean = −1.1.
  std::vector<double> sigmas;
  for (int i = 0; i <= 40; ++i) sigmas.push_back(std::exp(-6.0 + 0.3 * i));
  const std::vector<double> p = fewstep::lognormal_index_probabilities(sigmas);
  double total = 0.0;
  size_t best = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_GT(p[i], 0.0);
    total += p[i];
    if (p[i] > p[best]) best = i;
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_NEAR(0.5 * (std::log(sigmas[best]) + std::log(sigmas[best + 1])), -1.1, 0.3);
  EXPECT_THROW(fewstep::lognormal_index_probabilities({1.0}), c10::ValueError);
}

// ------------------------------------------------------------------------------------ sampler

TEST(ConsistencySampler, OneStepIsTheFlowMapAndMultistepSamplesTheData) {
  at::set_num_threads(1);
  auto schedule = ve();
  ConsistencyParameterization p;
  p.sigma_data = kSigmaData;
  const fewstep::Denoiser model = fewstep::consistency_denoiser(exact_gaussian_net(schedule->t_min()), schedule, p);
  const auto stepper = fewstep::solver("consistency");
  EXPECT_TRUE(stepper->traits().stochastic);
  const at::Tensor x_T = at::randn({4000, 2}, generator(2), at::kDouble) * schedule->t_max() + mean();
  fewstep::SampleOptions so;
  so.generator = generator(5);
  const std::vector<double> one = {schedule->t_max(), schedule->t_min()};
  const fewstep::Solution a = fewstep::sample(model, x_T, *stepper, one, so);
  EXPECT_EQ(a.nfe, 1);
  const at::Tensor flow =
      fewstep::testing::single_gaussian_flow(*schedule, x_T, mean(), var(), schedule->t_max(), schedule->t_min());
  EXPECT_LT((a.x - flow).abs().max().item<double>(), 1e-10);

  // Three steps with re-noising: the output is exactly N(μ, s² + ε²) in distribution.
  const std::vector<double> three = {schedule->t_max(), 2.0, 0.5, schedule->t_min()};
  so.generator = generator(6);
  const fewstep::Solution b = fewstep::sample(model, x_T, *stepper, three, so);
  EXPECT_EQ(b.nfe, 3);
  const double n = static_cast<double>(x_T.size(0));
  const at::Tensor m = b.x.mean(0), v = b.x.var(0);
  for (int j = 0; j < 2; ++j) {
    const double want_var = kVar[j] + schedule->t_min() * schedule->t_min();
    EXPECT_NEAR(m[j].item<double>(), kMean[j], 4.0 * std::sqrt(want_var / n)) << j;
    EXPECT_NEAR(v[j].item<double>(), want_var, 4.0 * want_var * std::sqrt(2.0 / n)) << j;
  }
}

// The sampling grid starts at the time whose σ/α is the requested level, re-noises at the
// intermediate levels and ends at the boundary; a start above the schedule's top is its t_max.
TEST(ConsistencySampler, GridStartsAtTheRequestedNoiseLevel) {
  const fewstep::VPLinear vp;
  const std::vector<double> g = fewstep::consistency_timesteps(vp, 80.0, {2.0});
  ASSERT_EQ(g.size(), 3u);
  EXPECT_NEAR(vp.sigma_tilde(g[0]), 80.0, 80.0 * 1e-9);
  EXPECT_NEAR(vp.sigma_tilde(g[1]), 2.0, 2.0 * 1e-9);
  EXPECT_EQ(g[2], vp.t_min());
  EXPECT_GT(vp.sigma_tilde(vp.t_max()), 80.0);  // VP linear reaches ≈ 152, so 80 starts inside
  EXPECT_EQ(fewstep::consistency_timesteps(vp, 1000.0), (std::vector<double>{vp.t_max(), vp.t_min()}));
  EXPECT_EQ(fewstep::consistency_timesteps(vp, std::nullopt), (std::vector<double>{vp.t_max(), vp.t_min()}));
  EXPECT_EQ(fewstep::consistency_timesteps(vp, 80.0, {}, 0.01).back(), 0.01);
  const auto s = ve();  // VE: σ/α = t
  EXPECT_NEAR(fewstep::consistency_timesteps(*s, 10.0, {0.8})[0], 10.0, 1e-9);
  EXPECT_NEAR(fewstep::consistency_timesteps(*s, 10.0, {0.8})[1], 0.8, 1e-12);
  EXPECT_EQ(fewstep::consistency_timesteps(*s, 1e6)[0], s->t_max());
  const auto names = [](auto call, const std::string& what) {
    return fewstep::testing::value_error_message(call).find(what) != std::string::npos;
  };
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 0.0); }, "start_sigma"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, NAN); }, "start_sigma"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 80.0, {100.0}); }, "intermediate_sigmas[0]=100"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 80.0, {2.0, 3.0}); }, "intermediate_sigmas[1]=3"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 80.0, {}, 2.0); }, "t_end=2"));
  // Without a start (or above the top) the start level is the schedule's top.
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, std::nullopt, {200.0}); },
                    "intermediate_sigmas[0]=200 must be positive and below the start level (152.1"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 1000.0, {200.0}); }, "below the start level (152.1"));
  EXPECT_TRUE(names([&] { fewstep::consistency_timesteps(vp, 80.0, {1e-4}); },
                    "intermediate_sigmas[0]=0.0001 is not above the level of t_end"));
}

// ------------------------------------------------------------------------------------ ECT

// The Gaussian family f(x, t) = m + √(v + ε²)/√(v + t²) (x − m) with learnable m and log v: it holds
// the exact flow map of N(mean, var) (m = μ, v = s²), started here away from it.
ScriptNet gaussian_family_net(double eps, double mean_shift, double var_factor) {
  auto m = std::make_shared<torch::jit::Module>("__torch__.GaussianFamilyConsistency");
  m->register_parameter("mu", (mean() + mean_shift).requires_grad_(), false);
  m->register_parameter("lv", (var() * var_factor).log().requires_grad_(), false);
  m->register_attribute("eps", c10::FloatType::get(), eps);
  m->register_attribute("sd", c10::FloatType::get(), kSigmaData);
  m->define(R"(
def forward(self, u: Tensor, t: Tensor) -> Tensor:
    t = t.unsqueeze(1)
    v = torch.exp(self.lv)
    x = u * torch.sqrt(t * t + self.sd * self.sd)
    f = self.mu + torch.sqrt(v + self.eps * self.eps) / torch.sqrt(v + t * t) * (x - self.mu)
    d = t - self.eps
    c_skip = self.sd * self.sd / (d * d + self.sd * self.sd)
    c_out = self.sd * d / torch.sqrt(t * t + self.sd * self.sd)
    safe = torch.where(c_out > 0, c_out, torch.ones_like(c_out))
    return torch.where(c_out > 0, (f - c_skip * x) / safe, torch.zeros_like(x))
)");
  return m;
}

// The mapping function of arXiv 2406.14548: stage 0 pairs small t with r = 0 (the data), and the gap
// shrinks by q per stage.
TEST(EasyConsistencyTuning, MappingFunction) {
  fewstep::EctCurriculum c;
  c.total_steps = 800;  // 8 stages of 100 steps
  EXPECT_EQ(c.stage(0), 0);
  EXPECT_EQ(c.stage(99), 0);
  EXPECT_EQ(c.stage(100), 1);
  EXPECT_EQ(c.stage(5000), 7);
  EXPECT_EQ(c.r(0.5, 0), 0.0);  // 1 − (1 + 8 sigmoid(−0.5))/2 < 0
  const double n = 1.0 + 8.0 / (1.0 + std::exp(10.0));
  EXPECT_DOUBLE_EQ(c.r(10.0, 0), 10.0 * (1.0 - n / 2.0));
  EXPECT_DOUBLE_EQ(c.r(10.0, 700), 10.0 * (1.0 - n / 256.0));
  for (double t : {0.01, 0.3, 2.0, 40.0}) {
    double prev_gap = t;
    for (int64_t k = 0; k < 800; k += 100) {
      const double gap = t - c.r(t, k);
      EXPECT_LE(gap, prev_gap + 1e-15) << t << " " << k;
      EXPECT_GT(gap, 0.0);
      prev_gap = gap;
    }
  }
}

// The mean squared error of the student's one-step map from t_max against the exact PF-ODE flow map of
// N(mean, var) to the boundary, on 2000 fixed x_T.
double one_step_map_error(const ConsistencyTrainer& trainer, const fewstep::NoiseSchedule& schedule,
                          const ConsistencyParameterization& f) {
  const at::Tensor x_T = at::randn({2000, 2}, generator(7), at::kDouble) * schedule.t_max() + mean();
  const at::Tensor flow =
      fewstep::testing::single_gaussian_flow(schedule, x_T, mean(), var(), schedule.t_max(), schedule.t_min());
  at::NoGradGuard no_grad;
  const at::Tensor one_step = fewstep::consistency_function(*trainer.student(), schedule, f, x_T,
                                                            at::full({x_T.size(0)}, schedule.t_max(), at::kDouble));
  return (one_step - flow).pow(2).mean().item<double>();
}

// On N(mean, var) with the Gaussian family: ECT's loss falls and the one-step map from t_max reaches
// the exact PF-ODE flow map (its mean squared error falls more than 20x).
TEST(EasyConsistencyTuning, LossFallsAndTheOneStepMapApproachesTheFlowMap) {
  at::set_num_threads(1);
  auto schedule = ve();
  ConsistencyTrainerOptions o;
  o.method = fewstep::ConsistencyMethod::EasyTuning;
  o.function.sigma_data = kSigmaData;
  o.distance = fewstep::ConsistencyDistance::PseudoHuber;
  const int64_t steps = 1200;
  o.ect.total_steps = steps;
  o.ect.stages = 6;
  o.optimizer.schedule = {2e-2, 0, steps, 1e-3};
  o.ema_decay = 0.0;  // the exported network is the student itself
  o.seed = 3;
  const auto make = [&] {
    return std::make_unique<ConsistencyTrainer>(gaussian_family_net(schedule->t_min(), 0.6, 3.0), schedule,
                                                gaussian_data(128, 2), o);
  };
  auto trainer = make();
  const auto map_error = [&](const ConsistencyTrainer& t) { return one_step_map_error(t, *schedule, o.function); };
  const at::Tensor held_out = gaussian_data(512, 99)->next().x;
  const double start_loss = trainer->loss_on(held_out, 5, steps - 1);
  const double start_error = map_error(*trainer);
  fewstep::TrainLoopOptions quiet;
  quiet.progress = false;
  trainer->train(steps, quiet);
  const double end_loss = trainer->loss_on(held_out, 5, steps - 1);
  const double end_error = map_error(*trainer);
  std::cerr << "[ info ] ECT: loss at the last stage " << start_loss << " -> " << end_loss
            << ", one-step map error " << start_error << " -> " << end_error << "\n";
  // The loss has a floor above 0: with one z per pair, f(x_t, t) − f(x_r, r) ≈ (t − r)(∂_t f + ∂_x f · z) is
  // not 0 even for the exact consistency function, so only a fall is asserted; the map is the real test.
  EXPECT_LT(end_loss, start_loss);
  EXPECT_LT(end_error, 0.05 * start_error);
}

// ------------------------------------------------------------------------------------ sCM

// sCM's target shift u = −κ df⁻/dt (train/continuous_consistency.h) against a central difference of
// f(x(t), t) along the exact flow of N(mean, var), for a generic network F (a random MLP), on VE and
// VP: checks the scalings' derivatives, the JVP, κ and the sign together. With c = 1e12 the
// normalisation is a known scale: û = u/(‖u‖ + c) ≈ u/c.
TEST(ContinuousConsistency, TangentIsMinusKappaTimesTheDerivativeAlongTheFlow) {
  at::set_num_threads(1);
  fewstep::MlpConfig config = tiny_mlp();
  config.time_multiplier = 1.0;  // F varies on the scale of t, so a difference step of 1e-5 t resolves it
  ScriptNet mlp = fewstep::make_mlp(config, 5);
  mlp->to(at::kDouble);
  mlp->eval();
  const fewstep::ConsistencyNetwork F = [mlp](const at::Tensor& x, const at::Tensor& t) {
    return fewstep::forward_network(*mlp, x, t, {}, {}, "test");
  };
  ConsistencyParameterization p;
  p.sigma_data = kSigmaData;
  for (const fewstep::SchedulePtr& schedule : std::vector<fewstep::SchedulePtr>{ve(), std::make_shared<fewstep::VPLinear>()}) {
    const fewstep::Denoiser exact = fewstep::Denoiser::exact(fewstep::testing::single_gaussian(mean(), var()), schedule);
    for (double frac : {0.02, 0.3, 0.7}) {
      const double t = schedule->t_min() + frac * (schedule->t_max() - schedule->t_min());
      const at::Tensor x = at::randn({16, 2}, generator(3), at::kDouble) * (schedule->sigma(t) + 1.0);
      const at::Tensor times = at::full({16}, t, at::kDouble);
      const at::Tensor dx_dt = fewstep::ode_velocity_from_eps(*schedule, x, exact(x, t).eps, times);
      const double c = 1e12;
      const fewstep::ScmTangent tan = fewstep::scm_tangent(F, *schedule, p, x, times, dx_dt, 1.0, c);
      const at::Tensor u = tan.target * c;  // ‖u‖ ≪ c
      const double h = 1e-5 * t;
      const auto f_at = [&](double s) {
        const at::Tensor xs = fewstep::testing::single_gaussian_flow(*schedule, x, mean(), var(), t, s);
        return fewstep::consistency_function(F, *schedule, p, xs, at::full({16}, s, at::kDouble));
      };
      const double st = schedule->sigma_tilde(t);
      const double kappa = std::sqrt(st * st + kSigmaData * kSigmaData) / (-st * schedule->dlambda_dt(t));
      const at::Tensor u_fd = -kappa * (f_at(t + h) - f_at(t - h)) / (2.0 * h);
      const double rel = ((u - u_fd).norm() / u_fd.norm()).item<double>();
      // O(h²) differencing and the host derivatives' ~1e-10: far below 1e-6 for a smooth F.
      EXPECT_LT(rel, 1e-6) << schedule->name() << " t = " << t;
      EXPECT_GT(u_fd.norm().item<double>(), 1e-3);  // a real derivative, not a vanishing one
      EXPECT_TRUE(at::allclose(tan.F_minus, F(tan.input, tan.time_input)));
    }
  }
}

// The exact consistency function of N(mean, var) is constant along the exact flow: with the exact ε
// teacher its sCD tangent (without warm-up) vanishes, and so does the loss; a wrong one's does not.
// (Draws below σ̃(t_min), clamped onto the boundary, are left out of the loss: f is the identity there.)
TEST(ContinuousConsistency, ExactConsistencyFunctionHasZeroTangentWithTheExactTeacher) {
  at::set_num_threads(1);
  auto schedule = ve();
  ConsistencyTrainerOptions o;
  o.method = fewstep::ConsistencyMethod::ScmDistillation;
  o.function.sigma_data = kSigmaData;
  o.scm.warmup_steps = 0;
  o.scm.adaptive_weight = false;
  o.optimizer.schedule = {1e-3, 0, 10, 0.0};
  const at::Tensor x0 = gaussian_data(256, 9)->next().x;
  ConsistencyTrainer exact(exact_gaussian_net(schedule->t_min()), schedule, gaussian_data(64, 1), o,
                           exact_gaussian_eps(at::kDouble));
  ConsistencyTrainer wrong(exact_gaussian_net(schedule->t_min(), 0.05), schedule, gaussian_data(64, 1), o,
                           exact_gaussian_eps(at::kDouble));
  const double zero = exact.loss_on(x0, 3), other = wrong.loss_on(x0, 3);
  std::cerr << "[ info ] sCD loss of the exact / a shifted consistency function: " << zero << " / " << other << "\n";
  // ‖û‖² ~ (‖u‖/c)² with ‖u‖ ~ 1e-10 (the host differences' error): ~1e-18, against the wrong one's O(0.01).
  EXPECT_LT(zero, 1e-12);
  EXPECT_GT(other, 1e-3);
}

// sCD and sCT on N(mean, var) with the Gaussian family started away from the flow map: the one-step
// map from t_max approaches the exact flow map. sCD's fixed point is the exact map (its tangent
// vanishes there); sCT's per-example tangent is a one-sample estimate, normalised per example, so its
// fixed point is only near it.
TEST(ContinuousConsistency, OneStepMapApproachesTheFlowMap) {
  at::set_num_threads(1);
  auto schedule = ve();
  for (auto method : {fewstep::ConsistencyMethod::ScmDistillation, fewstep::ConsistencyMethod::ScmTraining}) {
    ConsistencyTrainerOptions o;
    o.method = method;
    o.function.sigma_data = kSigmaData;
    const int64_t steps = 600;
    o.optimizer.schedule = {2e-2, 0, steps, 1e-3};
    o.ema_decay = 0.0;
    o.seed = 3;
    ConsistencyTrainer trainer(gaussian_family_net(schedule->t_min(), 0.6, 3.0), schedule, gaussian_data(128, 2), o,
                               method == fewstep::ConsistencyMethod::ScmDistillation ? exact_gaussian_eps(at::kDouble)
                                                                                     : nullptr);
    const auto map_error = [&] { return one_step_map_error(trainer, *schedule, o.function); };
    const double start = map_error();
    fewstep::TrainLoopOptions quiet;
    quiet.progress = false;
    trainer.train(steps, quiet);
    const double end = map_error();
    std::cerr << "[ info ] " << fewstep::to_string(method) << ": one-step map error " << start << " -> " << end << "\n";
    EXPECT_LT(end, (method == fewstep::ConsistencyMethod::ScmDistillation ? 0.01 : 0.1) * start)
        << fewstep::to_string(method);
  }
}

// ------------------------------------------------------------------------------------ training

TEST(ConsistencyDistillation, LossDecreases) {
  at::set_num_threads(1);
  auto schedule = ve();
  auto data = std::make_shared<fewstep::MixtureData>(fewstep::testing::single_gaussian(mean(), var()), 64, 1,
                                                     at::kFloat);
  ConsistencyTrainerOptions o = cd_options();
  o.num_points = 10;
  o.target_ema = 0.9;
  o.optimizer.schedule = {2e-3, 0, 300, 1e-4};
  fewstep::MlpConfig c = tiny_mlp();
  c.time_multiplier = 10.0;  // t = σ spans [0.002, 80]
  ConsistencyTrainer trainer(fewstep::make_mlp(c, 8), schedule, data, o, exact_gaussian_eps(at::kFloat));
  const at::Tensor held_out = gaussian_data(512, 99)->next().x.to(at::kFloat);
  const double start = trainer.loss_on(held_out, 5);
  fewstep::TrainLoopOptions quiet;
  quiet.progress = false;
  trainer.train(300, quiet);
  EXPECT_LT(trainer.loss_on(held_out, 5), 0.3 * start);
}

ScriptNet dropout_net() {
  auto m = std::make_shared<torch::jit::Module>("__torch__.DropoutNet");
  m->register_parameter("w", at::full({2}, 0.3, at::kDouble).requires_grad_(), false);
  m->register_attribute("training", c10::BoolType::get(), true);
  m->define(R"(
def forward(self, u: Tensor, t: Tensor) -> Tensor:
    return torch.dropout(u * self.w + t.unsqueeze(1), 0.5, self.training)
)");
  m->train();
  return m;
}

TEST(ConsistencyTraining, DropoutMasksComeFromAnExplicitSeed) {
  ScriptNet net = dropout_net();
  const at::Tensor u = at::ones({64, 2}, at::kDouble);
  const at::Tensor t = at::ones({64}, at::kDouble);
  auto run = [&] { return net->forward({u, t}).toTensor(); };
  const at::Tensor before = at::randn({3}, at::kDouble);  // advances the global generator
  at::Tensor probe_state = at::detail::getDefaultCPUGenerator().get_state();
  const at::Tensor a = fewstep::with_dropout_seed(11, run);
  const at::Tensor b = fewstep::with_dropout_seed(11, run);
  const at::Tensor c = fewstep::with_dropout_seed(12, run);
  EXPECT_TRUE(at::equal(a, b));   // same seed: same masks
  EXPECT_FALSE(at::equal(a, c));  // another seed: other masks
  EXPECT_TRUE(at::equal(at::detail::getDefaultCPUGenerator().get_state(), probe_state));  // global RNG untouched
}

std::unique_ptr<ConsistencyTrainer> small_trainer(fewstep::ConsistencyMethod method) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  auto gmm = fewstep::GaussianMixture::random(2, 3, 4);
  ConsistencyTrainerOptions o = cd_options();
  o.method = method;
  o.num_points = 8;
  o.ct.total_steps = 6;
  o.ct.s1 = 20;
  o.ict.total_steps = 6;
  o.ict.s0 = 4;
  o.ict.s1 = 16;
  o.ect.total_steps = 6;
  o.ect.stages = 3;  // the stage changes inside the resumed part
  o.distance = method == fewstep::ConsistencyMethod::ImprovedTraining || method == fewstep::ConsistencyMethod::EasyTuning
                   ? fewstep::ConsistencyDistance::PseudoHuber
                   : fewstep::ConsistencyDistance::L2;
  o.optimizer.schedule = {1e-3, 0, 6, 0.0};
  o.scm.warmup_steps = 4;  // the warm-up factor changes inside the resumed part
  ScriptNet teacher;
  if (method == fewstep::ConsistencyMethod::Distillation || method == fewstep::ConsistencyMethod::ScmDistillation) {
    teacher = fewstep::make_mlp(tiny_mlp(), 7);
    teacher->to(at::kDouble);
  }
  return std::make_unique<ConsistencyTrainer>(dropout_net(), schedule,
                                              std::make_shared<fewstep::MixtureData>(gmm, 16, 1, at::kDouble), o,
                                              teacher);
}

class ConsistencyResume : public ::testing::TestWithParam<std::string> {};

TEST_P(ConsistencyResume, ResumeIsBitExactWithEveryNetworkState) {
  at::set_num_threads(1);
  const fewstep::ConsistencyMethod method = fewstep::parse_consistency_method(GetParam());
  const std::string dir = fewstep::testing::scratch_dir("consistency", GetParam());
  const std::string ckpt = dir + "/ckpt.pt";
  auto full = small_trainer(method);
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) {
    losses.push_back(full->step().loss);
    if (i == 2) full->save_checkpoint(ckpt);
  }
  auto resumed = small_trainer(method);
  resumed->load_checkpoint(ckpt);
  EXPECT_EQ(resumed->step_count(), 3);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed->step().loss, losses[static_cast<size_t>(i)]) << i;
  for (const auto& [a, b] : {std::pair{full->student(), resumed->student()}, {full->target(), resumed->target()},
                             {full->ema_student(), resumed->ema_student()}}) {
    auto pa = a->parameters(true), pb = b->parameters(true);
    for (auto ia = pa.begin(), ib = pb.begin(); ia != pa.end(); ++ia, ++ib) EXPECT_TRUE(at::equal(*ia, *ib));
  }
  // N and μ follow the method's schedule.
  if (method == fewstep::ConsistencyMethod::Distillation) {
    EXPECT_EQ(full->points_at(5), 8);
  }
  if (method == fewstep::ConsistencyMethod::ImprovedTraining) {
    EXPECT_EQ(full->target_ema_at(3), 0.0);
  }
  // Another method's checkpoint is refused, naming the setting.
  auto other = small_trainer(method == fewstep::ConsistencyMethod::Training ? fewstep::ConsistencyMethod::Distillation
                                                                           : fewstep::ConsistencyMethod::Training);
  EXPECT_NE(fewstep::testing::value_error_message([&] { other->load_checkpoint(ckpt); }).find("method"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Methods, ConsistencyResume, ::testing::Values("cd", "ct", "ict", "ect", "scd", "sct"),
                         [](const auto& info) { return info.param; });

// Partial options (the Python keywords) take the method's paper distance unless one is named.
TEST(ConsistencyTrainer, DistanceDefaultsToTheMethodsOwn) {
  using fewstep::ConsistencyDistance;
  EXPECT_EQ(fewstep::default_consistency_distance(fewstep::ConsistencyMethod::EasyTuning),
            ConsistencyDistance::PseudoHuber);
  EXPECT_EQ(fewstep::default_consistency_distance(fewstep::ConsistencyMethod::ImprovedTraining),
            ConsistencyDistance::PseudoHuber);
  EXPECT_EQ(fewstep::default_consistency_distance(fewstep::ConsistencyMethod::Distillation), ConsistencyDistance::L2);
  EXPECT_EQ(fewstep::consistency_options_from_json(R"({"method": "ect"})").distance, ConsistencyDistance::PseudoHuber);
  EXPECT_EQ(fewstep::consistency_options_from_json(R"({"method": "ect", "distance": "l2"})").distance,
            ConsistencyDistance::L2);
  EXPECT_EQ(fewstep::consistency_options_from_json(R"({"method": "ct"})").distance, ConsistencyDistance::L2);
  EXPECT_EQ(fewstep::consistency_options_from_json("{}").distance, ConsistencyDistance::L2);  // cd
}

TEST(ConsistencyTrainer, BadInputNamesTheArgument) {
  auto schedule = std::make_shared<fewstep::VPLinear>();
  auto gmm = fewstep::GaussianMixture::random(2, 3, 4);
  auto data = std::make_shared<fewstep::MixtureData>(gmm, 16, 1, at::kDouble);
  ConsistencyTrainerOptions o = cd_options();
  EXPECT_NE(fewstep::testing::value_error_message([&] { ConsistencyTrainer(dropout_net(), schedule, data, o); })
                .find("needs a teacher"),
            std::string::npos);
  o.teacher_solver = "ddpm";
  EXPECT_NE(fewstep::testing::value_error_message([&] {
              ConsistencyTrainer(dropout_net(), schedule, data, o, fewstep::make_mlp(tiny_mlp(), 0));
            }).find("teacher_solver must be deterministic"),
            std::string::npos);
  EXPECT_NE(fewstep::testing::value_error_message([] { fewstep::parse_consistency_method("lcm"); }).find("'lcm'"),
            std::string::npos);
  o = cd_options();
  o.method = fewstep::ConsistencyMethod::ScmDistillation;
  EXPECT_NE(fewstep::testing::value_error_message([&] { ConsistencyTrainer(dropout_net(), schedule, data, o); })
                .find("(scd) needs a teacher"),
            std::string::npos);
  o.scm.tangent_c = 0.0;
  EXPECT_NE(fewstep::testing::value_error_message([&] { o.validate(); }).find("tangent_c"), std::string::npos);
  o = cd_options();
  o.num_points = 1;
  EXPECT_NE(fewstep::testing::value_error_message([&] { o.validate(); }).find("num_points"), std::string::npos);
}

}  // namespace
