// Tests of the reference networks: shapes, documented parameter counts, time and label
// conditioning, TorchScript save/load (torch::jit::load and Denoiser::torchscript), gradients.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network.h"
#include "fewstep/nets/unet.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using fewstep::MlpConfig;
using fewstep::UNetConfig;

std::string temp_dir() {
  const char* env = std::getenv("FEWSTEP_TEST_TMP");
  fs::path dir = env && *env ? env : "/tmp";
  dir /= "fewstep_test_nets_" + std::to_string(::getpid());
  fs::create_directories(dir);
  return dir.string();
}

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor run(torch::jit::Module& m, const at::Tensor& x, const at::Tensor& t) { return m.forward({x, t}).toTensor(); }

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

UNetConfig tiny_unet() {
  UNetConfig c;
  c.base_channels = 8;
  c.groups = 4;
  return c;
}

// ---------------------------------------------------------------------------------------------
// MLP

TEST(Mlp, ShapeAndDocumentedParameterCount) {
  MlpConfig c;
  auto net = fewstep::make_mlp(c, 0);
  const at::Tensor y = run(*net, at::randn({7, 2}, gen(1)), at::rand({7}, gen(2)));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{7, 2}));
  // Counted by hand from the architecture (nets/mlp.h): time MLP, input, 3 blocks, output.
  const int64_t f = 64, e = 128, h = 128, d = 2;
  const int64_t expected = (f * e + e) + (e * e + e) + (d * h + h) + 3 * (2 * (h * h + h) + e * h + h) + (h * d + d);
  EXPECT_EQ(expected, 174082);
  EXPECT_EQ(fewstep::parameter_count(*net), expected);
  EXPECT_EQ(fewstep::mlp_parameter_count(c), expected);
  c.dim = 16;
  EXPECT_EQ(fewstep::parameter_count(*fewstep::make_mlp(c, 0)), 177680);
  EXPECT_EQ(fewstep::mlp_parameter_count(c), 177680);
}

TEST(Mlp, TimeConditioningMatters) {
  auto net = fewstep::make_mlp(MlpConfig{}, 0);
  const at::Tensor x = at::randn({8, 2}, gen(1));
  const at::Tensor a = run(*net, x, at::full({8}, 0.1)), b = run(*net, x, at::full({8}, 0.7));
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);
  // A scalar t is broadcast to the batch.
  EXPECT_TRUE(at::allclose(run(*net, x, at::scalar_tensor(0.1)), a, 1e-6, 1e-6));
}

TEST(Mlp, SeedDecidesTheInitialisation) {
  auto a = fewstep::make_mlp(MlpConfig{}, 3), b = fewstep::make_mlp(MlpConfig{}, 3),
       c = fewstep::make_mlp(MlpConfig{}, 4);
  const auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool all_same = true, any_diff = false;
  auto ib = pb.begin(), ic = pc.begin();
  for (auto ia = pa.begin(); ia != pa.end(); ++ia, ++ib, ++ic) {
    all_same = all_same && at::equal(*ia, *ib);
    any_diff = any_diff || !at::equal(*ia, *ic);
  }
  EXPECT_TRUE(all_same);
  EXPECT_TRUE(any_diff);
}

TEST(Mlp, BadConfigNamesTheField) {
  MlpConfig c;
  c.hidden = 0;
  EXPECT_NE(value_error_message([&] { fewstep::make_mlp(c, 0); }).find("MlpConfig.hidden"), std::string::npos);
  c = MlpConfig{};
  c.time_frequencies = 7;
  EXPECT_NE(value_error_message([&] { fewstep::make_mlp(c, 0); }).find("time_frequencies"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// UNet

TEST(UNet, ShapeAndDocumentedParameterCounts) {
  auto net = fewstep::make_unet(UNetConfig{}, 0);
  const at::Tensor y = run(*net, at::randn({2, 1, 28, 28}, gen(1)), at::rand({2}, gen(2)));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 1, 28, 28}));
  // The counts documented in nets/unet.h.
  EXPECT_EQ(fewstep::parameter_count(*net), 831329);
  UNetConfig two;
  two.res_blocks = 2;
  EXPECT_EQ(fewstep::parameter_count(*fewstep::make_unet(two, 0)), 1239841);
  UNetConfig narrow;
  narrow.base_channels = 24;
  EXPECT_EQ(fewstep::parameter_count(*fewstep::make_unet(narrow, 0)), 470281);
  UNetConfig plain;
  plain.attention = false;
  auto no_attn = fewstep::make_unet(plain, 0);
  EXPECT_EQ(run(*no_attn, at::randn({1, 1, 28, 28}), at::rand({1})).sizes(), (std::vector<int64_t>{1, 1, 28, 28}));
}

TEST(UNet, TimeConditioningMatters) {
  auto net = fewstep::make_unet(tiny_unet(), 0);
  const at::Tensor x = at::randn({3, 1, 28, 28}, gen(1));
  const at::Tensor a = run(*net, x, at::full({3}, 0.05)), b = run(*net, x, at::full({3}, 0.9));
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);
}

TEST(UNet, GradientsReachEveryParameter) {
  auto net = fewstep::make_unet(tiny_unet(), 0);
  const at::Tensor out = run(*net, at::randn({2, 1, 28, 28}, gen(1)), at::rand({2}, gen(2)));
  out.pow(2).mean().backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value.grad().defined()) << p.name;
    EXPECT_GT(p.value.grad().abs().sum().item<double>(), 0.0) << p.name;
  }
}

TEST(Mlp, GradientsReachEveryParameter) {
  auto net = fewstep::make_mlp(MlpConfig{}, 0);
  run(*net, at::randn({4, 2}, gen(1)), at::rand({4}, gen(2))).pow(2).mean().backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value.grad().defined()) << p.name;
    EXPECT_GT(p.value.grad().abs().sum().item<double>(), 0.0) << p.name;
  }
}

TEST(UNet, BadConfigNamesTheField) {
  UNetConfig c;
  c.groups = 5;
  EXPECT_NE(value_error_message([&] { fewstep::make_unet(c, 0); }).find("UNetConfig.groups"), std::string::npos);
  c = UNetConfig{};
  c.image_size = 30;
  EXPECT_NE(value_error_message([&] { fewstep::make_unet(c, 0); }).find("UNetConfig.image_size"), std::string::npos);
  c = UNetConfig{};
  c.channel_mult = {};
  EXPECT_NE(value_error_message([&] { fewstep::make_unet(c, 0); }).find("channel_mult"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Export

TEST(Export, SavedModulesLoadAndMatch) {
  const std::string dir = temp_dir();
  auto schedule = std::make_shared<fewstep::VPLinear>();
  struct Case {
    std::string name;
    fewstep::ScriptNet net;
    at::Tensor x;
  };
  const std::vector<Case> cases = {{"mlp", fewstep::make_mlp(MlpConfig{}, 1), at::randn({5, 2}, gen(3))},
                                   {"unet", fewstep::make_unet(tiny_unet(), 1), at::randn({2, 1, 28, 28}, gen(4))}};
  for (const Case& c : cases) {
    const std::string path = dir + "/" + c.name + ".pt";
    fewstep::save_network(*c.net, path);
    const at::Tensor t = at::full({c.x.size(0)}, 0.3);
    const at::Tensor expected = run(*c.net, c.x, t);

    torch::jit::Module loaded = torch::jit::load(path);
    EXPECT_TRUE(at::equal(run(loaded, c.x, t), expected)) << c.name;
    EXPECT_EQ(fewstep::parameter_count(loaded), fewstep::parameter_count(*c.net)) << c.name;

    // Denoiser::torchscript feeds t as a [B] tensor in x's dtype and reads ε.
    const fewstep::Denoiser model = fewstep::Denoiser::torchscript(path, schedule, fewstep::Prediction::Eps);
    EXPECT_TRUE(at::equal(model(c.x, 0.3).eps, expected)) << c.name;
    // Inputs and outputs beside the archive, for checking torch.jit.load in Python by hand:
    //   io = torch.load("<name>.io.pt"); torch.equal(torch.jit.load("<name>.pt")(io["x"], io["t"]), io["y"])
    fewstep::Checkpoint io;
    io.set_tensor("x", c.x);
    io.set_tensor("t", t);
    io.set_tensor("y", expected);
    io.save(dir + "/" + c.name + ".io.pt");
  }
}

TEST(Export, ClassConditionalHook) {
  MlpConfig c;
  c.num_classes = 10;
  auto net = fewstep::make_mlp(c, 0);
  EXPECT_EQ(fewstep::parameter_count(*net), fewstep::mlp_parameter_count(c));
  EXPECT_EQ(fewstep::mlp_parameter_count(c), 174082 + 11 * 128);
  const at::Tensor x = at::randn({4, 2}, gen(1)), t = at::full({4}, 0.5);
  const at::Tensor uncond = run(*net, x, t);
  // y = None is the null class; forward(x, t) still works (Denoiser's two-argument call).
  EXPECT_TRUE(at::equal(net->forward({x, t, c10::IValue()}).toTensor(), uncond));
  const at::Tensor y = at::tensor(std::vector<int64_t>{0, 1, 2, 3});
  EXPECT_GT((net->forward({x, t, y}).toTensor() - uncond).abs().max().item<double>(), 1e-4);
  UNetConfig u = tiny_unet();
  u.num_classes = 10;
  auto unet = fewstep::make_unet(u, 0);
  EXPECT_EQ(unet->forward({at::randn({4, 1, 28, 28}), t, y}).toTensor().sizes(), (std::vector<int64_t>{4, 1, 28, 28}));
}

}  // namespace
