/// @file models/model_file.h
/// @brief A model file as `fewstep train` ships it: TorchScript network + JSON sidecar.
///
/// `dir/name.pt` is the TorchScript network (forward(x, t) → native prediction) and
/// `dir/name.json`, the sidecar (format "fewstep.model.v1"), says how to read it: "schedule"
/// (a spec of schedules/schedule_spec.h), "prediction", "time_input", "time_scale" and
/// "sample_shape" (one sample without the batch dimension). Loading both gives a ready
/// Denoiser, so applications need not repeat the training settings.
///
/// Optional sidecar fields:
///  - "sampler": {"solver": "ddim", "timesteps": [t_0 > t_1 > ... > t_N]} — the grid a distilled
///    student was trained for (train/student_export.h); `fewstep sample` and `fs.sample` use it
///    unless told otherwise.
///  - "network": {"kind", "config": {"num_classes", "guidance_input", ...}} (nets/network_spec.h):
///    a class-conditional network (num_classes > 0) takes forward(x, t, y) with y = num_classes
///    meaning "no class"; one with guidance_input also takes a guidance weight w.
///    ModelConditioning picks the class and guidance: a plain conditional network with a guidance
///    scale s ≠ 1 is sampled with classifier-free guidance (two calls per evaluation,
///    models/guidance.h); a guidance-input network gets s as w (one call).
///  - "consistency": {"sigma_data", "t_min"} — the file holds a consistency model's network F and the
///    Denoiser is f(x, t) = c_skip x + c_out F(c_in x, t) (models/consistency_function.h), predicting x0.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
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
  int64_t num_classes = 0;            // > 0: class-conditional network
  bool guidance_input = false;        // the network takes the guidance weight w as an input
  std::string solver;                 // the sidecar's sampler, "" if none
  std::vector<double> timesteps;      // its grid, empty if none
};

/// Class label(s) and guidance for conditional models.
struct ModelConditioning {
  /// int64 labels in [0, num_classes), shape [1] (every sample) or [batch]; undefined = no class
  /// (the null label).
  at::Tensor labels;
  /// Guidance scale s (1 = the conditional model alone); unset = 1, or the sidecar's
  /// "default_guidance" for guidance-input networks.
  std::optional<double> guidance;
};

/// Loads `model_path` and its sidecar. ValueError naming the file when either is missing or
/// unreadable, the sidecar is not a fewstep sidecar, or a field is missing or invalid; ValueError
/// naming `conditioning` when it asks for labels or guidance the network cannot take.
ModelFile load_model_file(const std::string& model_path, const ModelConditioning& conditioning = {});

}  // namespace fewstep
