// fewstep-bench-speed: Google Benchmark timings of one full 10-step sample on the exact
// 16-D, 8-component Gaussian mixture, for every deterministic registered stepper and several
// batch sizes; items/s = samples per second. Extra flag: --threads=N (LibTorch intra-op threads).
//
// overhead/<solver>/batch:64/full:{0,1}: the cost of sampling itself (stepper, loop, the Denoiser's
// conversions) with a network that costs one multiplication (ε̂ = x/2), side by side with
// SampleOptions::full_evaluations on (full:1, every evaluation converted into both x̂_0 and ε̂ and
// every error estimate computed, as before steppers declared StepperTraits::needs) and off (full:0).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/malloc_tuning.h"
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
  const std::string malloc_settings = fewstep::tune_malloc_for_tensors();  // core/malloc_tuning.h
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
  benchmark::AddCustomContext("malloc", malloc_settings);
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
  // Sampling overhead: a network of one multiplication, with and without full evaluations.
  auto cheap = std::make_shared<fewstep::Denoiser>(
      [](const at::Tensor& x, const at::Tensor& /*t*/) { return x * 0.5; }, schedule, fewstep::Prediction::Eps);
  for (const auto& entry : fewstep::registered_steppers()) {
    if (entry.traits.stochastic) continue;
    std::shared_ptr<const fewstep::Stepper> stepper = entry.make(fewstep::Options{});
    const int64_t batch = 64;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    at::Tensor x_T = at::randn({batch, kDim}, gen, at::kFloat);
    for (bool full : {true, false}) {
      fewstep::SampleOptions options;
      options.full_evaluations = full;
      const std::string name = "overhead/" + entry.traits.name + "/batch:64/full:" + (full ? "1" : "0");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [=](benchmark::State& state) {
                                     for (auto _ : state) {
                                       auto sol = fewstep::sample(*cheap, x_T, *stepper, grid, options);
                                       benchmark::DoNotOptimize(sol.x.data_ptr());
                                     }
                                     state.SetItemsProcessed(state.iterations() * kSteps);  // steps/s
                                   })
          ->Unit(benchmark::kMicrosecond)
          ->MeasureProcessCPUTime();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
