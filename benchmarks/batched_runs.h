// Shared by the benchmarks that sample many seeds: one sampling run over all samples in batches
// (timed, with a progress bar), and a cache for expensive reference samples keyed by everything
// that determines them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fewstep/sample/sample.h"

namespace fewstep::bench {

struct Run {
  at::Tensor x;
  int64_t nfe = 0;  ///< per sample
  int64_t steps = 0;
  double seconds = 0;
};

/// x_T of n samples, sample i drawn from its own generator seeded with seed + i (float32, then `dtype`):
/// a sample does not depend on n or on the batch it is solved in.
at::Tensor seeded_noise(const std::vector<int64_t>& shape, int64_t n, uint64_t seed,
                        at::ScalarType dtype = at::kFloat);

/// Runs `solve(chunk)` over x_T in chunks of `batch` and concatenates the results.
Run run_batched(const at::Tensor& x_T, int64_t batch, const std::string& label, bool progress,
                const std::function<Solution(const at::Tensor& chunk)>& solve);

/// The tensor cached at `path` under `key`, or make() (whose result and seconds are then stored).
at::Tensor cached_run(const std::string& path, const std::string& key, const std::function<Run()>& make,
                      double* seconds);

}  // namespace fewstep::bench
