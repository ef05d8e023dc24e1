/// @file models/model_file.h
/// @brief A model file as `fewstep train` ships it: TorchScript network + JSON sidecar.
///
/// `dir/name.pt` is the TorchScript network (forward(x, t) → native prediction) and
/// `dir/name.json`, the sidecar (format "fewstep.model.v1"), says how to read it: "schedule"
/// (a spec of schedules/schedule_spec.h), "prediction", "time_input", "time_scale" and
/// "sample_shape" (one sample without the batch dimension). Loading both gives a ready
/// Denoiser, so applications need not repeat the training settings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

/// The format tag of sidecars written by `fewstep train`.
inline constexpr const char* kModelSidecarFormat = "fewstep.model.v1";

/// "dir/name.pt" → "dir/name.json" (the extension, if any, replaced).
std::string model_sidecar_path(const std::string& model_path);

struct ModelFile {
  Denoiser denoiser;
  SchedulePtr schedule;
  Prediction prediction = Prediction::Eps;
  std::vector<int64_t> sample_shape;  // one sample, without the batch dimension
  std::string name;                   // the sidecar's "name" (the file stem if absent)
  std::string path;                   // the TorchScript file
  std::string sidecar_json;           // the whole sidecar, for metadata the struct does not carry
};

/// Loads `model_path` and its sidecar. ValueError naming the file when either is missing or
/// unreadable, the sidecar is not a fewstep sidecar, or a field is missing or invalid.
ModelFile load_model_file(const std::string& model_path);

}  // namespace fewstep
