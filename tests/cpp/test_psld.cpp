// PSLD: forward kernel vs an ODE solve of its moments and vs Monte Carlo of the SDE; the exact
// mixture's score vs autograd and its density vs a dense Gaussian; weak convergence of every
// sampler; one score evaluation per step for the reduced integrators; reduced = naive when its
// modifications are switched off; the HSM loss decreases.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/metrics/mmd.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/psld/hsm_loss.h"
#include "fewstep/psld/mixture.h"
#include "fewstep/psld/model.h"
#include "fewstep/psld/process.h"
#include "fewstep/psld/reference.h"
#include "fewstep/psld/sampler.h"
#include "fewstep/psld/splitting.h"
#include "fewstep/psld/training.h"
#include "test_util.h"

namespace fewstep {
namespace {

using testing::generator;
using testing::value_error_message;

// Moments of the forward SDE by RK4 on dμ/dB = Aμ, dΣ/dB = AΣ + ΣAᵀ + D (float64, 4000 steps).
struct Moments {
  double mx, mm;  // mean of (x, m) from (x_0, m_0) = (1, 0)
  Cov2 cov;       // from Σ_0 = diag(0, κM)
};
Moments moments_by_rk4(const PsldProcess& p, double b_end) {
  const double g = p.gamma(), n = p.nu(), mi = p.mass_inverse(), mass = p.mass();
  const double a11 = -g / 2, a12 = mi / 2, a21 = -0.5, a22 = -n / 2;
  using V = std::array<double, 5>;  // μx, μm, Σxx, Σxm, Σmm
  auto f = [&](const V& y) {
    const double xx = y[2], xm = y[3], mm = y[4];
    return V{a11 * y[0] + a12 * y[1], a21 * y[0] + a22 * y[1], 2 * (a11 * xx + a12 * xm) + g,
             a11 * xm + a12 * mm + a21 * xx + a22 * xm, 2 * (a21 * xm + a22 * mm) + mass * n};
  };
  V y{1, 0, 0, 0, p.config().kappa * mass};
  const int steps = 4000;
  const double h = b_end / steps;
  for (int i = 0; i < steps; ++i) {
    V k1 = f(y), y2, y3, y4;
    for (int j = 0; j < 5; ++j) y2[j] = y[j] + 0.5 * h * k1[j];
    V k2 = f(y2);
    for (int j = 0; j < 5; ++j) y3[j] = y[j] + 0.5 * h * k2[j];
    V k3 = f(y3);
    for (int j = 0; j < 5; ++j) y4[j] = y[j] + h * k3[j];
    V k4 = f(y4);
    for (int j = 0; j < 5; ++j) y[j] += h / 6 * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]);
  }
  return Moments{y[0], y[1], Cov2{y[2], y[3], y[4]}};
}

// One intra-op thread: the machine is shared and these tensors are small.
class SingleThread : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
const auto* const kSingleThread = ::testing::AddGlobalTestEnvironment(new SingleThread);

TEST(PsldProcess, DefaultsAreThePapersCifar10Values) {
  PsldProcess p;
  EXPECT_DOUBLE_EQ(p.gamma(), 0.01);
  EXPECT_DOUBLE_EQ(p.nu(), 4.01);
  EXPECT_NEAR(p.mass_inverse(), 4.0, 1e-12);  // critical damping (Γ − ν)²/4
  EXPECT_DOUBLE_EQ(p.beta(0.3), 8.0);
  EXPECT_DOUBLE_EQ(p.config().kappa, 0.04);
}

TEST(PsldProcess, KernelMatchesAnOdeSolveOfItsMoments) {
  // Critical (default), underdamped and overdamped M⁻¹, constant and linear β.
  std::vector<PsldConfig> configs(3);
  configs[1].mass_inverse = 9.0;
  configs[1].beta_min = 0.5;
  configs[1].beta_max = 12.0;
  configs[2].mass_inverse = 1.0;
  for (const auto& cfg : configs) {
    PsldProcess p(cfg);
    for (double t : {0.01, 0.2, 0.7, 1.0}) {
      const Moments ref = moments_by_rk4(p, p.beta_integral(t));
      const Mat2 phi = p.transition(p.beta_integral(t));
      const Cov2 c = p.kernel_covariance(t);
      EXPECT_NEAR(phi.a11, ref.mx, 1e-10) << cfg.repr() << " t=" << t;
      EXPECT_NEAR(phi.a21, ref.mm, 1e-10) << cfg.repr() << " t=" << t;
      EXPECT_NEAR(c.xx, ref.cov.xx, 1e-10) << cfg.repr() << " t=" << t;
      EXPECT_NEAR(c.xm, ref.cov.xm, 1e-10) << cfg.repr() << " t=" << t;
      EXPECT_NEAR(c.mm, ref.cov.mm, 1e-10) << cfg.repr() << " t=" << t;
    }
  }
  // The prior is stationary: Σ_t → diag(1, M).
  PsldProcess p;
  const Cov2 q = p.noise_covariance(60.0);
  EXPECT_NEAR(q.xx, 1.0, 1e-12);
  EXPECT_NEAR(q.xm, 0.0, 1e-12);
  EXPECT_NEAR(q.mm, p.mass(), 1e-12);
}

TEST(PsldProcess, KernelMomentsMatchMonteCarloOfTheSde) {
  // Euler–Maruyama of the forward SDE from x_0 = 0.7, m_0 ~ N(0, κM), 500 steps to t = 0.25
  // (B = 2); its weak bias is O(ν dB) ≈ 2e-2 relative to the moments, under a third of the 5-SE
  // tolerance (≈ 7e-2 relative at n = 10000).
  PsldProcess p;
  const int64_t n = 10000, steps = 500;
  const double t = 0.25, x0 = 0.7;
  auto g = generator(11);
  auto opts = at::TensorOptions().dtype(at::kDouble);
  auto x = at::full({n}, x0, opts);
  auto m = at::randn({n}, g, opts) * std::sqrt(p.config().kappa * p.mass());
  const double db = p.beta_integral(t) / steps;
  const double sx = std::sqrt(p.gamma() * db), sm = std::sqrt(p.mass() * p.nu() * db);
  for (int64_t i = 0; i < steps; ++i) {
    auto dx = (m * p.mass_inverse() - x * p.gamma()) * (0.5 * db) + at::randn({n}, g, opts) * sx;
    auto dm = (-x - m * p.nu()) * (0.5 * db) + at::randn({n}, g, opts) * sm;
    x = x + dx;
    m = m + dm;
  }
  const Mat2 phi = p.transition(p.beta_integral(t));
  const Cov2 c = p.kernel_covariance(t);
  const double nn = static_cast<double>(n);
  auto mx = x.mean().item<double>(), mm = m.mean().item<double>();
  auto dx = x - mx, dm = m - mm;
  const double vxx = dx.pow(2).mean().item<double>(), vxm = (dx * dm).mean().item<double>(),
               vmm = dm.pow(2).mean().item<double>();
  // Standard errors of sample means and (co)variances of a Gaussian: √(Σ_ii/n), √((Σ_ii Σ_jj + Σ_ij²)/n).
  EXPECT_NEAR(mx, phi.a11 * x0, 5 * std::sqrt(c.xx / nn));
  EXPECT_NEAR(mm, phi.a21 * x0, 5 * std::sqrt(c.mm / nn));
  EXPECT_NEAR(vxx, c.xx, 5 * std::sqrt(2 * c.xx * c.xx / nn));
  EXPECT_NEAR(vxm, c.xm, 5 * std::sqrt((c.xx * c.mm + c.xm * c.xm) / nn));
  EXPECT_NEAR(vmm, c.mm, 5 * std::sqrt(2 * c.mm * c.mm / nn));
}

TEST(PsldProcess, ScoreFromEpsIsTheKernelScore) {
  PsldProcess p;
  auto g = generator(3);
  auto x0 = at::randn({6, 3}, g, at::kDouble);
  auto eps = at::randn({6, 6}, g, at::kDouble);
  for (double t : {0.002, 0.3, 1.0}) {
    auto z = p.perturb(x0, eps, t);
    const Mat2 phi = p.transition(p.beta_integral(t));
    const Cov2 c = p.kernel_covariance(t);
    const double det = c.xx * c.mm - c.xm * c.xm;
    auto [zx, zm] = split_state(z, "test");
    auto rx = zx - x0 * phi.a11, rm = zm - x0 * phi.a21;
    auto want = at::cat({-(rx * c.mm - rm * c.xm) / det, -(rm * c.xx - rx * c.xm) / det}, 1);
    auto score = p.score_from_eps(eps, t);
    EXPECT_TRUE(at::allclose(score, want, 1e-9, 1e-9)) << "t=" << t;
    EXPECT_TRUE(at::allclose(p.eps_from_score(score, t), eps, 1e-9, 1e-9)) << "t=" << t;
  }
}

TEST(PsldProcess, BadConfigurationsNameTheField) {
  PsldConfig c;
  c.gamma = -1;
  EXPECT_NE(value_error_message([&] { PsldProcess p(c); }).find("gamma"), std::string::npos);
  c = PsldConfig{};
  c.kappa = 1.5;
  EXPECT_NE(value_error_message([&] { PsldProcess p(c); }).find("kappa"), std::string::npos);
  c = PsldConfig{};
  c.t_min = 2.0;
  EXPECT_NE(value_error_message([&] { PsldProcess p(c); }).find("t_min"), std::string::npos);
  PsldProcess p;
  EXPECT_NE(value_error_message([&] { p.kernel_cholesky(0.0); }).find("t=0"), std::string::npos);
  EXPECT_NE(value_error_message([&] { p.score_from_eps(at::zeros({2, 3}), 0.5); }).find("even channel"),
            std::string::npos);
}

std::shared_ptr<PsldMixture> small_mixture(uint64_t seed, int64_t dim, int64_t k) {
  return std::make_shared<PsldMixture>(GaussianMixture::random(dim, k, seed, false, 1.0, 0.02, 0.2), PsldProcess{});
}

TEST(PsldMixture, ScoreIsTheGradientOfItsLogDensity) {
  auto mix = small_mixture(5, 3, 2);
  auto g = generator(8);
  for (double t : {0.001, 0.05, 0.5, 1.0}) {
    auto z = mix->sample(5, t, g).requires_grad_(true);
    mix->log_prob(z, t).sum().backward();
    EXPECT_TRUE(at::allclose(mix->score(z.detach(), t), z.grad(), 1e-7, 1e-8)) << "t=" << t;
  }
}

TEST(PsldMixture, LogDensityMatchesTheDenseGaussianOfEachComponent) {
  auto mix = small_mixture(6, 3, 2);
  const auto& data = mix->data();
  const double t = 0.2;
  const auto& p = mix->process();
  const Mat2 phi = p.transition(p.beta_integral(t));
  const Cov2 c = p.kernel_covariance(t);
  auto g = generator(9);
  auto z = mix->sample(7, t, g);
  auto phiv = at::tensor({phi.a11, phi.a21}, at::kDouble).view({2, 1});
  auto sig = at::tensor({c.xx, c.xm, c.xm, c.mm}, at::kDouble).view({2, 2});
  auto eye = at::eye(3, at::kDouble);
  std::vector<at::Tensor> comps;
  for (int64_t k = 0; k < data.components(); ++k) {
    auto cov = at::kron(at::mm(phiv, phiv.t()), data.covariances()[k]) + at::kron(sig, eye);
    auto mean = at::cat({data.means()[k] * phi.a11, data.means()[k] * phi.a21});
    auto r = z - mean;
    auto quad = (r * at::linalg_solve(cov, r.t()).t()).sum(1);
    auto logdet = std::get<1>(at::linalg_slogdet(cov));
    comps.push_back(std::log(data.weights()[k].item<double>()) - 0.5 * quad - 0.5 * logdet -
                    3.0 * std::log(2 * M_PI));
  }
  auto want = at::logsumexp(at::stack(comps, 1), 1);
  EXPECT_TRUE(at::allclose(mix->log_prob(z, t), want, 1e-9, 1e-9));
}

TEST(PsldMixture, TweedieDenoisingIsThePosteriorMean) {
  // Single Gaussian data x_0 ~ N(μ, v): (x_0, z_t) is jointly Gaussian, E[x_0|z] = μ + v φᵀ K⁻¹ (z − φμ).
  const double mu = 0.4, v = 0.09, t = 0.1;
  auto mix = std::make_shared<PsldMixture>(testing::single_gaussian(at::full({1}, mu), at::full({1}, v)), PsldProcess{});
  const auto& p = mix->process();
  const Mat2 phi = p.transition(p.beta_integral(t));
  const Cov2 c = p.kernel_covariance(t);
  auto g = generator(4);
  auto z = mix->sample(9, t, g);
  const double k11 = v * phi.a11 * phi.a11 + c.xx, k12 = v * phi.a11 * phi.a21 + c.xm,
               k22 = v * phi.a21 * phi.a21 + c.mm, det = k11 * k22 - k12 * k12;
  auto [zx, zm] = split_state(z, "test");
  auto rx = zx - phi.a11 * mu, rm = zm - phi.a21 * mu;
  auto want = mu + v * (phi.a11 * (k22 * rx - k12 * rm) + phi.a21 * (k11 * rm - k12 * rx)) / det;
  auto got = p.denoise(z, mix->score(z, t), t);
  // z + Σ_t s cancels most of z (the score is large where Σ_t is small), so round-off is ~1e-8.
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-7);
}

// ---- samplers ----

// Closed-form affine score of 1-D Gaussian data N(μ, v) (the exact mixture's, without its overhead
// at large batches; PsldMixture's score is checked above): −K_t⁻¹ (z − φ μ).
PsldModel gaussian_score_model(const PsldProcess& p, double mu, double v) {
  return PsldModel::direct(
      [p, mu, v](const at::Tensor& z, double t) {
        const Mat2 phi = p.transition(p.beta_integral(t));
        const Cov2 c = p.kernel_covariance(t);
        const double k11 = v * phi.a11 * phi.a11 + c.xx, k12 = v * phi.a11 * phi.a21 + c.xm,
                     k22 = v * phi.a21 * phi.a21 + c.mm, det = k11 * k22 - k12 * k12;
        auto [zx, zm] = split_state(z, "gaussian score");
        auto rx = zx - phi.a11 * mu, rm = zm - phi.a21 * mu;
        return at::cat({-(k22 * rx - k12 * rm) / det, -(k11 * rm - k12 * rx) / det}, 1);
      },
      p, "1-D Gaussian");
}

NoiseSampler seeded_noise(uint64_t seed) { return NoiseSampler(generator(seed)); }

// The four placements of the two score terms (docs/psld.md, "Where the score terms go").
const std::vector<Options> kPlacements = {Options{{"score_x", std::string("A")}, {"score_m", std::string("O")}},
                                          Options{{"score_x", std::string("A")}, {"score_m", std::string("B")}},
                                          Options{{"score_x", std::string("O")}, {"score_m", std::string("O")}},
                                          Options{{"score_x", std::string("O")}, {"score_m", std::string("B")}}};

Options with(Options base, const Options& more) {
  for (const auto& [k, v] : more.values()) base.set(k, v);
  return base;
}

TEST(PsldSamplers, RegistryListsEverySamplerWithItsCost) {
  // Default split (s_x in A, s_m in O): naive OBA/BAO/OBAB evaluate for A and O, BAOAB for A, O, A.
  const std::map<std::string, int> nfe = {{"psld_em", 1},     {"psld_ode_euler", 1}, {"psld_ode_heun", 2},
                                          {"psld_noba", 2},   {"psld_nbao", 2},      {"psld_nobab", 2},
                                          {"psld_nbaoab", 3}, {"psld_roba", 1},      {"psld_rbao", 1},
                                          {"psld_robab", 1}};
  ASSERT_EQ(psld_sampler_names().size(), nfe.size());
  for (const auto& [name, per_step] : nfe) EXPECT_EQ(psld_sampler(name)->traits().nfe_per_step, per_step) << name;
  // Momentum score in B: OBAB's B, A, B and BAOAB's B, A, A, B evaluate; reduced OBAB carries one.
  const Options in_b{{"score_m", std::string("B")}};
  EXPECT_EQ(psld_sampler("psld_nobab", in_b)->traits().nfe_per_step, 3);
  EXPECT_EQ(psld_sampler("psld_nbaoab", in_b)->traits().nfe_per_step, 4);
  EXPECT_EQ(psld_sampler("psld_robab", in_b)->traits().extra_first_step, 1);
  EXPECT_EQ(psld_sampler("psld_robab")->traits().extra_first_step, 0);
  // Both scores in O: one evaluation per step for every word.
  EXPECT_EQ(psld_sampler("psld_nbaoab", kPlacements[2])->traits().nfe_per_step, 1);
  EXPECT_NE(value_error_message([] { psld_sampler("psld_nope"); }).find("psld_roba"), std::string::npos);
  EXPECT_NE(value_error_message([] { psld_sampler("psld_roba", {{"lambda_s", -1.0}}); }).find("lambda_s"),
            std::string::npos);
  EXPECT_NE(value_error_message([] { psld_sampler("psld_roba", {{"end_time", true}}); }).find("end_time"),
            std::string::npos);
  // end_time acts only on OBAB's carried evaluation for a final B that holds the momentum score.
  EXPECT_NE(value_error_message([] { psld_sampler("psld_robab", {{"end_time", true}}); }).find("end_time"),
            std::string::npos);
  EXPECT_NO_THROW(psld_sampler("psld_robab", with(in_b, {{"end_time", false}})));
  const std::string bad_x = value_error_message([] { psld_sampler("psld_noba", {{"score_x", std::string("B")}}); });
  EXPECT_NE(bad_x.find("score_x"), std::string::npos);
  EXPECT_NE(bad_x.find("'B'"), std::string::npos);
  EXPECT_NE(value_error_message([] { psld_sampler("psld_roba", {{"score_m", std::string("A")}}); }).find("score_m"),
            std::string::npos);
  // Options as the benchmark and the CLI read them from "key=value" text (core/options.h).
  EXPECT_EQ(std::get<std::string>(parse_option_value("B")), "B");
  EXPECT_EQ(std::get<int64_t>(parse_option_value("2")), 2);
  EXPECT_EQ(std::get<double>(parse_option_value("0.5")), 0.5);
  EXPECT_EQ(std::get<bool>(parse_option_value("false")), false);
  auto parsed = std::dynamic_pointer_cast<const PsldReducedSplitting>(
      psld_sampler("psld_roba", {{"lambda_s", parse_option_value("2")}, {"score_m", parse_option_value("B")}}));
  ASSERT_NE(parsed, nullptr);
  EXPECT_EQ(parsed->lambda_s(), 2.0);
  EXPECT_FALSE(parsed->placement().momentum_in_o);
}

TEST(PsldSamplers, ModelCallsPerRunAreCountedAndReducedOnesCallOncePerStep) {
  PsldProcess p;
  auto base = gaussian_score_model(p, 0.2, 0.3);
  int64_t calls = 0;
  auto counting = PsldModel::direct(
      [&](const at::Tensor& z, double t) {
        ++calls;
        return base.score(z, t);
      },
      p, "counting");
  auto z = p.prior_sample(4, {1}, generator(1), at::kDouble);
  const int64_t steps = 7;
  for (const auto& placement : kPlacements) {
    for (const auto& entry : registered_psld_samplers()) {
      const auto& name = entry.traits.name;
      const bool split = name.rfind("psld_n", 0) == 0 || name.rfind("psld_r", 0) == 0;
      calls = 0;
      auto sampler = psld_sampler(name, split ? placement : Options{});
      auto noise = seeded_noise(2);
      auto out = psld_sample(counting, z, *sampler, psld_grid(p, steps), noise);
      EXPECT_EQ(calls, out.nfe) << name;
      EXPECT_EQ(out.nfe, sampler->nfe_for_steps(steps) + 1) << name;  // + the denoising evaluation
    }
  }
  // The reduced integrators: one evaluation per step (OBAB with s_m in B: plus the first step's start).
  for (const auto& [name, options, extra] : std::vector<std::tuple<std::string, Options, int64_t>>{
           {"psld_roba", {}, 0}, {"psld_rbao", {}, 0}, {"psld_robab", {}, 0},
           {"psld_robab", Options{{"score_m", std::string("B")}}, 1}}) {
    calls = 0;
    auto noise = seeded_noise(2);
    psld_sample(counting, z, *psld_sampler(name, options), psld_grid(p, steps), noise, {false, false});
    EXPECT_EQ(calls, steps + extra) << name;
  }
}

TEST(PsldSamplers, ReducedWithoutItsModificationsIsTheNaiveIntegrator) {
  PsldProcess p;
  auto model = gaussian_score_model(p, -0.3, 0.2);
  auto z = p.prior_sample(64, {1}, generator(5), at::kDouble);
  const auto grid = psld_grid(p, 12);
  for (const auto& placement : kPlacements) {
    const bool carry = placement.get_string("score_m", "") == "B";  // OBAB's final B holds a score
    const std::vector<std::pair<std::string, Options>> pairs = {
        {"oba", with(placement, {{"reuse", false}, {"lambda_s", 1.0}})},
        {"bao", with(placement, {{"reuse", false}, {"lambda_s", 1.0}})},
        {"obab", carry ? with(placement, {{"reuse", false}, {"lambda_s", 1.0}, {"end_time", false}})
                       : with(placement, {{"reuse", false}, {"lambda_s", 1.0}})}};
    for (const auto& [scheme, off] : pairs) {
      const std::string label = scheme + " " + placement.get_string("score_x", "") + placement.get_string("score_m", "");
      auto n1 = seeded_noise(9), n2 = seeded_noise(9), n3 = seeded_noise(9);
      auto naive = psld_sample(model, z, *psld_sampler("psld_n" + scheme, placement), grid, n1);
      auto reduced_off = psld_sample(model, z, *psld_sampler("psld_r" + scheme, off), grid, n2);
      auto reduced = psld_sample(model, z, *psld_sampler("psld_r" + scheme, placement), grid, n3);
      EXPECT_EQ(naive.nfe, reduced_off.nfe) << label;
      EXPECT_LT((naive.z - reduced_off.z).abs().max().item<double>(), 1e-12) << label;
      // With both scores in O a step evaluates once anyway, so re-use changes nothing; in every
      // other split the reduced default is a different integrator (the comparison is not vacuous).
      const double change = (naive.z - reduced.z).abs().max().item<double>();
      if (placement.get_string("score_x", "") == "O" && placement.get_string("score_m", "") == "O") {
        EXPECT_LT(change, 1e-12) << label;
      } else {
        EXPECT_GT(change, 1e-6) << label;
      }
    }
  }
}

// |Δ mean| + |Δ var| of the samples' x against the exact marginal at t_min, from exact z at t_max.
struct WeakError {
  double error;
  double standard_error;
};
WeakError weak_error(const std::string& name, const Options& options, int64_t steps, int64_t n, uint64_t seed) {
  const double mu = 0.5, v = 0.04;
  PsldProcess p;
  auto model = gaussian_score_model(p, mu, v);
  auto mix = std::make_shared<PsldMixture>(testing::single_gaussian(at::full({1}, mu), at::full({1}, v)), p);
  auto z = mix->sample(n, p.t_max(), generator(seed));
  auto noise = seeded_noise(seed + 1);
  auto out = psld_sample(model, z, *psld_sampler(name, options), psld_grid(p, steps), noise, {false, false});
  const double t = p.t_min();
  const Mat2 phi = p.transition(p.beta_integral(t));
  const double var = v * phi.a11 * phi.a11 + p.kernel_covariance(t).xx;
  auto x = out.x.squeeze(1);
  const double dm = x.mean().item<double>() - phi.a11 * mu;
  const double dv = x.var().item<double>() - var;
  const double nn = static_cast<double>(n);
  return {std::abs(dm) + std::abs(dv), std::sqrt(var / nn) + var * std::sqrt(2 / nn)};
}

TEST(PsldSamplers, StochasticIntegratorsConvergeWeaklyAtFirstOrder) {
  // Global weak convergence over a whole run (the local order is checked exactly below; this
  // exercises stability and the score carried between steps). Weak order 1: the bias falls by ~4
  // from 40 to 160 steps; we require 2.5 (plus the Monte-Carlo allowance of 4 standard errors), a
  // bias at 40 steps that Monte Carlo resolves (else the test could not tell an integrator that
  // does not converge) and one that is bounded (40 steps are inside every scheme's stability region
  // here; docs/psld.md derives the step limits).
  const int64_t n = 20000;
  for (const auto& [name, options] : std::vector<std::pair<std::string, Options>>{
           {"psld_em", {}},
           {"psld_noba", {}},
           {"psld_roba", {}},
           {"psld_nbaoab", {}},
           {"psld_robab", Options{{"score_m", std::string("B")}}}}) {
    const auto coarse = weak_error(name, options, 40, n, 100);
    const auto fine = weak_error(name, options, 160, n, 200);
    const double mc = 4 * (coarse.standard_error + fine.standard_error);
    EXPECT_GT(coarse.error, mc) << name << ": bias at 40 steps below the Monte-Carlo resolution";
    EXPECT_LT(coarse.error, 0.5) << name;
    EXPECT_LT(fine.error, coarse.error / 2.5 + mc) << name << ": coarse " << coarse.error << ", fine " << fine.error;
  }
}

TEST(PsldReference, ExactStepLawTransportsTheMarginal) {
  // The reverse SDE carries p_s to p_t: pushing the Gaussian marginal at s = 0.6 through the exact
  // one-step law (an affine map Φ z + c plus covariance P, read off three starting points) gives the
  // marginal at t = 0.3, φ_t μ and φφᵀ v + Σ_t, to the RK4 accuracy.
  PsldProcess p;
  const double mu = 0.7, v = 0.3, s = 0.6, t = 0.3;
  auto model = gaussian_score_model(p, mu, v);
  const auto l0 = psld_affine_step_law(model, 0, 0, s, t), lx = psld_affine_step_law(model, 1, 0, s, t),
             lm = psld_affine_step_law(model, 0, 1, s, t);
  const double p11 = lx.mean_x - l0.mean_x, p12 = lm.mean_x - l0.mean_x, p21 = lx.mean_m - l0.mean_m,
               p22 = lm.mean_m - l0.mean_m;
  auto marginal = [&](double time) {
    const Mat2 phi = p.transition(p.beta_integral(time));
    const Cov2 c = p.kernel_covariance(time);
    return std::make_pair(std::array<double, 2>{phi.a11 * mu, phi.a21 * mu},
                          Cov2{v * phi.a11 * phi.a11 + c.xx, v * phi.a11 * phi.a21 + c.xm, v * phi.a21 * phi.a21 + c.mm});
  };
  const auto [ms, cs] = marginal(s);
  const auto [mt, ct] = marginal(t);
  EXPECT_NEAR(p11 * ms[0] + p12 * ms[1] + l0.mean_x, mt[0], 1e-9);
  EXPECT_NEAR(p21 * ms[0] + p22 * ms[1] + l0.mean_m, mt[1], 1e-9);
  // Φ Σ_s Φᵀ + P
  const double a_xx = p11 * cs.xx + p12 * cs.xm, a_xm = p11 * cs.xm + p12 * cs.mm;
  const double a_mx = p21 * cs.xx + p22 * cs.xm, a_mm = p21 * cs.xm + p22 * cs.mm;
  EXPECT_NEAR(a_xx * p11 + a_xm * p12 + l0.cov.xx, ct.xx, 1e-9);
  EXPECT_NEAR(a_xx * p21 + a_xm * p22 + l0.cov.xm, ct.xm, 1e-9);
  EXPECT_NEAR(a_mx * p21 + a_mm * p22 + l0.cov.mm, ct.mm, 1e-9);
  EXPECT_NE(value_error_message([&] { psld_affine_step_law(model, 0, 0, t, s); }).find("below"), std::string::npos);
}

TEST(PsldSamplers, LocalWeakErrorIsSecondOrderAgainstTheExactStepLaw) {
  // Weak order 1 means a local error of order 2 in the mean and covariance of one step: it falls
  // by 16 over two halvings of b (0.2 → 0.05); we require 8 (an order-1 local error would give 4),
  // with the Monte-Carlo allowance. Gaussian data, one standard deviation from the mean at s = 0.5.
  PsldProcess p;
  const double mu = 1.0, v = 0.05, s = 0.5;
  auto model = gaussian_score_model(p, mu, v);
  const Mat2 phi = p.transition(p.beta_integral(s));
  const Cov2 c = p.kernel_covariance(s);
  const double x0 = phi.a11 * mu + std::sqrt(v * phi.a11 * phi.a11 + c.xx);
  const double m0 = phi.a21 * mu + std::sqrt(v * phi.a21 * phi.a21 + c.mm);
  const int64_t n = 200000;
  std::vector<std::pair<std::string, Options>> samplers = {{"psld_em", {}}};
  for (const auto& placement : {kPlacements[0], kPlacements[1]}) {
    for (const std::string name : {"psld_noba", "psld_nbao", "psld_nobab", "psld_nbaoab", "psld_roba", "psld_rbao"}) {
      samplers.emplace_back(name, placement);
    }
  }
  // The exact law of one step (psld/reference.h) and the samplers' local errors against it.
  const double beta = p.beta(s);
  const auto law0 = psld_affine_step_law(model, x0, m0, s, s - 0.2 / beta);
  const auto law2 = psld_affine_step_law(model, x0, m0, s, s - 0.05 / beta);
  std::map<std::string, double> mean_error;  // at b = 0.2
  for (const auto& [name, options] : samplers) {
    auto sampler = psld_sampler(name, options);
    const std::string label = name + (options.has("score_m") ? " s_m in " + options.get_string("score_m", "") : "");
    auto noise0 = seeded_noise(7), noise2 = seeded_noise(7);
    const auto e0 = psld_local_error(model, *sampler, law0, x0, m0, s, s - 0.2 / beta, n, noise0);
    const auto e2 = psld_local_error(model, *sampler, law2, x0, m0, s, s - 0.05 / beta, n, noise2);
    const double coarse = e0.mean + e0.cov, fine = e2.mean + e2.cov;
    const double mc = 4 * (e0.mean_se + e0.cov_se + e2.mean_se + e2.cov_se);
    EXPECT_GT(fine, 4 * (e2.mean_se + e2.cov_se)) << label << ": error at b = 0.05 below the Monte-Carlo resolution";
    EXPECT_LT(fine, coarse / 8 + mc) << label << ": local error " << coarse << " at b = 0.2, " << fine << " at 0.05";
    mean_error[label] = e0.mean;
  }
  // Why the default split: with the momentum score in O, next to the momentum friction it
  // compensates, an OBA step has Euler–Maruyama's local error; with it in B the split separates the
  // large, cancelling ½ν m and Mν s_m terms, and the local error of the mean grows several-fold
  // (docs/psld.md eq. 12; about 1.05× and 6.6× here in exact arithmetic).
  const double em = mean_error["psld_em"];
  EXPECT_LT(mean_error["psld_noba s_m in O"], 1.5 * em);
  EXPECT_LT(mean_error["psld_roba s_m in O"], 1.5 * em);
  EXPECT_GT(mean_error["psld_noba s_m in B"], 4 * em);
  EXPECT_GT(mean_error["psld_roba s_m in B"], 4 * em);
}

TEST(PsldSamplers, ProbabilityFlowSolversConvergeAtTheirOrder) {
  // Coupled error against a 1024-step Heun solve from the same z_T on a 2-D, 3-component mixture
  // (its own error is (128/1024)² ≈ 1/64 of Heun's at 128 steps).
  auto mix = small_mixture(12, 2, 3);
  auto model = PsldModel::exact(mix);
  const auto& p = mix->process();
  auto z = mix->sample(400, p.t_max(), generator(21));
  auto noise = seeded_noise(0);
  auto ref = psld_sample(model, z, *psld_sampler("psld_ode_heun"), psld_grid(p, 1024), noise, {false, false}).z;
  for (const auto& [name, order] : std::vector<std::pair<std::string, double>>{{"psld_ode_euler", 1.0},
                                                                               {"psld_ode_heun", 2.0}}) {
    std::vector<double> steps = {32, 64, 128}, err;
    for (double s : steps) {
      auto out = psld_sample(model, z, *psld_sampler(name), psld_grid(p, static_cast<int64_t>(s)), noise,
                             {false, false});
      err.push_back(testing::rmse(out.z.slice(1, 0, 2), ref.slice(1, 0, 2)));
    }
    const double slope = -testing::loglog_slope(steps, err);
    EXPECT_NEAR(slope, order, 0.3) << name << " errors " << err[0] << ", " << err[1] << ", " << err[2];
  }
}

TEST(PsldSamplers, GridSpacingsFollowTheirDefinitions) {
  PsldProcess p;
  const auto uniform = psld_grid(p, 4);
  const auto quadratic = psld_grid(p, 4, Spacing::Quadratic);
  ASSERT_EQ(uniform.size(), 5u);
  ASSERT_EQ(quadratic.size(), 5u);
  const double a = p.t_max(), e = p.t_min();
  for (int i = 0; i <= 4; ++i) {
    const double r = i / 4.0;
    EXPECT_NEAR(uniform[i], a + r * (e - a), 1e-15);
    const double u = std::sqrt(a) + r * (std::sqrt(e) - std::sqrt(a));  // schedules/timesteps.h "quadratic"
    EXPECT_NEAR(quadratic[i], u * u, 1e-15);
  }
  EXPECT_EQ(quadratic.front(), a);
  EXPECT_EQ(quadratic.back(), e);
  EXPECT_LT(quadratic[3] - quadratic[4], uniform[3] - uniform[4]);  // small steps near the data
  EXPECT_NE(value_error_message([&] { psld_grid(p, 4, Spacing::LogSNR); }).find("spacing"), std::string::npos);
}

TEST(PsldSamplers, SameSeedsGiveTheSameSamplesIndependentOfTheBatch) {
  PsldProcess p;
  auto model = gaussian_score_model(p, 0.1, 0.5);
  auto z = p.prior_sample(6, {1}, generator(2), at::kDouble);
  auto all = NoiseSampler::per_sample({10, 11, 12, 13, 14, 15});
  auto part = NoiseSampler::per_sample({12, 13});
  auto sampler = psld_sampler("psld_robab");
  auto a = psld_sample(model, z, *sampler, psld_grid(p, 9), all);
  auto b = psld_sample(model, z.slice(0, 2, 4), *sampler, psld_grid(p, 9), part);
  EXPECT_TRUE(at::allclose(a.x.slice(0, 2, 4), b.x, 1e-12, 1e-12));
}

TEST(PsldSamplers, TheDocsExampleCostsOneHundredEvaluations) {
  // docs/psld.md "Use from C++", on the exact model: 99 reduced-OBA steps + denoising = 100 NFE.
  PsldProcess process;
  auto data = GaussianMixture::random(16, 8, 0);
  auto exact = PsldModel::exact(std::make_shared<PsldMixture>(data, process));
  auto gen = generator(0);
  auto z_T = process.prior_sample(50, {16}, gen);
  NoiseSampler noise(gen);
  auto sampler = psld_sampler("psld_roba", {{"lambda_s", 1.0}});
  auto out = psld_sample(exact, z_T, *sampler, psld_grid(process, 99), noise);
  EXPECT_EQ(out.nfe, 100);
  EXPECT_EQ(out.x.sizes(), (std::vector<int64_t>{50, 16}));
  EXPECT_EQ(out.z.sizes(), (std::vector<int64_t>{50, 32}));
  EXPECT_EQ(out.x.scalar_type(), at::kFloat);
}

// ---- training and metrics ----

TEST(PsldTraining, ResumeIsBitExact) {
  at::set_num_threads(1);
  PsldProcess p;
  auto mix = GaussianMixture::random(2, 3, 4);
  MlpConfig cfg;
  cfg.dim = 4;
  cfg.hidden = 16;
  cfg.blocks = 1;
  cfg.time_frequencies = 8;
  cfg.time_embed_dim = 16;
  PsldTrainOptions opts;
  opts.steps = 8;
  opts.warmup = 2;
  auto make = [&] {
    return std::make_unique<PsldTrainer>(make_mlp(cfg, 1), std::make_shared<MixtureData>(mix, 32, 7), p, opts);
  };
  const std::string ckpt = testing::scratch_dir("psld", "resume") + "/ckpt.pt";
  auto full = make();
  std::vector<double> losses;
  for (int i = 0; i < 8; ++i) {
    losses.push_back(full->step().loss);
    if (i == 3) full->save_checkpoint(ckpt);
  }
  auto resumed = make();
  resumed->load_checkpoint(ckpt);
  EXPECT_EQ(resumed->step_count(), 4);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(resumed->step().loss, losses[static_cast<size_t>(i)]) << i;
  auto a = full->export_net()->parameters(true), b = resumed->export_net()->parameters(true);
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) EXPECT_TRUE(at::equal(*ia, *ib));
  EXPECT_EQ(full->checkpoint_format(), "fewstep.psld_trainer.v1");
}

TEST(PsldTraining, HsmLossDecreasesOnATinyModel) {
  at::manual_seed(0);
  PsldProcess p;
  auto data_mix = GaussianMixture::random(2, 3, 4);
  MixtureData data(data_mix, 128, 7);
  MlpConfig cfg;
  cfg.dim = 4;  // the augmented state of 2-D data
  cfg.hidden = 32;
  cfg.blocks = 1;
  cfg.time_frequencies = 16;
  cfg.time_embed_dim = 32;
  auto net = make_mlp(cfg, 1);
  PsldTrainOptions opts;
  opts.steps = 300;
  opts.lr = 3e-3;
  opts.warmup = 20;
  auto result = train_psld(net, data, p, opts);
  ASSERT_EQ(result.losses.size(), 300u);
  double first = 0, last = 0;
  for (int i = 0; i < 30; ++i) first += result.losses[static_cast<size_t>(i)] / 30;
  for (int i = 270; i < 300; ++i) last += result.losses[static_cast<size_t>(i)] / 30;
  // The ε-MSE starts near 1 (an untrained net predicts ≈ 0 against unit-variance ε) and must
  // fall well below it once the net has learnt the kernel's linear part.
  EXPECT_GT(first, 0.8);
  EXPECT_LT(last, 0.75 * first) << "first " << first << ", last " << last;
  // The trained network plugs into the samplers as a PSLD model.
  auto model = PsldModel::script(result.ema, p);
  auto z = p.prior_sample(8, {2}, generator(1));
  auto noise = seeded_noise(1);
  auto out = psld_sample(model, z, *psld_sampler("psld_roba"), psld_grid(p, 10), noise);
  EXPECT_EQ(out.x.sizes(), (std::vector<int64_t>{8, 2}));
  EXPECT_TRUE(at::isfinite(out.x).all().item<bool>());
}

TEST(Mmd, ZeroInExpectationForOneLawAndPositiveForTwo) {
  auto g = generator(3);
  auto a = at::randn({600, 3}, g, at::kDouble), b = at::randn({600, 3}, g, at::kDouble);
  auto c = at::randn({600, 3}, g, at::kDouble) + 0.5;
  const double h = median_pairwise_distance(a);
  EXPECT_NEAR(h, std::sqrt(2 * 3.0), 0.3);  // ‖a − b‖ of two N(0, I_3) draws: median ≈ √(2·3)
  // Same law: |MMD²_u| of order 1/n; shifted by 0.5 per coordinate: clearly positive.
  EXPECT_LT(std::abs(mmd2_rbf(a, b, h)), 0.01);
  EXPECT_GT(mmd2_rbf(a, c, h), 0.03);
  EXPECT_NE(value_error_message([&] { mmd2_rbf(a, b, 0.0); }).find("bandwidth"), std::string::npos);
}

}  // namespace
}  // namespace fewstep
