// Shared by the subcommands that sample a model (`fewstep sample`, `fewstep eval`): the model flags,
// loading a TorchScript denoiser through its sidecar (flags override it), and the sampler flags, parsed
// into the library's one sampling request (sample/request.h), which makes every choice.
#pragma once

#include <ATen/core/Tensor.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/core/device.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep::cli {

/// --model and the flags that override its sidecar.
struct ModelFlags {
  std::string model, schedule, prediction, time_input;
  std::optional<double> time_scale;
  std::vector<int64_t> shape;
  int64_t label = -1;               ///< --class: class of a conditional model (-1: none)
  std::optional<double> guidance;  ///< --guidance: guidance scale of a conditional model
  std::string device, dtype;       ///< --device, --dtype ("" = cpu / the file's parameters, float32 state)
};

/// Declares --model (required), --schedule, --prediction, --time-input, --time-scale, --shape,
/// --class, --guidance, --device and --dtype.
void add_model_flags(CLI::App& app, ModelFlags& flags);

/// A model ready to sample, with the settings it was read with (for messages, JSON and cache keys).
struct LoadedModel {
  std::string path;  ///< the TorchScript file
  std::shared_ptr<const Denoiser> denoiser;
  SchedulePtr schedule;
  nlohmann::json schedule_spec;
  std::string prediction, time_input;
  double time_scale = 1.0;
  std::vector<int64_t> shape;  ///< one sample, without the batch
  /// The model file's own sample shape (empty without a sidecar): x_T drawn with --shape is checked
  /// against it by the library (sample/request.h: SamplerDefaults::sample_shape).
  std::vector<int64_t> file_shape;
  int64_t label = -1;
  std::optional<double> guidance;
  std::string solver;             ///< a distilled student's own sampler ("" if none)
  std::vector<double> timesteps;  ///< ... and its grid
  std::vector<ModelTunedGrid> tuned_grids;  ///< the sidecar's optimised grids (grids/optimize.h)
  Placement placement;            ///< --device/--dtype as parsed by the library (core/device.h)
  /// The sampled state's options: --device (default cpu), --dtype (default float32).
  at::TensorOptions state_options() const;
  /// Everything above plus the model file's path, size and modification time, as JSON.
  nlohmann::json identity() const;
};

/// Loads `flags.model` with its sidecar (models/model_file.h, which also handles conditional
/// models and students' grids); the override flags replace the sidecar's settings. UsageError naming the flag or
/// file when the model is missing, unreadable, or neither the sidecar nor a flag gives a setting.
LoadedModel load_model(const ModelFlags& flags);

/// "key=value" of --option: true/false → bool, integers → int, numbers → double, else string.
std::pair<std::string, OptionValue> parse_option(const std::string& text);

/// The registered stepper `name` configured by --option texts. UsageError naming `flag` for an
/// unknown solver (listing the known ones) or naming --option for a bad option.
std::shared_ptr<const Stepper> make_stepper(const std::string& name, const std::vector<std::string>& options,
                                            const std::string& flag = "--solver");

/// The most samples --n may ask for (sample, eval): beyond it the seeds and noise would not fit in memory
/// anyway, and the error names --n before anything is allocated.
constexpr int64_t kMaxSamples = 10'000'000;

/// seed, seed + 1, ..., seed + n − 1: sample i starts from noise seeded with seed + i.
std::vector<uint64_t> sample_seeds(uint64_t seed, int64_t n);

/// The flags that say how to sample: --solver, --option, --steps, --nfe, --spacing, --grid, --rtol, --atol,
/// --denoise-to-zero.
struct SamplerFlags {
  std::string solver;                ///< "" = the model file's own solver, else dpmpp_2m
  std::vector<std::string> options;  ///< key=value
  int64_t steps = 0, nfe = 0;        ///< 0 = not given
  std::string spacing = "logsnr";
  bool spacing_given = false;        ///< --spacing was passed (it then overrides a tuned grid)
  std::string grid = "tuned";        ///< --grid: "tuned" (the model file's tuned grid if it has one) or "default"
  std::optional<double> rtol, atol;
  bool denoise_to_zero = false;
};
/// Steps when neither --steps, --nfe, --rtol/--atol nor the model file's own grid say otherwise.
constexpr int64_t kDefaultSteps = 10;

void add_sampler_flags(CLI::App& app, SamplerFlags& flags);

/// The request these flags make for `model`, starting from n samples of per-sample seeds
/// (x_T = randn_per_sample of the model's shape, in model.state_options()): the model file's own sampler as defaults,
/// kDefaultSteps as the fallback. UsageError naming --solver / --option for an unknown solver or a
/// malformed option.
SampleRequest sampler_request(const LoadedModel& model, const SamplerFlags& flags, const std::vector<uint64_t>& seeds);

/// resolve(request) and job.run(), with the library's argument errors (ValueError: a bad setting, a
/// micro sampler given another teacher) as UsageErrors (exit status 2).
ResolvedSample resolve_request(const SampleRequest& request);
Solution run_request(const ResolvedSample& job);

}  // namespace fewstep::cli
