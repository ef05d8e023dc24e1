// fewstep-bench-speed: Google Benchmark timings of one full 10-step sample on the exact
// 16-D, 8-component Gaussian mixture, for every deterministic registered stepper and several
// batch sizes; items/s = samples per second. Extra flag: --threads=N (LibTorch intra-op threads).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/version.h"

namespace {

constexpr int64_t kDim = 16, kComponents = 8, kSteps = 10;

// Removes "--threads=N" from argv (Google Benchmark rejects flags it does not know).
int take_threads_flag(int* argc, char** argv) {
  int threads = 0, out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return threads;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = take_threads_flag(&argc, argv);
  if (threads > 0) at::set_num_threads(threads);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  auto schedule = std::make_shared<fewstep::VPLinear>(0.1, 20.0);
  auto model = std::make_shared<fewstep::Denoiser>(
      fewstep::Denoiser::exact(fewstep::GaussianMixture::random(kDim, kComponents, 0), schedule));
  const auto grid = fewstep::timesteps(*schedule, kSteps, fewstep::Spacing::LogSNR);
  benchmark::AddCustomContext("fewstep", fewstep::version());
  benchmark::AddCustomContext("torch", fewstep::torch_version());
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  benchmark::AddCustomContext("problem", "GaussianMixture::random(16, 8, 0), VPLinear(0.1, 20), 10 logsnr steps, "
                                         "float32");

  for (const auto& entry : fewstep::registered_steppers()) {
    if (entry.traits.stochastic) continue;
    std::shared_ptr<const fewstep::Stepper> stepper = entry.make(fewstep::Options{});
    for (int64_t batch : {1, 64, 1024}) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
      at::Tensor x_T = at::randn({batch, kDim}, gen, at::kFloat);
      const std::string name = "sample/" + entry.traits.name + "/batch:" + std::to_string(batch);
      benchmark::RegisterBenchmark(name.c_str(),
                                   [=](benchmark::State& state) {
                                     int64_t nfe = 0;
                                     for (auto _ : state) {
                                       auto sol = fewstep::sample(*model, x_T, *stepper, grid);
                                       benchmark::DoNotOptimize(sol.x.data_ptr());
                                       nfe = sol.nfe;
                                     }
                                     state.SetItemsProcessed(state.iterations() * batch);
                                     state.counters["nfe"] = static_cast<double>(nfe);
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
