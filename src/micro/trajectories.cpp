#include "fewstep/micro/trajectories.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/core/tensor_archive.h"

namespace fewstep {

namespace {
constexpr const char* kFormat = "fewstep.micro_trajectories.v1";
}  // namespace

void TrajectorySpec::validate() const {
  FEWSTEP_CHECK_VALUE(!sample_shape.empty(), "TrajectorySpec.sample_shape must not be empty");
  FEWSTEP_CHECK_VALUE(n >= 1, "TrajectorySpec.n must be >= 1, got ", n);
  FEWSTEP_CHECK_VALUE(segments >= 1, "TrajectorySpec.segments must be >= 1, got ", segments);
  FEWSTEP_CHECK_VALUE(substeps >= 1, "TrajectorySpec.substeps must be >= 1, got ", substeps);
  FEWSTEP_CHECK_VALUE(batch >= 1, "TrajectorySpec.batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble, "TrajectorySpec.dtype must be float32 or float64, got ",
                      dtype);
}

DenseTrajectories dense_trajectories(const Denoiser& teacher, const TrajectorySpec& spec, const std::string& teacher_id,
                                     const std::string& cache_path) {
  spec.validate();
  const NoiseSchedule& schedule = teacher.schedule_ref();
  const double t_start = spec.t_start > 0 ? spec.t_start : schedule.t_max();
  const double t_end = spec.t_end > 0 ? spec.t_end : schedule.t_min();
  FEWSTEP_CHECK_VALUE(t_start > t_end, "dense_trajectories: t_start (", t_start, ") must exceed t_end (", t_end, ")");
  const int64_t g = spec.segments, k = spec.substeps;
  const std::vector<double> fine = timesteps(schedule, g * k, Spacing::LogSNR, t_start, t_end);
  DenseTrajectories out;
  for (int64_t j = 0; j <= g; ++j) {
    out.times.push_back(fine[j * k]);
    out.lambdas.push_back(schedule.lambda(fine[j * k]));
  }
  out.settings = nlohmann::json{{"teacher", teacher_id},      {"schedule", schedule.repr()},
                                {"sample_shape", spec.sample_shape}, {"n", spec.n},
                                {"seed", spec.seed},          {"segments", g},
                                {"substeps", k},              {"t_start", t_start},
                                {"t_end", t_end},             {"dtype", std::string(c10::toString(spec.dtype))},
                                {"solver", "deis(order=3, variable=lambda), logsnr grid"}}
                     .dump();
  if (!cache_path.empty() && std::filesystem::exists(cache_path)) {
    const TensorArchive c = TensorArchive::load(cache_path);
    if (c.contains("format") && c.string("format") == kFormat && c.string("settings") == out.settings) {
      out.x = c.tensor("x");
      out.eps = c.tensor("eps");
      out.from_cache = true;
      return out;
    }
  }
  std::vector<int64_t> one = {1}, shape_x = {spec.n, g + 1}, shape_e = {spec.n, g};
  one.insert(one.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  shape_x.insert(shape_x.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  shape_e.insert(shape_e.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  out.x = at::empty(shape_x, spec.dtype);
  out.eps = at::empty(shape_e, spec.dtype);
  const auto stepper = solver("deis", {{"order", int64_t{3}}, {"variable", std::string("lambda")}});
  const auto clock = std::chrono::steady_clock::now();
  for (int64_t start = 0; start < spec.n; start += spec.batch) {
    const int64_t b = std::min(spec.batch, spec.n - start);
    std::vector<at::Tensor> x_T;
    for (int64_t i = start; i < start + b; ++i) {
      at::Generator gen = at::detail::createCPUGenerator(spec.seed + static_cast<uint64_t>(i));
      x_T.push_back(at::randn(one, gen, at::kFloat).to(spec.dtype));
    }
    at::Tensor x_batch = out.x.narrow(0, start, b), e_batch = out.eps.narrow(0, start, b);
    x_batch.select(1, 0).copy_(at::cat(x_T));
    SampleOptions so;
    so.callback = [&](const StepInfo& info) {
      // Step i runs t_i → t_{i+1} with one evaluation at t_i: at a knot j = i/k its x̂_0 gives
      // ε̂_j = (x_j − α x̂_0)/σ; the step landing on knot (i+1)/k stores x there.
      if (info.index % k == 0) {
        const int64_t j = info.index / k;
        e_batch.select(1, j).copy_((x_batch.select(1, j) - schedule.alpha(info.t) * info.x0) / schedule.sigma(info.t));
      }
      if ((info.index + 1) % k == 0) x_batch.select(1, (info.index + 1) / k).copy_(info.x);
    };
    sample(teacher, x_batch.select(1, 0).clone(), *stepper, fine, so);
    if (spec.progress) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - clock).count();
      std::cerr << "[micro] teacher trajectories " << start + b << "/" << spec.n << " (" << g * k
                << " DEIS-3 steps each, " << seconds << " s)" << std::endl;
    }
  }
  if (!cache_path.empty()) {
    TensorArchive c;
    c.set_string("format", kFormat);
    c.set_string("settings", out.settings);
    c.set_tensor("x", out.x);
    c.set_tensor("eps", out.eps);
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cache_path).parent_path(), ec);
    c.save(cache_path);
  }
  return out;
}

}  // namespace fewstep
