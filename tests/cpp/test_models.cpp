// Tests of the models layer: parameterisation conversions, the Denoiser adapters (callable, TorchScript,
// exact Gaussian mixture, classifier-free guidance) and the GaussianMixture maths.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/guidance.h"
#include "fewstep/models/transforms.h"
#include "fewstep/schedules/schedule.h"

namespace {

using fewstep::Denoiser;
using fewstep::DenoiserOutput;
using fewstep::GaussianMixture;
using fewstep::Prediction;
using fewstep::SchedulePtr;
using fewstep::TimeInput;

const std::vector<Prediction> kPredictions = {Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score,
                                              Prediction::Flow};

struct NamedSchedule {
  std::string name;
  SchedulePtr schedule;
};

std::vector<NamedSchedule> all_schedules() {
  return {{"vp_linear", std::make_shared<fewstep::VPLinear>()},
          {"vp_cosine", std::make_shared<fewstep::VPCosine>()},
          {"vp_discrete", fewstep::VPDiscrete::ddpm_linear()},
          {"ve", std::make_shared<fewstep::VE>()},
          {"flow", std::make_shared<fewstep::FlowMatching>()}};
}

// Times across the range, off the knots of discrete schedules (t_n = (n+1)/N) so finite differences are clean.
std::vector<double> sample_times(const fewstep::NoiseSchedule& s) {
  std::vector<double> ts;
  for (double f : {0.00037, 0.25037, 0.5037, 0.99963}) ts.push_back(s.t_min() + f * (s.t_max() - s.t_min()));
  return ts;
}

double max_abs(const at::Tensor& t) { return t.abs().max().to(at::kDouble).item<double>(); }

at::Generator cpu_gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor randn(std::vector<int64_t> shape, at::Generator& gen, at::ScalarType dtype = at::kDouble) {
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)).to(dtype);
}

double unit_roundoff(at::ScalarType dtype) {
  return dtype == at::kFloat ? std::numeric_limits<float>::epsilon() : std::numeric_limits<double>::epsilon();
}

// Calls f, expects an exception of type E, returns its message (empty and a failure otherwise).
template <class E, class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception thrown";
  return "";
}

std::string temp_dir() {
  const char* env = std::getenv("FEWSTEP_TEST_TMP");
  std::filesystem::path dir = env && *env ? env : "/tmp";
  dir /= "fewstep_test_models_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Central difference of a host function (used for α̇, σ̇ independently of the schedules' derivatives).
template <class F>
double derivative(F f, double t) {
  const double h = 1e-6 * std::max(t, 1e-3);
  return (f(t + h) - f(t - h)) / (2 * h);
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(Names, ParseAndPrintRoundTrip) {
  for (Prediction p : kPredictions) EXPECT_EQ(fewstep::parse_prediction(fewstep::to_string(p)), p);
  for (TimeInput ti : {TimeInput::T, TimeInput::Index, TimeInput::Sigma, TimeInput::Lambda})
    EXPECT_EQ(fewstep::parse_time_input(fewstep::to_string(ti)), ti);
  EXPECT_EQ(fewstep::to_string(Prediction::X0), "x0");
  EXPECT_EQ(fewstep::to_string(TimeInput::Lambda), "lambda");
}

TEST(Names, InvalidStringsAreValueErrors) {
  auto msg = error_message<c10::ValueError>([] { fewstep::parse_prediction("epsilon"); });
  EXPECT_NE(msg.find("prediction"), std::string::npos) << msg;
  EXPECT_NE(msg.find("epsilon"), std::string::npos) << msg;
  msg = error_message<c10::ValueError>([] { fewstep::parse_time_input("idx"); });
  EXPECT_NE(msg.find("time_input"), std::string::npos) << msg;
  EXPECT_NE(msg.find("idx"), std::string::npos) << msg;
  error_message<c10::ValueError>([] { fewstep::parse_prediction("EPS"); });
}

// ---------------------------------------------------------------------------------------------
// Conversions

// (x0, ε) → (x, native) → (x̂0, ε̂) is the identity for every prediction, schedule, time and dtype.
// Native targets are checked against their definitions (flow: the time derivative of x_t by central
// differences). Tolerances: the two maps are 2×2 linear, so rounding is bounded by
// c·u·(|M⁻¹| |M| |v| + |v|) with v = (max|x0|, max|ε|) and u the dtype's epsilon.
TEST(Conversions, RoundTripEveryPredictionScheduleDtype) {
  at::Generator gen = cpu_gen(11);
  for (const auto& [name, sched] : all_schedules()) {
    for (double t : sample_times(*sched)) {
      const double a = sched->alpha(t), s = sched->sigma(t);
      const double da = derivative([&](double u) { return sched->alpha(u); }, t);
      const double ds = derivative([&](double u) { return sched->sigma(u); }, t);
      for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
        const at::Tensor x0 = randn({64, 5}, gen, dtype);
        const at::Tensor eps = randn({64, 5}, gen, dtype);
        const at::Tensor x = x0 * a + eps * s;
        const std::vector<double> v = {max_abs(x0), max_abs(eps)};
        for (Prediction p : kPredictions) {
          SCOPED_TRACE(name + " t=" + std::to_string(t) + " " + fewstep::to_string(p) + " " +
                       std::string(c10::toString(dtype)));
          // Row of the native target in terms of (x0, ε), from the definitions.
          double n0 = 0, n1 = 0;
          switch (p) {
            case Prediction::Eps: n1 = 1; break;
            case Prediction::X0: n0 = 1; break;
            case Prediction::V: n0 = -s; n1 = a; break;
            case Prediction::Score: n1 = -1 / s; break;
            case Prediction::Flow: n0 = da; n1 = ds; break;
          }
          const at::Tensor native = fewstep::native_from_x0_eps(x0, eps, p, *sched, t);
          ASSERT_EQ(native.scalar_type(), dtype);
          ASSERT_EQ(native.sizes(), x0.sizes());
          const at::Tensor native_ref = x0.to(at::kDouble) * n0 + eps.to(at::kDouble) * n1;
          // Flow's row comes from finite differences (relative accuracy ~1e-8).
          const double fd_slack = p == Prediction::Flow ? 1e-6 : 0.0;
          const double native_scale = std::abs(n0) * v[0] + std::abs(n1) * v[1];
          EXPECT_LE(max_abs(native.to(at::kDouble) - native_ref),
                    (8 * unit_roundoff(dtype) + fd_slack) * native_scale + 1e-300);

          const DenoiserOutput out = fewstep::convert_prediction(x, native, p, *sched, t);
          ASSERT_EQ(out.x0.scalar_type(), dtype);
          ASSERT_EQ(out.eps.scalar_type(), dtype);
          // |M| and |M⁻¹| of M = [[α, σ], [n0, n1]].
          const double det = a * n1 - s * n0;
          const double inv[2][2] = {{n1 / det, -s / det}, {-n0 / det, a / det}};
          const double m[2][2] = {{a, s}, {n0, n1}};
          double amp[2];
          for (int i = 0; i < 2; ++i) {
            amp[i] = v[i];
            for (int j = 0; j < 2; ++j) amp[i] += std::abs(inv[i][j]) * (std::abs(m[j][0]) * v[0] + std::abs(m[j][1]) * v[1]);
          }
          const double c = 8 * unit_roundoff(dtype);
          EXPECT_LE(max_abs(out.x0.to(at::kDouble) - x0.to(at::kDouble)), c * amp[0]);
          EXPECT_LE(max_abs(out.eps.to(at::kDouble) - eps.to(at::kDouble)), c * amp[1]);
        }
      }
    }
  }
}

TEST(Conversions, HandComputedCases) {
  at::Generator gen = cpu_gen(3);
  const at::Tensor x = randn({6, 2}, gen);
  const at::Tensor out = randn({6, 2}, gen);
  // Flow matching, α = 1 − t, σ = t: u = ε − x0 ⇒ x0 = x − t u, ε = x + (1 − t) u.
  fewstep::FlowMatching flow;
  auto r = fewstep::convert_prediction(x, out, Prediction::Flow, flow, 0.3);
  EXPECT_LE(max_abs(r.x0 - (x - 0.3 * out)), 1e-14);
  EXPECT_LE(max_abs(r.eps - (x + 0.7 * out)), 1e-14);
  // VE, α = 1: score s ⇒ ε = −σ s, x0 = x + σ² s.
  fewstep::VE ve;
  r = fewstep::convert_prediction(x, out, Prediction::Score, ve, 2.0);
  EXPECT_LE(max_abs(r.eps + 2.0 * out), 1e-14);
  EXPECT_LE(max_abs(r.x0 - (x + 4.0 * out)), 1e-13);
  // VP v-prediction: x0 = α x − σ v, ε = σ x + α v (α² + σ² = 1).
  fewstep::VPLinear vp;
  const double a = vp.alpha(0.4), s = vp.sigma(0.4);
  ASSERT_NEAR(a * a + s * s, 1.0, 1e-14);
  r = fewstep::convert_prediction(x, out, Prediction::V, vp, 0.4);
  EXPECT_LE(max_abs(r.x0 - (a * x - s * out)), 1e-14);
  EXPECT_LE(max_abs(r.eps - (s * x + a * out)), 1e-14);
}

TEST(Conversions, ShapeMismatchIsValueError) {
  fewstep::VPLinear vp;
  auto msg = error_message<c10::ValueError>(
      [&] { fewstep::convert_prediction(at::zeros({4, 3}), at::zeros({4, 2}), Prediction::Eps, vp, 0.5); });
  EXPECT_NE(msg.find("[4, 2]"), std::string::npos) << msg;
}

TEST(NetworkTime, EveryTimeInput) {
  auto ddpm = fewstep::VPDiscrete::ddpm_linear();
  // Step n sits at t = (n + 1)/N, so the index input at t = (n + 1)/N is n.
  EXPECT_NEAR(fewstep::network_time(*ddpm, 1.0, TimeInput::Index, 1.0), 999.0, 1e-9);
  EXPECT_NEAR(fewstep::network_time(*ddpm, 0.001, TimeInput::Index, 1.0), 0.0, 1e-9);
  EXPECT_NEAR(fewstep::network_time(*ddpm, 0.5, TimeInput::Index, 1.0), 499.0, 1e-9);
  fewstep::VPLinear vp;
  EXPECT_DOUBLE_EQ(fewstep::network_time(vp, 0.3, TimeInput::T, 1000.0), 300.0);
  EXPECT_DOUBLE_EQ(fewstep::network_time(vp, 0.3, TimeInput::Sigma, 1.0), vp.sigma(0.3));
  EXPECT_DOUBLE_EQ(fewstep::network_time(vp, 0.3, TimeInput::Lambda, 2.0), 2.0 * vp.lambda(0.3));
}

TEST(NetworkTime, IndexOnContinuousScheduleIsValueError) {
  fewstep::VPLinear vp;
  auto msg = error_message<c10::ValueError>([&] { fewstep::network_time(vp, 0.5, TimeInput::Index, 1.0); });
  EXPECT_NE(msg.find("time_input"), std::string::npos) << msg;
  auto net = [](const at::Tensor& x, const at::Tensor&) { return x; };
  msg = error_message<c10::ValueError>([&] {
    Denoiser(net, std::make_shared<fewstep::VPLinear>(), Prediction::Eps, TimeInput::Index);
  });
  EXPECT_NE(msg.find("time_input"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// Denoiser from a callable

TEST(Denoiser, CallableReceivesTimeTensorAndIsConverted) {
  auto ddpm = fewstep::VPDiscrete::ddpm_linear();
  at::Generator gen = cpu_gen(5);
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor x = randn({7, 2, 3}, gen, dtype);
    at::Tensor seen_t;
    int calls = 0;
    auto net = [&](const at::Tensor& xin, const at::Tensor& t) {
      ++calls;
      seen_t = t;
      return xin * 0.25 + t.view({-1, 1, 1}) * 1e-3;
    };
    for (Prediction p : kPredictions) {
      Denoiser model(net, ddpm, p, TimeInput::Index, 1.0);
      const double t = 0.6005;
      const DenoiserOutput out = model(x, t);
      ASSERT_EQ(seen_t.sizes(), (std::vector<int64_t>{7}));
      EXPECT_EQ(seen_t.scalar_type(), dtype);
      const double idx = t * 1000 - 1;
      EXPECT_LE(max_abs(seen_t.to(at::kDouble) - idx), idx * unit_roundoff(dtype));
      const DenoiserOutput ref = fewstep::convert_prediction(x, x * 0.25 + seen_t.view({-1, 1, 1}) * 1e-3, p, *ddpm, t);
      EXPECT_TRUE(at::equal(out.x0, ref.x0));
      EXPECT_TRUE(at::equal(out.eps, ref.eps));
      EXPECT_EQ(out.x0.scalar_type(), dtype);
    }
    EXPECT_EQ(calls, 5);
  }
}

TEST(Denoiser, BadNetworkOutputsAreValueErrors) {
  auto vp = std::make_shared<fewstep::VPLinear>();
  Denoiser wrong_shape([](const at::Tensor& x, const at::Tensor&) { return x.sum(1); }, vp, Prediction::Eps);
  auto msg = error_message<c10::ValueError>([&] { wrong_shape(at::zeros({4, 3}), 0.5); });
  EXPECT_NE(msg.find("shape"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4]"), std::string::npos) << msg;
  Denoiser undefined([](const at::Tensor&, const at::Tensor&) { return at::Tensor(); }, vp, Prediction::Eps);
  error_message<c10::ValueError>([&] { undefined(at::zeros({4, 3}), 0.5); });
  error_message<c10::ValueError>([&] { Denoiser(Denoiser::Network(), vp, Prediction::Eps); });
  error_message<c10::ValueError>(
      [&] { Denoiser([](const at::Tensor& x, const at::Tensor&) { return x; }, nullptr, Prediction::Eps); });
}

// No tensor may be created on the host: on the meta device any stray CPU tensor in an op raises.
TEST(Denoiser, RunsOnMetaDevice) {
  const at::Tensor x = at::empty({4, 3}, at::TensorOptions().device(at::kMeta));
  auto net = [](const at::Tensor& xin, const at::Tensor& t) { return xin * 0.5 + t.view({-1, 1}); };
  auto ddpm = fewstep::VPDiscrete::ddpm_linear();
  for (const auto& [name, sched] : all_schedules()) {
    for (Prediction p : kPredictions) {
      for (TimeInput ti : {TimeInput::T, TimeInput::Sigma, TimeInput::Lambda}) {
        const DenoiserOutput out = Denoiser(net, sched, p, ti, 2.0)(x, sched->t_min() + 0.3 * (sched->t_max() - sched->t_min()));
        EXPECT_TRUE(out.x0.is_meta()) << name;
        EXPECT_TRUE(out.eps.is_meta()) << name;
        EXPECT_EQ(out.x0.sizes(), x.sizes());
        EXPECT_EQ(out.eps.scalar_type(), x.scalar_type());
      }
    }
  }
  const DenoiserOutput out = Denoiser(net, ddpm, Prediction::V, TimeInput::Index)(x, 0.5);
  EXPECT_TRUE(out.x0.is_meta());
  // The exact mixture denoiser moves its parameters to x's device, so it runs on meta too.
  auto gmm = GaussianMixture::random(3, 2, 0);
  const DenoiserOutput ex = Denoiser::exact(gmm, std::make_shared<fewstep::VPLinear>())(x, 0.5);
  EXPECT_TRUE(ex.x0.is_meta());
  EXPECT_EQ(ex.eps.sizes(), x.sizes());
}

// ---------------------------------------------------------------------------------------------
// TorchScript

TEST(TorchScript, LoadsSavedModuleAndConverts) {
  const std::string path = temp_dir() + "/half_plus_t.pt";
  {
    torch::jit::Module m("M");
    m.define(R"(
def forward(self, x, t):
    return x * 0.5 + t.view(-1, 1)
)");
    m.save(path);
  }
  auto vp = std::make_shared<fewstep::VPLinear>();
  at::Generator gen = cpu_gen(9);
  const at::Tensor x = randn({5, 3}, gen, at::kFloat);
  const double t = 0.7, a = vp->alpha(t), s = vp->sigma(t);

  Denoiser model = Denoiser::torchscript(path, vp, Prediction::Eps);
  EXPECT_NE(model.description().find(path), std::string::npos) << model.description();
  DenoiserOutput out = model(x, t);
  at::Tensor eps = x * 0.5 + t;
  EXPECT_LE(max_abs(out.eps - eps), 1e-6);
  EXPECT_LE(max_abs(out.x0 - (x - s * eps) / a), 1e-5);
  EXPECT_EQ(out.x0.scalar_type(), at::kFloat);

  // σ as time input, scaled.
  Denoiser by_sigma = Denoiser::torchscript(path, vp, Prediction::X0, TimeInput::Sigma, 2.0);
  out = by_sigma(x, t);
  const at::Tensor x0 = x * 0.5 + 2.0 * s;
  EXPECT_LE(max_abs(out.x0 - x0), 1e-6);
  EXPECT_LE(max_abs(out.eps - (x - a * x0) / s), 1e-5);
}

TEST(TorchScript, MissingOrInvalidFileIsValueErrorNamingPath) {
  auto vp = std::make_shared<fewstep::VPLinear>();
  const std::string missing = temp_dir() + "/does_not_exist.pt";
  auto msg = error_message<c10::ValueError>([&] { Denoiser::torchscript(missing, vp, Prediction::Eps); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  const std::string garbage = temp_dir() + "/garbage.pt";
  std::ofstream(garbage) << "not a zip archive";
  msg = error_message<c10::ValueError>([&] { Denoiser::torchscript(garbage, vp, Prediction::Eps); });
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// Gaussian mixtures

// log p_t(x) computed independently: full noised covariances, Cholesky, logsumexp.
at::Tensor reference_log_prob(const GaussianMixture& g, const at::Tensor& x, double a, double s) {
  const int64_t d = g.dim();
  const at::Tensor cov = g.covariances() * (a * a) + s * s * at::eye(d, at::kDouble);  // [K, D, D]
  const at::Tensor chol = at::linalg_cholesky(cov);
  const at::Tensor diff = x.unsqueeze(1) - a * g.means().unsqueeze(0);                  // [B, K, D]
  const at::Tensor sol = at::linalg_solve_triangular(chol.unsqueeze(0), diff.unsqueeze(-1), /*upper=*/false);
  const at::Tensor quad = sol.squeeze(-1).pow(2).sum(-1);                              // [B, K]
  const at::Tensor logdet = 2 * at::log(at::diagonal(chol, 0, -2, -1)).sum(-1);        // [K]
  const at::Tensor comp = -0.5 * (quad + logdet.unsqueeze(0) + d * std::log(2 * M_PI));
  return at::logsumexp(comp + g.weights().log().unsqueeze(0), -1);
}

struct NoisePoint {
  SchedulePtr schedule;
  double t;
};

std::vector<NoisePoint> noise_points() {
  auto vp = std::make_shared<fewstep::VPLinear>();
  auto ve = std::make_shared<fewstep::VE>();
  auto flow = std::make_shared<fewstep::FlowMatching>();
  return {{vp, 0.02}, {vp, 0.3}, {vp, 0.9}, {ve, 0.05}, {ve, 3.0}, {flow, 0.2}, {flow, 0.8}};
}

// Noised samples x_t = α x0 + σ ε from the mixture, so points lie where the density is.
at::Tensor noised_samples(const GaussianMixture& g, int64_t n, double a, double s, at::Generator& gen) {
  return g.sample(n, gen) * a + randn({n, g.dim()}, gen) * s;
}

TEST(GaussianMixture, LogProbMatchesIndependentComputation) {
  at::Generator gen = cpu_gen(21);
  for (bool diagonal : {false, true}) {
    auto g = GaussianMixture::random(4, 3, 2, diagonal);
    for (const auto& [sched, t] : noise_points()) {
      const double a = sched->alpha(t), s = sched->sigma(t);
      const at::Tensor x = noised_samples(*g, 32, a, s, gen);
      const at::Tensor lp = g->log_prob(x, a, s);
      ASSERT_EQ(lp.sizes(), (std::vector<int64_t>{32}));
      EXPECT_LE(max_abs(lp - reference_log_prob(*g, x, a, s)), 1e-10 * (1 + max_abs(lp)));
      const at::Tensor r = g->responsibilities(x, a, s);
      ASSERT_EQ(r.sizes(), (std::vector<int64_t>{32, 3}));
      EXPECT_LE(max_abs(r.sum(-1) - 1), 1e-14);
    }
  }
}

// ε̂ = −σ ∇_x log p_t(x) with the gradient from autograd through log_prob; x̂0 = (x − σ ε̂)/α.
TEST(GaussianMixture, ExactDenoiserIsScoreOfNoisedDensity) {
  at::Generator gen = cpu_gen(22);
  for (bool diagonal : {false, true}) {
    auto g = GaussianMixture::random(5, 4, 3, diagonal);
    for (const auto& [sched, t] : noise_points()) {
      SCOPED_TRACE(sched->name() + " t=" + std::to_string(t) + (diagonal ? " diagonal" : " full"));
      const double a = sched->alpha(t), s = sched->sigma(t);
      at::Tensor x = noised_samples(*g, 40, a, s, gen).requires_grad_(true);
      g->log_prob(x, a, s).sum().backward();
      const at::Tensor eps_ref = -s * x.grad();
      x = x.detach();
      const DenoiserOutput out = g->denoise(x, a, s);
      const double scale = 1 + max_abs(eps_ref);
      EXPECT_LE(max_abs(out.eps - eps_ref), 1e-10 * scale);
      // α x̂0 + σ ε̂ = x exactly (up to round-off), hence x̂0 = (x − σ ε̂)/α.
      EXPECT_LE(max_abs(out.x0 * a + out.eps * s - x), 1e-12 * (1 + max_abs(x)));
      // The Denoiser wrapper evaluates the same maths at (α(t), σ(t)).
      const DenoiserOutput via = Denoiser::exact(g, sched)(x, t);
      EXPECT_TRUE(at::allclose(via.x0, out.x0, 1e-15, 1e-15));
      EXPECT_TRUE(at::allclose(via.eps, out.eps, 1e-15, 1e-15));
    }
  }
}

// K = 1: E[x0 | x] = μ + α C (α² C + σ² I)^{-1} (x − α μ).
TEST(GaussianMixture, SingleGaussianClosedForm) {
  at::Generator gen = cpu_gen(23);
  for (bool diagonal : {false, true}) {
    auto g = GaussianMixture::random(6, 1, 4, diagonal, 1.0, 0.05, 2.0);
    const at::Tensor c = g->covariances()[0];
    const at::Tensor mu = g->means()[0];
    for (const auto& [sched, t] : noise_points()) {
      const double a = sched->alpha(t), s = sched->sigma(t);
      const at::Tensor x = noised_samples(*g, 16, a, s, gen);
      const at::Tensor m = a * a * c + s * s * at::eye(6, at::kDouble);
      const at::Tensor gain = at::linalg_solve(m, (x - a * mu).t());  // [D, B]
      const at::Tensor x0 = mu + (a * at::matmul(c, gain)).t();
      const DenoiserOutput out = g->denoise(x, a, s);
      EXPECT_LE(max_abs(out.x0 - x0), 1e-11 * (1 + max_abs(x0)));
      EXPECT_LE(max_abs(out.eps - s * gain.t()), 1e-10 * (1 + max_abs(out.eps)));
    }
  }
}

TEST(GaussianMixture, BatchShapesAndDtypes) {
  at::Generator gen = cpu_gen(24);
  auto g = GaussianMixture::random(3, 2, 5);
  const at::Tensor x = randn({2, 5, 3}, gen);
  const DenoiserOutput full = g->denoise(x, 0.8, 0.6);
  const DenoiserOutput flat = g->denoise(x.reshape({10, 3}), 0.8, 0.6);
  EXPECT_EQ(full.x0.sizes(), x.sizes());
  EXPECT_TRUE(at::allclose(full.x0.reshape({10, 3}), flat.x0, 0, 0));
  EXPECT_EQ(g->log_prob(x, 0.8, 0.6).sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(g->responsibilities(x, 0.8, 0.6).sizes(), (std::vector<int64_t>{2, 5, 2}));
  // float32 in, float32 out; the maths is float64 inside, so only the final rounding differs.
  const DenoiserOutput f32 = g->denoise(x.to(at::kFloat), 0.8, 0.6);
  EXPECT_EQ(f32.x0.scalar_type(), at::kFloat);
  EXPECT_EQ(f32.eps.scalar_type(), at::kFloat);
  const DenoiserOutput ref = g->denoise(x.to(at::kFloat).to(at::kDouble), 0.8, 0.6);
  EXPECT_LE(max_abs(f32.x0.to(at::kDouble) - ref.x0), 2 * unit_roundoff(at::kFloat) * (1 + max_abs(ref.x0)));
}

TEST(GaussianMixture, RandomIsReproducibleAndValid) {
  auto a = GaussianMixture::random(8, 5, 42);
  auto b = GaussianMixture::random(8, 5, 42);
  auto c = GaussianMixture::random(8, 5, 43);
  EXPECT_TRUE(at::equal(a->means(), b->means()));
  EXPECT_TRUE(at::equal(a->covariances(), b->covariances()));
  EXPECT_FALSE(at::equal(a->means(), c->means()));
  EXPECT_NEAR(a->weights().sum().item<double>(), 1.0, 1e-15);
  const at::Tensor eig = at::linalg_eigvalsh(a->covariances());
  EXPECT_GE(eig.min().item<double>(), 0.01 * (1 - 1e-9));
  EXPECT_LE(eig.max().item<double>(), 0.1 * (1 + 1e-9));
  auto d = GaussianMixture::random(8, 5, 42, /*diagonal=*/true);
  EXPECT_TRUE(d->diagonal());
  const at::Tensor cov = d->covariances();
  EXPECT_TRUE(at::equal(cov, at::diag_embed(at::diagonal(cov, 0, -2, -1))));
}

// Sample moments against mean()/covariance() within 5 standard errors estimated from the samples.
TEST(GaussianMixture, SampleMomentsMatchWithinStatisticalBounds) {
  for (bool diagonal : {false, true}) {
    SCOPED_TRACE(diagonal ? "diagonal" : "full");
    auto g = GaussianMixture::random(3, 4, 7, diagonal, 1.0, 0.05, 0.5);
    at::Generator gen = cpu_gen(99);
    const int64_t n = 200000;
    auto [x, labels] = g->sample_with_labels(n, gen);
    ASSERT_EQ(x.sizes(), (std::vector<int64_t>{n, 3}));
    ASSERT_EQ(x.scalar_type(), at::kDouble);
    const double rn = std::sqrt(static_cast<double>(n));

    const at::Tensor m = g->mean();
    const at::Tensor cov = g->covariance();
    const at::Tensor xm = x.mean(0);
    const at::Tensor se_mean = cov.diagonal().sqrt() / rn;
    EXPECT_TRUE((((xm - m).abs() / se_mean) < 5).all().item<bool>()) << xm << m;

    const at::Tensor centred = x - xm;
    const at::Tensor prod = centred.unsqueeze(2) * centred.unsqueeze(1);  // [n, D, D]
    const at::Tensor xcov = prod.mean(0);
    const at::Tensor se_cov = prod.std(0) / rn;
    EXPECT_TRUE((((xcov - cov).abs() / se_cov) < 5).all().item<bool>()) << xcov << cov;

    const at::Tensor freq = at::bincount(labels, {}, g->components()).to(at::kDouble) / n;
    const at::Tensor w = g->weights();
    const at::Tensor se_w = (w * (1 - w)).sqrt() / rn;
    EXPECT_TRUE((((freq - w).abs() / se_w) < 5).all().item<bool>()) << freq << w;

    // The same generator seed gives the same samples.
    at::Generator again = cpu_gen(99);
    EXPECT_TRUE(at::equal(g->sample(1000, again), g->sample(1000, cpu_gen(99))));
  }
}

TEST(GaussianMixture, InvalidInputsAreValueErrors) {
  const auto d = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor w = at::ones({2}, d), mu = at::zeros({2, 3}, d), cov = at::ones({2, 3}, d);
  auto msg = error_message<c10::ValueError>([&] { GaussianMixture(-w, mu, cov); });
  EXPECT_NE(msg.find("weights"), std::string::npos) << msg;
  msg = error_message<c10::ValueError>([&] { GaussianMixture(at::ones({3}, d), mu, cov); });
  EXPECT_NE(msg.find("weights"), std::string::npos) << msg;
  msg = error_message<c10::ValueError>([&] { GaussianMixture(w, mu, at::ones({2, 4}, d)); });
  EXPECT_NE(msg.find("covariances"), std::string::npos) << msg;
  msg = error_message<c10::ValueError>([&] { GaussianMixture(w, mu, -cov); });
  EXPECT_NE(msg.find("covariances"), std::string::npos) << msg;
  // Not positive definite: eigenvalues 3 and −1.
  at::Tensor indefinite = at::eye(3, d).repeat({2, 1, 1});
  indefinite.index_put_({1, 0, 1}, 2.0);
  indefinite.index_put_({1, 1, 0}, 2.0);
  msg = error_message<c10::ValueError>([&] { GaussianMixture(w, mu, indefinite); });
  EXPECT_NE(msg.find("covariances[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("positive definite"), std::string::npos) << msg;
  at::Tensor asym = at::eye(3, d).repeat({2, 1, 1});
  asym.index_put_({0, 0, 2}, 0.5);
  msg = error_message<c10::ValueError>([&] { GaussianMixture(w, mu, asym); });
  EXPECT_NE(msg.find("symmetric"), std::string::npos) << msg;

  GaussianMixture g(w, mu, cov);
  msg = error_message<c10::ValueError>([&] { g.denoise(at::zeros({4, 2}, d), 1.0, 0.5); });
  EXPECT_NE(msg.find("[4, 2]"), std::string::npos) << msg;
  msg = error_message<c10::ValueError>([&] { g.denoise(at::zeros({4, 3}, d), 1.0, 0.0); });
  EXPECT_NE(msg.find("sigma"), std::string::npos) << msg;
  error_message<c10::TypeError>([&] { g.denoise(at::zeros({4, 3}, at::kLong), 1.0, 0.5); });
  error_message<c10::ValueError>([&] { GaussianMixture::random(0, 2, 0); });
  error_message<c10::ValueError>([&] { GaussianMixture::random(2, 2, 0, false, 1.0, 0.5, 0.1); });
}

// ---------------------------------------------------------------------------------------------
// Classifier-free guidance

TEST(Guidance, MatchesHandComputationWithOneCallPerEvaluation) {
  auto vp = std::make_shared<fewstep::VPLinear>();
  at::Generator gen = cpu_gen(31);
  const int64_t b = 6;
  const at::Tensor x = randn({b, 4}, gen);
  int calls = 0;
  int64_t seen_batch = 0;
  // out(x, t, c) = x·c + t: linear in c, so the guided output is x·(u + w(c − u)) + t.
  fewstep::ConditionalNetwork net = [&](const at::Tensor& xin, const at::Tensor& t, const at::Tensor& c) {
    ++calls;
    seen_batch = xin.size(0);
    return xin * c + t.view({-1, 1});
  };
  const at::Tensor cond_each = at::arange(1, b + 1, at::kDouble).view({b, 1});  // per-sample conditions
  const at::Tensor cond_one = at::full({1, 1}, 2.0, at::kDouble);               // broadcast
  const at::Tensor uncond = at::full({1, 1}, 0.5, at::kDouble);
  const double t = 0.4, a = vp->alpha(t), s = vp->sigma(t);
  int evaluations = 0;
  for (const at::Tensor& cond : {cond_each, cond_one}) {
    for (double w : {0.0, 1.0, 3.5, 7.5, -0.5}) {
      for (Prediction p : {Prediction::Eps, Prediction::V}) {
        Denoiser model = fewstep::classifier_free_guidance(net, vp, p, cond, uncond, w);
        const DenoiserOutput out = model(x, t);
        ++evaluations;
        EXPECT_EQ(seen_batch, 2 * b);
        const at::Tensor native = x * 0.5 + w * (x * cond - x * 0.5) + t;
        at::Tensor x0, eps;
        if (p == Prediction::Eps) {
          eps = native;
          x0 = (x - s * native) / a;
        } else {  // VP: α² + σ² = 1
          x0 = a * x - s * native;
          eps = s * x + a * native;
        }
        EXPECT_LE(max_abs(out.eps - eps), 1e-12 * (1 + max_abs(eps))) << "w=" << w;
        EXPECT_LE(max_abs(out.x0 - x0), 1e-12 * (1 + max_abs(x0))) << "w=" << w;
      }
    }
  }
  EXPECT_EQ(calls, evaluations);
}

TEST(Guidance, InvalidArgumentsAreValueErrors) {
  auto vp = std::make_shared<fewstep::VPLinear>();
  fewstep::ConditionalNetwork net = [](const at::Tensor& x, const at::Tensor&, const at::Tensor& c) { return x * c; };
  const at::Tensor c3 = at::ones({3, 1}, at::kDouble), u1 = at::zeros({1, 1}, at::kDouble);
  auto msg = error_message<c10::ValueError>([&] {
    fewstep::classifier_free_guidance(net, vp, Prediction::Eps, c3, u1, std::nan(""));
  });
  EXPECT_NE(msg.find("guidance_scale"), std::string::npos) << msg;
  Denoiser model = fewstep::classifier_free_guidance(net, vp, Prediction::Eps, c3, u1, 2.0);
  msg = error_message<c10::ValueError>([&] { model(at::zeros({4, 2}, at::kDouble), 0.5); });
  EXPECT_NE(msg.find("cond"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 1]"), std::string::npos) << msg;
  error_message<c10::ValueError>([&] {
    fewstep::classifier_free_guidance(net, vp, Prediction::Eps, c3, at::zeros({1, 2}, at::kDouble), 2.0);
  });
}

TEST(Guidance, RunsOnMetaDevice) {
  auto vp = std::make_shared<fewstep::VPLinear>();
  const auto meta = at::TensorOptions().device(at::kMeta);
  fewstep::ConditionalNetwork net = [](const at::Tensor& x, const at::Tensor& t, const at::Tensor& c) {
    return x * c + t.view({-1, 1});
  };
  Denoiser model =
      fewstep::classifier_free_guidance(net, vp, Prediction::Eps, at::empty({1, 1}, meta), at::empty({1, 1}, meta), 3.0);
  const DenoiserOutput out = model(at::empty({4, 3}, meta), 0.5);
  EXPECT_TRUE(out.x0.is_meta());
  EXPECT_EQ(out.eps.sizes(), (std::vector<int64_t>{4, 3}));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Transforms: x̂_0 clipping and thresholding, the VE view
// ---------------------------------------------------------------------------------------

TEST(Transforms, ClipAndThresholdX0) {
  auto sched = std::make_shared<fewstep::VPLinear>();
  // A network whose x̂_0 is 3x: large values to clip.
  fewstep::Denoiser net([](const at::Tensor& x, const at::Tensor&) { return x * 3.0; }, sched, Prediction::X0);
  auto x = at::linspace(-1, 1, 24, at::kDouble).reshape({2, 12});
  const double t = 0.4;
  auto clipped = fewstep::clip_x0(net, 1.5)(x, t);
  EXPECT_TRUE(at::allclose(clipped.x0, at::clamp(x * 3.0, -1.5, 1.5)));
  // ε̂ is recomputed so that x = α x̂_0 + σ ε̂ still holds ...
  EXPECT_TRUE(at::allclose(clipped.x0 * sched->alpha(t) + clipped.eps * sched->sigma(t), x, 1e-12, 1e-12));
  // ... unless asked to keep the network's.
  auto kept = fewstep::clip_x0(net, 1.5, false)(x, t);
  EXPECT_TRUE(at::equal(kept.eps, net(x, t).eps));
  // Dynamic thresholding: s = clamp(quantile(|x̂_0|, ratio), 1, max), x̂_0 ← clamp(x̂_0, −s, s)/s.
  auto th = fewstep::threshold_x0(net, 0.5, 2.0)(x, t);
  auto x0 = (x * 3.0);
  for (int64_t b = 0; b < 2; ++b) {
    const double q = at::quantile(x0[b].abs(), 0.5).item<double>();
    const double s = std::min(std::max(q, 1.0), 2.0);
    EXPECT_TRUE(at::allclose(th.x0[b], at::clamp(x0[b], -s, s) / s)) << b;
  }
  EXPECT_THROW(fewstep::clip_x0(net, 0.0), c10::ValueError);
  EXPECT_THROW(fewstep::threshold_x0(net, 1.5), c10::ValueError);
  EXPECT_THROW(fewstep::threshold_x0(net, 0.9, 0.5), c10::ValueError);
}

TEST(Transforms, VEViewIsTheSameModelAtXOverAlpha) {
  auto sched = fewstep::VPDiscrete::ddpm_linear(1000);
  auto gmm = fewstep::GaussianMixture::random(4, 3, 1);
  auto vp = fewstep::Denoiser::exact(gmm, sched);
  auto ve = fewstep::ve_view(vp);
  EXPECT_EQ(ve.schedule_ref().family(), fewstep::ScheduleFamily::VE);
  EXPECT_NEAR(ve.schedule_ref().t_max(), sched->sigma_tilde(1.0), 1e-12);
  auto x = at::randn({3, 4}, at::kDouble);
  for (double t : {0.002, 0.3, 0.77, 1.0}) {
    const double st = sched->sigma_tilde(t);
    auto a = vp(x, t);
    auto b = ve(x / sched->alpha(t), st);
    EXPECT_TRUE(at::allclose(a.x0, b.x0, 1e-9, 1e-9)) << t;
    EXPECT_TRUE(at::allclose(a.eps, b.eps, 1e-9, 1e-9)) << t;
  }
  EXPECT_THROW(fewstep::ve_view(ve), c10::ValueError);  // already VE
}

TEST(Transforms, FlowPredictionAtPureNoise) {
  // FlowMatching(…, 1): at t = 1 (α = 0) a velocity u = ε − x_0 still gives x̂_0 = x − u, ε̂ = x.
  auto flow = std::make_shared<fewstep::FlowMatching>(1e-6, 1.0);
  auto x = at::randn({2, 5}, at::kDouble), u = at::randn({2, 5}, at::kDouble);
  auto r = fewstep::convert_prediction(x, u, Prediction::Flow, *flow, 1.0);
  EXPECT_TRUE(at::allclose(r.x0, x - u));
  EXPECT_TRUE(at::allclose(r.eps, x));
  EXPECT_THROW(fewstep::convert_prediction(x, u, Prediction::Eps, *flow, 1.0), c10::ValueError);
}
