// The sampling driver: callbacks, statistics, trajectory, finite checks, inference mode,
// grids and input validation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "fewstep/fewstep.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::generator;

namespace {
fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(0.1, 20.0); }
fs::Denoiser toy_model() {
  return fs::Denoiser([](const at::Tensor& x, const at::Tensor& /*t*/) { return 0.5 * x; }, vp(), fs::Prediction::Eps);
}
std::string message(const c10::Error& e) { return e.what_without_backtrace(); }
}  // namespace

TEST(Sample, CallbackSeesEveryStepInOrder) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(0));
  std::vector<fs::StepInfo> seen;
  std::vector<int64_t> nfes;
  fs::SampleOptions opts;
  opts.callback = [&](const fs::StepInfo& info) {
    seen.push_back(info);
    nfes.push_back(info.nfe);
    EXPECT_EQ(info.x.sizes(), x_T.sizes());
    EXPECT_EQ(info.x0.sizes(), x_T.sizes());
  };
  auto out = fs::sample(model, x_T, "heun", 4, fs::Spacing::Time, {}, opts);
  ASSERT_EQ(seen.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen[i].index, i);
    EXPECT_EQ(seen[i].num_steps, 4);
    EXPECT_DOUBLE_EQ(seen[i].t, out.timesteps[i]);
    EXPECT_DOUBLE_EQ(seen[i].t_next, out.timesteps[i + 1]);
    EXPECT_EQ(nfes[i], 2 * (i + 1));
  }
}

TEST(Sample, TrajectoryAndStats) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(1));
  fs::SampleOptions opts;
  opts.keep_trajectory = true;
  auto out = fs::sample(model, x_T, "ddim", 5, fs::Spacing::LogSNR, {}, opts);
  ASSERT_EQ(out.trajectory.size(), 6u);
  EXPECT_TRUE(at::equal(out.trajectory.front(), x_T));
  EXPECT_TRUE(at::equal(out.trajectory.back(), out.x));
  ASSERT_EQ(out.stats.size(), 5u);
  for (const auto& s : out.stats) EXPECT_EQ(s.nfe, 1);
  EXPECT_EQ(out.timesteps.size(), 6u);
}

TEST(Sample, DenoiseToZeroCostsOneEvaluationAndReturnsX0) {
  auto model = toy_model();
  auto x_T = at::randn({2, 3}, generator(2));
  fs::SampleOptions opts;
  auto plain = fs::sample(model, x_T, "ddim", 3, fs::Spacing::LogSNR, {}, opts);
  opts.denoise_to_zero = true;
  auto denoised = fs::sample(model, x_T, "ddim", 3, fs::Spacing::LogSNR, {}, opts);
  EXPECT_EQ(denoised.nfe, plain.nfe + 1);
  auto expected = model(plain.x, plain.timesteps.back()).x0;
  EXPECT_TRUE(at::allclose(denoised.x, expected));
}

TEST(Sample, FiniteCheckNamesStepAndTime) {
  // The model returns NaN once t < 0.7, i.e. from the third step of a uniform 4-step grid.
  fs::Denoiser model(
      [](const at::Tensor& x, const at::Tensor& t) {
        return at::where(t.view({-1, 1}) < 0.7, at::full_like(x, NAN), 0.5 * x);
      },
      vp(), fs::Prediction::Eps);
  auto x_T = at::randn({2, 3}, generator(3));
  fs::SampleOptions opts;
  opts.check_finite = true;
  try {
    fs::sample(model, x_T, "euler", 4, fs::Spacing::Time, {}, opts, 1.0, 0.2);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    auto msg = message(e);
    EXPECT_NE(msg.find("step 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("t = 0.4"), std::string::npos) << msg;
  }
  opts.check_finite = false;  // without the check the NaN simply propagates
  auto out = fs::sample(model, x_T, "euler", 4, fs::Spacing::Time, {}, opts, 1.0, 0.2);
  EXPECT_TRUE(at::isnan(out.x).all().item<bool>());
}

TEST(Sample, InferenceModeByDefaultGradientsWhenAsked) {
  auto weight = at::full({1}, 0.5, at::kDouble).requires_grad_(true);
  fs::Denoiser model([&](const at::Tensor& x, const at::Tensor&) { return x * weight; }, vp(), fs::Prediction::Eps);
  auto x_T = at::randn({2, 3}, generator(4), at::kDouble);
  auto out = fs::sample(model, x_T, "dpmpp_2m", 3);
  EXPECT_TRUE(out.x.is_inference());
  fs::SampleOptions opts;
  opts.inference_mode = false;
  auto trained = fs::sample(model, x_T, "dpmpp_2m", 3, fs::Spacing::LogSNR, {}, opts);
  ASSERT_TRUE(trained.x.requires_grad());
  trained.x.sum().backward();
  ASSERT_TRUE(weight.grad().defined());
  EXPECT_NE(weight.grad().item<double>(), 0.0);
}

TEST(Sample, ExplicitGridIsValidated) {
  auto model = toy_model();
  auto stepper = fs::solver("ddim");
  auto x_T = at::randn({2, 3}, generator(5));
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {0.5, 0.7, 0.1}), c10::ValueError);  // not decreasing
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {1.5, 0.1}), c10::ValueError);       // outside range
  EXPECT_THROW(fs::sample(model, x_T, *stepper, {0.5}), c10::ValueError);            // one point
  auto out = fs::sample(model, x_T, *stepper, {0.9, 0.5, 0.01});
  EXPECT_EQ(out.nfe, 2);
}

TEST(Sample, BadInputsNameTheArgument) {
  auto model = toy_model();
  try {
    fs::sample(model, at::zeros({2, 3}, at::kLong), "ddim", 3);
    FAIL();
  } catch (const c10::TypeError& e) {
    EXPECT_NE(message(e).find("x_T"), std::string::npos);
  }
  try {
    fs::sample(model, at::Tensor(), "ddim", 3);
    FAIL();
  } catch (const c10::ValueError& e) {
    EXPECT_NE(message(e).find("x_T"), std::string::npos);
  }
  try {
    fs::sample(model, at::zeros({2, 3}), "ddim", 0);
    FAIL();
  } catch (const c10::ValueError& e) {
    EXPECT_NE(message(e).find("steps"), std::string::npos) << message(e);
  }
}

TEST(Sample, FollowsDtype) {
  auto gmm = fs::GaussianMixture::random(3, 2, 0);
  auto model = fs::Denoiser::exact(gmm, vp());
  auto x64 = at::randn({4, 3}, generator(6), at::kDouble);
  auto out64 = fs::sample(model, x64, "dpmpp_2m", 10);
  auto out32 = fs::sample(model, x64.to(at::kFloat), "dpmpp_2m", 10);
  EXPECT_EQ(out64.x.scalar_type(), at::kDouble);
  EXPECT_EQ(out32.x.scalar_type(), at::kFloat);
  // float32 arithmetic stays within float32 round-off of the float64 run.
  EXPECT_LT((out32.x.to(at::kDouble) - out64.x).abs().max().item<double>(), 1e-4);
}
