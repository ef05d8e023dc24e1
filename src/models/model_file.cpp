#include "fewstep/models/model_file.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "fewstep/core/check.h"
#include "fewstep/schedules/schedule_spec.h"

namespace fewstep {

std::string model_sidecar_path(const std::string& model_path) {
  return std::filesystem::path(model_path).replace_extension(".json").string();
}

ModelFile load_model_file(const std::string& model_path) {
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
    Denoiser denoiser = Denoiser::torchscript(model_path, schedule, prediction, time_input, time_scale);
    return ModelFile{std::move(denoiser),   std::move(schedule), prediction, std::move(shape),
                     meta.value("name", fsys::path(model_path).stem().string()), model_path, meta.dump()};
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, "sidecar '", side, "': ", e.what());
  }
  throw std::logic_error("load_model_file: unreachable");  // the check above throws
}

}  // namespace fewstep
