#include "batched_runs.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <vector>

#include "fewstep/core/noise.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep::bench {

at::Tensor seeded_noise(const std::vector<int64_t>& shape, int64_t n, uint64_t seed, at::ScalarType dtype) {
  std::vector<uint64_t> seeds(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) seeds[static_cast<size_t>(i)] = seed + static_cast<uint64_t>(i);
  return randn_per_sample(shape, seeds, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

Run run_batched(const at::Tensor& x_T, int64_t batch, const std::string& label, bool progress,
                const std::function<Solution(const at::Tensor& chunk)>& solve) {
  std::vector<at::Tensor> parts;
  Run run;
  const int64_t n = x_T.size(0);
  ProgressBar bar(n, label, progress);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; i += batch) {
    Solution sol = solve(x_T.slice(0, i, std::min(n, i + batch)));
    parts.push_back(sol.x);
    run.nfe = sol.nfe;
    run.steps = sol.steps;
    bar.update(std::min(n, i + batch));
  }
  bar.close();
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.x = at::cat(parts);
  return run;
}

at::Tensor cached_run(const std::string& path, const std::string& key, const std::function<Run()>& make,
                      double* seconds) {
  if (std::filesystem::exists(path)) {
    const TensorArchive cached = TensorArchive::load(path);
    if (cached.contains("key") && cached.string("key") == key) {
      std::cerr << "reusing " << path << "\n";
      *seconds = static_cast<double>(cached.integer("milliseconds")) / 1e3;
      return cached.tensor("x");
    }
  }
  const Run run = make();
  TensorArchive out;
  out.set_string("key", key);
  out.set_tensor("x", run.x);
  out.set_int("milliseconds", static_cast<int64_t>(run.seconds * 1e3));
  out.save(path);
  *seconds = run.seconds;
  return run.x;
}

}  // namespace fewstep::bench
