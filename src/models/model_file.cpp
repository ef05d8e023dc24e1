#include "fewstep/models/model_file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/models/guidance.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule_spec.h"

namespace fewstep {

std::string model_sidecar_path(const std::string& model_path) {
  return std::filesystem::path(model_path).replace_extension(".json").string();
}

namespace {

// The network of a conditional model file as a Denoiser for `c` (see the header).
Denoiser conditional_denoiser(const std::string& path, const SchedulePtr& schedule, Prediction prediction,
                              TimeInput time_input, double time_scale, int64_t num_classes, bool guidance_input,
                              std::optional<double> default_guidance, const ModelConditioning& c) {
  auto module = std::make_shared<torch::jit::Module>(torch::jit::load(path));
  module->eval();
  at::Tensor labels = c.labels;
  if (labels.defined()) {
    FEWSTEP_CHECK_VALUE(labels.dim() == 1 && labels.numel() >= 1, "conditioning.labels must be a 1-D tensor, got shape ",
                        labels.sizes());
    labels = labels.to(at::kLong);
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    FEWSTEP_CHECK_VALUE(lo >= 0 && hi < num_classes, "conditioning.labels must lie in [0, ", num_classes,
                        ") for model '", path, "', got range [", lo, ", ", hi, "]");
  }
  if (guidance_input) {
    const std::optional<double> s = c.guidance ? c.guidance : default_guidance;
    FEWSTEP_CHECK_VALUE(s.has_value(), "model '", path, "' takes a guidance weight as input; pass conditioning.guidance");
    FEWSTEP_CHECK_VALUE(std::isfinite(*s), "conditioning.guidance must be finite, got ", *s);
    const at::Tensor y = labels.defined() ? labels : at::full({1}, num_classes, at::kLong);
    const at::Tensor w = at::full({1}, *s, at::kDouble);
    Denoiser::Network fn = [module, y, w, path](const at::Tensor& x, const at::Tensor& t) {
      return forward_network(*module, x, t, y.to(x.device()), w.to(x.device(), x.scalar_type()), path.c_str());
    };
    return Denoiser(std::move(fn), schedule, prediction, time_input, time_scale);
  }
  const double s = c.guidance.value_or(1.0);
  if (s != 1.0) {
    FEWSTEP_CHECK_VALUE(labels.defined(), "conditioning.guidance = ", s, " needs conditioning.labels (guidance "
                        "pushes samples towards a class)");
    ConditionalNetwork net = [module, path](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      return forward_network(*module, x, t, y, {}, path.c_str());
    };
    return classifier_free_guidance(std::move(net), schedule, prediction, labels,
                                    at::full({1}, num_classes, at::kLong), s, time_input, time_scale);
  }
  const at::Tensor y = labels.defined() ? labels : at::full({1}, num_classes, at::kLong);
  Denoiser::Network fn = [module, y, path](const at::Tensor& x, const at::Tensor& t) {
    return forward_network(*module, x, t, y.to(x.device()), {}, path.c_str());
  };
  return Denoiser(std::move(fn), schedule, prediction, time_input, time_scale);
}

}  // namespace

ModelFile load_model_file(const std::string& model_path, const ModelConditioning& conditioning) {
  namespace fsys = std::filesystem;
  using json = nlohmann::json;
  FEWSTEP_CHECK_VALUE(fsys::is_regular_file(model_path), "model_path '", model_path, "' is not a file");
  const std::string side = model_sidecar_path(model_path);
  std::ifstream in(side);
  FEWSTEP_CHECK_VALUE(in.good(), "model '", model_path, "' has no sidecar '", side,
                      "' (written by `fewstep train` beside the model; it names the schedule and prediction)");
  json meta;
  try {
    in >> meta;
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, "sidecar '", side, "' is not valid JSON: ", e.what());
  }
  FEWSTEP_CHECK_VALUE(meta.is_object() && meta.value("format", "") == kModelSidecarFormat, "sidecar '", side,
                      "' is not a fewstep model sidecar (expected \"format\": \"", kModelSidecarFormat, "\")");
  for (const char* key : {"schedule", "prediction", "sample_shape"})
    FEWSTEP_CHECK_VALUE(meta.contains(key), "sidecar '", side, "' has no \"", key, "\"");

  try {
    SchedulePtr schedule = schedule_from_spec(meta["schedule"].dump(), "sidecar '" + side + "'");
    const Prediction prediction = parse_prediction(meta["prediction"].get<std::string>());
    const TimeInput time_input = parse_time_input(meta.value("time_input", std::string("t")));
    const double time_scale = meta.value("time_scale", 1.0);
    auto shape = meta["sample_shape"].get<std::vector<int64_t>>();
    for (int64_t d : shape)
      FEWSTEP_CHECK_VALUE(d > 0, "sidecar '", side, "': sample_shape entries must be positive, got ",
                          meta["sample_shape"].dump());
    const json config = meta.contains("network") ? meta["network"].value("config", json::object()) : json::object();
    const int64_t num_classes = config.value("num_classes", int64_t{0});
    const bool guidance_input = config.value("guidance_input", false);
    FEWSTEP_CHECK_VALUE(num_classes > 0 || (!conditioning.labels.defined() && !conditioning.guidance),
                        "model '", model_path, "' is not class-conditional; conditioning.labels and "
                        "conditioning.guidance must be unset");
    std::optional<double> default_guidance;
    if (meta.contains("default_guidance")) default_guidance = meta["default_guidance"].get<double>();
    std::optional<Denoiser> built;
    if (meta.contains("consistency")) {
      // A consistency model (models/consistency_function.h): the file holds F, the sidecar its scalings.
      FEWSTEP_CHECK_VALUE(num_classes == 0, "sidecar '", side, "': class-conditional consistency models are not supported");
      const json& cm = meta["consistency"];
      ConsistencyParameterization p;
      p.sigma_data = cm.value("sigma_data", 0.5);
      p.t_min = cm.value("t_min", 0.0);
      p.time_input = time_input;
      p.time_scale = time_scale;
      auto module = std::make_shared<torch::jit::Module>(torch::jit::load(model_path));
      module->eval();
      built.emplace(consistency_denoiser(std::move(module), schedule, p));
    } else if (num_classes > 0) {
      built.emplace(conditional_denoiser(model_path, schedule, prediction, time_input, time_scale, num_classes,
                                         guidance_input, default_guidance, conditioning));
    } else {
      built.emplace(Denoiser::torchscript(model_path, schedule, prediction, time_input, time_scale));
    }
    Denoiser denoiser = std::move(*built);
    ModelFile file{std::move(denoiser),
                   std::move(schedule),
                   prediction,
                   std::move(shape),
                   meta.value("name", fsys::path(model_path).stem().string()),
                   model_path,
                   meta.dump(),
                   num_classes,
                   guidance_input,
                   /*solver=*/{},
                   /*timesteps=*/{}};
    if (meta.contains("sampler")) {
      const json& sm = meta["sampler"];
      file.solver = sm.value("solver", std::string("ddim"));
      file.timesteps = sm.at("timesteps").get<std::vector<double>>();
      FEWSTEP_CHECK_VALUE(file.timesteps.size() >= 2, "sidecar '", side, "': sampler.timesteps needs >= 2 times");
      for (size_t i = 1; i < file.timesteps.size(); ++i)
        FEWSTEP_CHECK_VALUE(file.timesteps[i] < file.timesteps[i - 1], "sidecar '", side,
                            "': sampler.timesteps must decrease, got ", sm.at("timesteps").dump());
    }
    return file;
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, "sidecar '", side, "': ", e.what());
  }
  throw std::logic_error("load_model_file: unreachable");  // the check above throws
}

}  // namespace fewstep
