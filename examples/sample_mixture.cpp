// Samples a 2-D Gaussian mixture with several solvers at 10 steps and prints each one's
// error against a 500-step DPM-Solver++(2M) solve from the same noise.
//   build/bin/example_sample_mixture
#include <fewstep/fewstep.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>

int main() {
  auto schedule = std::make_shared<fewstep::VPLinear>(0.1, 20.0);
  auto mixture = fewstep::GaussianMixture::random(/*dim=*/2, /*components=*/4, /*seed=*/0);
  auto model = fewstep::Denoiser::exact(mixture, schedule);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(/*seed=*/1);
  at::Tensor x_T = at::randn({512, 2}, gen, at::kDouble);

  auto reference = fewstep::sample(model, x_T, "dpmpp_2m", 500).x;
  std::printf("%-10s %5s %12s\n", "solver", "NFE", "RMSE");
  for (const auto& name : fewstep::stepper_names()) {
    const auto& traits = fewstep::stepper_traits(name);
    const int64_t steps = std::max<int64_t>(1, 10 / traits.nfe_per_step);
    auto result = fewstep::sample(model, x_T, name, steps);
    double rmse = (result.x - reference).pow(2).sum(-1).mean().sqrt().item<double>();
    std::printf("%-10s %5lld %12.3e\n", name.c_str(), static_cast<long long>(result.nfe), rmse);
  }
  return 0;
}
