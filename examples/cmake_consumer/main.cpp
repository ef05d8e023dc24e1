// Minimal application linked through find_package(fewstep): samples a 2-D Gaussian mixture
// with DPM-Solver++(2M) in 10 steps and checks the result against a 400-step solve.
#include <fewstep/fewstep.h>

#include <ATen/ATen.h>

#include <cstdio>

int main() {
  auto schedule = std::make_shared<fewstep::VPLinear>(0.1, 20.0);
  auto model = fewstep::Denoiser::exact(fewstep::GaussianMixture::random(2, 3, /*seed=*/0), schedule);
  at::manual_seed(0);
  at::Tensor x_T = at::randn({256, 2}, at::kDouble);
  auto fast = fewstep::sample(model, x_T, "dpmpp_2m", 10);
  auto fine = fewstep::sample(model, x_T, "dpmpp_2m", 400);
  const double err = (fast.x - fine.x).norm(2, {1}).median().item<double>();
  std::printf("fewstep %s: dpmpp_2m, %lld evaluations, median error vs 400 steps %.3e\n",
              fewstep::version().c_str(), static_cast<long long>(fast.nfe), err);
  return (fast.nfe == 10 && err < 0.1) ? 0 : 1;
}
