#include "fewstep/train/rollout_cache.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "fewstep/core/check.h"
#include "fewstep/sample/sample.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep {

namespace {
constexpr const char* kFormat = "fewstep.rollouts.v1";
}  // namespace

RolloutPairs teacher_rollouts(const std::function<Denoiser(const at::Tensor& labels)>& make_teacher,
                              const Stepper& stepper, const RolloutSpec& spec, const std::string& settings,
                              const std::string& cache_path) {
  FEWSTEP_CHECK_VALUE(spec.n >= 1, "RolloutSpec.n must be >= 1, got ", spec.n);
  FEWSTEP_CHECK_VALUE(!spec.sample_shape.empty(), "RolloutSpec.sample_shape must not be empty");
  FEWSTEP_CHECK_VALUE(spec.grid.size() >= 2, "RolloutSpec.grid needs >= 2 times, got ", spec.grid.size());
  FEWSTEP_CHECK_VALUE(spec.batch >= 1, "RolloutSpec.batch must be >= 1, got ", spec.batch);
  if (!cache_path.empty() && std::filesystem::exists(cache_path)) {
    const TensorArchive c = TensorArchive::load(cache_path);
    if (c.contains("format") && c.string("format") == kFormat && c.string("settings") == settings) {
      RolloutPairs out{c.tensor("x_T"), c.tensor("x_0"), {}, settings, true};
      if (c.contains("labels")) out.labels = c.tensor("labels");
      return out;
    }
  }
  std::vector<int64_t> shape = {spec.n};
  shape.insert(shape.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  at::Tensor x_T = at::empty(shape, at::kFloat), x_0 = at::empty(shape, at::kFloat);
  std::vector<int64_t> one = {1};
  one.insert(one.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  for (int64_t i = 0; i < spec.n; ++i) {
    at::Generator g = at::detail::createCPUGenerator(spec.seed + static_cast<uint64_t>(i));
    x_T[i].copy_(at::randn(one, g, at::kFloat)[0]);
  }
  at::Tensor labels;
  if (spec.num_classes > 0) labels = at::arange(spec.n, at::kLong).remainder(spec.num_classes);
  ProgressBar bar(spec.n, "teacher rollouts", spec.progress);
  for (int64_t start = 0; start < spec.n; start += spec.batch) {
    const int64_t b = std::min(spec.batch, spec.n - start);
    const at::Tensor y = labels.defined() ? labels.narrow(0, start, b) : at::Tensor();
    const Denoiser teacher = make_teacher(y);
    x_0.narrow(0, start, b).copy_(sample(teacher, x_T.narrow(0, start, b), stepper, spec.grid).x);
    bar.update(start + b);
  }
  bar.close();
  if (!cache_path.empty()) {
    TensorArchive c;
    c.set_string("format", kFormat);
    c.set_string("settings", settings);
    c.set_tensor("x_T", x_T);
    c.set_tensor("x_0", x_0);
    if (labels.defined()) c.set_tensor("labels", labels);
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cache_path).parent_path(), ec);
    c.save(cache_path);
  }
  return {x_T, x_0, labels, settings, false};
}

}  // namespace fewstep
