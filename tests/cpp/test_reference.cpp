// The float64 reference ODE solve: closed-form single-Gaussian flows under VP, VE and flow
// matching, self-consistency on a mixture, evaluation accounting and input errors.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/sample/reference.h"
#include "fewstep/schedules/schedule.h"
#include "test_util.h"

namespace fewstep {
namespace {

using testing::generator;

// The tensors here are tiny: intra-op threads only add synchronisation (badly so on a busy machine).
class ReferenceEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
[[maybe_unused]] const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ReferenceEnvironment);

// Max over samples of the Euclidean error.
double max_l2(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).flatten(1).norm(2, 1).max().item<double>();
}

struct GaussianCase {
  std::string name;
  SchedulePtr schedule;
  double t_start, t_end;
};

// Per-coordinate closed form x_t = α_t μ + √(α_t² s² + σ_t²)/√(α_T² s² + σ_T²) (x_T − α_T μ).
// With rtol = atol = 1e-12 the global error of a 5th-order solve stays well under 1e-9 in
// x (|x| = O(1) at t_end for these data); 1e-9 leaves room for accumulated round-off.
void expect_matches_closed_form(const GaussianCase& c) {
  const int64_t dim = 6, batch = 32;
  auto gen = generator(1);
  auto mean = at::randn({dim}, gen, at::kDouble);
  auto var = at::rand({dim}, gen, at::kDouble) * 0.99 + 0.01;  // s² in [0.01, 1]
  auto model = Denoiser::exact(testing::single_gaussian(mean, var), c.schedule);
  const double s_T = c.schedule->sigma(c.t_start);
  auto x_T = at::randn({batch, dim}, gen, at::kDouble) * s_T;

  ReferenceOptions opts;
  opts.rtol = opts.atol = 1e-12;
  auto ref = reference_solve(model, x_T, c.t_start, c.t_end, opts);
  auto exact = testing::single_gaussian_flow(*c.schedule, x_T, mean, var, c.t_start, c.t_end);
  const double err = (ref.x - exact).abs().max().item<double>();
  EXPECT_LT(err, 1e-9) << c.name << ": nfe " << ref.nfe << ", accepted " << ref.accepted;
  EXPECT_EQ(ref.x.scalar_type(), at::kDouble);
  EXPECT_EQ(ref.x.sizes(), x_T.sizes());
}

TEST(Reference, SingleGaussianVPLinear) {
  expect_matches_closed_form({"vp_linear", std::make_shared<VPLinear>(0.1, 20.0), 1.0, 1e-3});
}

TEST(Reference, SingleGaussianVE) {
  expect_matches_closed_form({"ve_edm", std::make_shared<VE>(0.002, 80.0), 80.0, 0.002});
}

TEST(Reference, SingleGaussianFlowMatching) {
  expect_matches_closed_form({"flow", std::make_shared<FlowMatching>(), 0.999, 1e-3});
}

TEST(Reference, MixtureTolerancesAgree) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(16, 8, 0), sched);
  auto x_T = at::randn({64, 16}, generator(7), at::kDouble);
  ReferenceOptions loose, tight;
  loose.rtol = loose.atol = 1e-9;
  tight.rtol = tight.atol = 1e-11;
  auto a = reference_solve(model, x_T, 1.0, 1e-3, loose);
  auto b = reference_solve(model, x_T, 1.0, 1e-3, tight);
  EXPECT_LT(max_l2(a.x, b.x), 1e-8) << "accepted " << a.accepted << " vs " << b.accepted;
  EXPECT_GT(b.accepted, a.accepted);
}

// With error-per-step control and a 4th-order estimator, accepted steps grow like tol^{-1/5}:
// five decades of tolerance give about ×10. A lower-order (wrong) tableau would give far more.
TEST(Reference, StepCountScalesLikeFifthOrder) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(16, 8, 0), sched);
  auto x_T = at::randn({16, 16}, generator(3), at::kDouble);
  ReferenceOptions loose, tight;
  loose.rtol = loose.atol = 1e-6;
  tight.rtol = tight.atol = 1e-11;
  auto a = reference_solve(model, x_T, 1.0, 1e-3, loose);
  auto b = reference_solve(model, x_T, 1.0, 1e-3, tight);
  const double ratio = static_cast<double>(b.accepted) / a.accepted;
  EXPECT_GT(ratio, 5.0) << a.accepted << " vs " << b.accepted;
  EXPECT_LT(ratio, 20.0) << a.accepted << " vs " << b.accepted;
}

TEST(Reference, EvaluationCount) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(4, 3, 1), sched);
  auto x_T = at::randn({8, 4}, generator(2), at::kDouble);
  auto automatic = reference_solve(model, x_T, 1.0, 1e-3, {1e-8, 1e-8});
  // First evaluation, starting-step probe, then 6 new stages per attempted step (FSAL).
  EXPECT_EQ(automatic.nfe, 2 + 6 * (automatic.accepted + automatic.rejected));
  ReferenceOptions given{1e-8, 1e-8, 100000, 0.05};
  auto fixed_first = reference_solve(model, x_T, 1.0, 1e-3, given);
  EXPECT_EQ(fixed_first.nfe, 1 + 6 * (fixed_first.accepted + fixed_first.rejected));
  EXPECT_LT(max_l2(automatic.x, fixed_first.x), 1e-6);
}

TEST(Reference, FollowsShapeAndConvertsToDouble) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(4, 2, 5), sched);
  auto x_T = at::randn({3, 4}, generator(4), at::kFloat);
  auto r = reference_solve(model, x_T, 1.0, 0.01, {1e-8, 1e-8});
  EXPECT_EQ(r.x.scalar_type(), at::kDouble);
  EXPECT_EQ(r.x.sizes(), x_T.sizes());
  // Partial range: t_start and t_end need not be the schedule's ends.
  auto mid = reference_solve(model, x_T.to(at::kDouble), 0.5, 0.2, {1e-8, 1e-8});
  EXPECT_TRUE(at::isfinite(mid.x).all().item<bool>());
}

TEST(Reference, MaxStepsErrorSaysWhatToChange) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(4, 3, 1), sched);
  auto x_T = at::randn({8, 4}, generator(2), at::kDouble);
  ReferenceOptions opts;
  opts.max_steps = 5;
  try {
    reference_solve(model, x_T, 1.0, 1e-3, opts);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("max_steps = 5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("raise ReferenceOptions::max_steps or loosen rtol/atol"), std::string::npos) << msg;
  }
}

TEST(Reference, RejectsBadArguments) {
  auto sched = std::make_shared<VPLinear>(0.1, 20.0);
  auto model = Denoiser::exact(GaussianMixture::random(4, 3, 1), sched);
  auto x_T = at::randn({8, 4}, generator(2), at::kDouble);
  auto expect_value_error = [&](double t0, double t1, ReferenceOptions o, const std::string& needle) {
    try {
      reference_solve(model, x_T, t0, t1, o);
      ADD_FAILURE() << "expected ValueError mentioning '" << needle << "'";
    } catch (const c10::ValueError& e) {
      const std::string msg = e.what_without_backtrace();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_value_error(1e-3, 1.0, {}, "t_start must be greater than t_end");
  expect_value_error(0.5, 0.5, {}, "t_start must be greater than t_end");
  expect_value_error(2.0, 1e-3, {}, "t_start must lie in the schedule's range");
  expect_value_error(1.0, 1e-4, {}, "t_end must lie in the schedule's range");
  expect_value_error(1.0, 1e-3, {0.0, 1e-10}, "rtol must be positive, got 0");
  expect_value_error(1.0, 1e-3, {1e-10, -1.0}, "atol must be positive, got -1");
  expect_value_error(1.0, 1e-3, {1e-10, 1e-10, 0}, "max_steps must be positive, got 0");
  expect_value_error(1.0, 1e-3, {1e-10, 1e-10, 10, -0.1}, "first_step must be >= 0");
  EXPECT_THROW(reference_solve(model, at::Tensor(), 1.0, 1e-3), c10::ValueError);
  EXPECT_THROW(reference_solve(model, at::ones({8, 4}, at::kLong), 1.0, 1e-3), c10::TypeError);
}

}  // namespace
}  // namespace fewstep
