/// @file models/model_file.h
/// @brief Model files: a TorchScript network and its JSON sidecar, written and read only here.
///
/// `dir/name.pt` is the TorchScript network (forward(x, t[, y][, w]) → native prediction) and
/// `dir/name.json` (model_sidecar_path) the sidecar that says how to read it. `fewstep train`,
/// every `fewstep distill` export, `fs.export_student` and `fs.save_model_file` write model files
/// through `save_model_file`; `load_model_file` (and `fs.load_model_file`, `fs.sample(path)`,
/// `fewstep sample/eval/distill`) reads them. The format is described field by field in
/// docs/model_files.md. In short, the sidecar is one JSON object:
///  - "format": "fewstep.model", "schema": 2 (a schema-1 sidecar says "format": "fewstep.model.v1"
///    and has no checksum; both are read);
///  - "model_sha256": the SHA-256 of the .pt's bytes; load refuses a .pt that does not match;
///  - "sidecar_sha256": the SHA-256 of the sidecar's canonical JSON (compact, keys sorted) without
///    this field; load refuses a sidecar changed after it was written (upgrade_model_file re-seals
///    one edited on purpose);
///  - "schedule" (a spec of schedules/schedule_spec.h, plus its "repr"), "prediction",
///    "time_input", "time_scale", "sample_shape" (one sample without the batch dimension);
///  - optional "sampler": {"solver", "timesteps": [t_0 > ... > t_N]}: the grid a distilled student
///    was trained for; `fewstep sample` and `fs.sample(path)` use it unless told otherwise;
///  - optional "tuned_grids": [{"solver", "options", "nfe", "timesteps", "fit"}]: optimised time grids
///    (grids/optimize.h, docs/grids.md), used by a request for that solver, options and NFE;
///  - optional "network": {"kind", "config"} (nets/network_spec.h). config.num_classes > 0 makes a
///    class-conditional network forward(x, t, y) (y = num_classes: no class); config.guidance_input
///    adds a guidance weight w: forward(x, t, y, w). ModelConditioning picks the class and guidance:
///    a conditional network with guidance s ≠ 1 is sampled with classifier-free guidance (two calls
///    per evaluation, models/guidance.h); a guidance-input network gets s as w (one call);
///  - optional "default_guidance" (guidance-input networks) and "consistency": {"sigma_data", "t_min"}
///    (the file holds a consistency model's F; the Denoiser is f(x, t) = c_skip x + c_out F(c_in x, t),
///    models/consistency_function.h, predicting x0);
///  - "name", "model" (the .pt's file name), "parameters", "fewstep_version", "torch_version", and
///    any other fields the writer passes as metadata ("data", "training", "distillation", ...).
///
/// Writing validates everything first (the schedule, the grid inside its range, the sample shape,
/// one forward pass of the network on a sample of that shape, the metadata), so an invalid model
/// leaves the files on disk untouched; then the .pt and then the sidecar are each replaced
/// atomically (core/atomic_file.h). A pair interrupted between the two writes is detected on load
/// by the checksum, never silently mixed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fewstep {

/// The sidecar's "format" tag and the schema this build writes (and the newest it reads).
inline constexpr const char* kModelFileFormat = "fewstep.model";
inline constexpr int kModelFileSchema = 2;

/// "dir/name.pt" → "dir/name.json" (the extension, if any, replaced).
std::string model_sidecar_path(const std::string& model_path);

/// The scalings of a consistency model (models/consistency_function.h).
struct ModelConsistency {
  double sigma_data = 0.5;
  double t_min = 0.0;  ///< 0 = the schedule's t_min
};

/// One optimised time grid of a model (grids/optimize.h): the grid `solver` with `options` samples on
/// when a request asks for that solver at `nfe` evaluations (sample/request.h).
struct ModelTunedGrid {
  std::string solver;
  std::map<std::string, std::string> options;  ///< solver options as text (tuned_grid_options)
  int64_t nfe = 0;
  std::vector<double> timesteps;  ///< t_0 > ... > t_N
  std::string fit = "{}";         ///< JSON object text: the method and the settings it was fitted with
  /// "key=value,..." (sorted), for messages.
  std::string options_text() const;
  /// Same solver, options and NFE: one entry per key in a sidecar.
  bool same_key(const ModelTunedGrid& other) const;
};

/// A solver's option bag as the text map tuned grids are keyed by.
std::map<std::string, std::string> tuned_grid_options(const Options& options);

/// Everything a sidecar says. `save_model_file` reads the fields marked "written"; the fields
/// marked "read" are filled by read_model_file_info / load_model_file.
struct ModelFileInfo {
  // written
  SchedulePtr schedule;
  Prediction prediction = Prediction::Eps;
  TimeInput time_input = TimeInput::T;
  double time_scale = 1.0;
  std::vector<int64_t> sample_shape;  ///< one sample, without the batch dimension
  std::string name;                   ///< "" = the file stem
  std::string network;                ///< {"kind", "config"} as JSON text; "" = not recorded
  std::string solver;                 ///< the solver of `timesteps` ("" with timesteps = "ddim")
  std::vector<double> timesteps;      ///< a student's own grid (empty: sampled on any grid)
  std::optional<double> default_guidance;
  std::optional<ModelConsistency> consistency;
  std::vector<ModelTunedGrid> tuned_grids;  ///< optional "tuned_grids": optimised grids by solver + NFE
  std::string metadata = "{}";        ///< JSON object text: every other field, kept as given

  // read
  int schema = kModelFileSchema;
  std::string model_sha256;           ///< the recorded SHA-256 of the .pt ("" for schema 1)
  int64_t parameters = 0;
  int64_t num_classes = 0;            ///< network.config.num_classes (> 0: class-conditional)
  bool guidance_input = false;        ///< network.config.guidance_input
  std::string sidecar_json;           ///< the whole sidecar
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

struct ModelFile {
  Denoiser denoiser;                  ///< conditioned as asked; its fingerprint covers the .pt, the sidecar and the conditioning
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
  ModelFileInfo info;                 ///< the sidecar, field by field
  std::string sha256;                 ///< SHA-256 of the .pt as read (verified against the sidecar's)
  std::shared_ptr<torch::jit::Module> network;  ///< the loaded module (eval mode)

  /// The same network with other labels or guidance (no file access): e.g. one Denoiser per batch
  /// of labels. ValueError naming `conditioning` when the network cannot take them.
  Denoiser conditioned(const ModelConditioning& conditioning) const;
  /// The content fingerprint of the file pair (the .pt's and the sidecar's SHA-256), independent
  /// of the conditioning: what caches of a conditional teacher's solves are keyed by.
  std::string file_fingerprint() const;
};

/// Validates `info` and `network` (see the file comment), then writes `model_path` and its sidecar.
/// Returns the sidecar's JSON text as written. ValueError naming the field or `model_path` for
/// invalid input (nothing is written then); RuntimeError naming the file when writing fails (the
/// previous files, if any, stay whole).
std::string save_model_file(const std::string& model_path, const torch::jit::Module& network,
                            const ModelFileInfo& info);

/// Reads and validates the sidecar of `model_path` (not the .pt). ValueError naming the sidecar
/// when it is missing, a directory, not JSON (or nested absurdly deep), not a fewstep model
/// sidecar, of a newer schema, or has a missing or invalid field.
ModelFileInfo read_model_file_info(const std::string& model_path);

/// The same checks on a sidecar's JSON text held in memory (its own checksum is not required);
/// `where` names it in messages.
ModelFileInfo parse_model_sidecar(const std::string& json_text, const std::string& where = "sidecar");

/// Loads `model_path` and its sidecar: the .pt is read once, its SHA-256 checked against the
/// sidecar's (schema 2), and the network built from those bytes. ValueError naming the file for
/// every problem read_model_file_info names, a missing or corrupted .pt; ValueError naming
/// `conditioning` when it asks for labels or guidance the network cannot take. `placement`
/// (core/device.h; fs.load_model_file(device=, dtype=), --device/--dtype) maps the network to a
/// device as it is read and converts its parameters to a dtype; sample with x on that device and in
/// that dtype. The checksum is of the file as written, whatever the placement.
ModelFile load_model_file(const std::string& model_path, const ModelConditioning& conditioning = {},
                          const Placement& placement = {});

/// Adds `grid` to the sidecar's "tuned_grids" (replacing the entry of the same solver, options and
/// NFE), re-sealing the sidecar; the .pt is not rewritten and must match its recorded SHA-256.
/// ValueError naming the file or field as load_model_file does; the grid is validated against the
/// schedule before the sidecar is replaced (atomically). Returns the new sidecar text.
std::string save_tuned_grid(const std::string& model_path, const ModelTunedGrid& grid);

/// Records `solver` as the sampler of the student file `model_path` (its sidecar's
/// "sampler.solver"; the grid stays), re-sealing the sidecar as save_tuned_grid does.
/// metrics/solver_choice.h chooses it by measurement. ValueError naming the file when it has no
/// grid of its own or `solver` is not a solver name.
std::string save_model_sampler(const std::string& model_path, const std::string& solver);

/// The metadata a distilled student inherits from its teacher's `teacher_metadata` (JSON object text):
/// every field (the data, above all, which a student is distilled further from) but the teacher's own
/// records of how it was trained and scored ("training", "evaluation": not the student's), with
/// `distillation` (a JSON object) as "distillation". The CLI's and Python's exporters both use it.
/// ValueError naming the argument that is not a JSON object.
std::string student_metadata(const std::string& teacher_metadata, const std::string& distillation);

/// Rewrites the sidecar of `model_path` in the current schema, recording the SHA-256 of the .pt
/// as it is now (the .pt is not rewritten). For upgrading schema-1 files whose .pt is known to be
/// good (the shipped models were upgraded so). Returns the new sidecar text.
std::string upgrade_model_file(const std::string& model_path);

}  // namespace fewstep
