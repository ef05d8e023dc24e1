#include "model_loader.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "command.h"
#include "model_card.h"
#include "schedule_spec.h"
#include "fewstep/models/model_file.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::cli {

namespace fsys = std::filesystem;
using json = nlohmann::json;

void add_model_flags(CLI::App& app, ModelFlags& f) {
  app.add_option("--model", f.model, "TorchScript model whose forward(x, t) returns its prediction, e.g. "
                                     "models/fmnist-unet-eps.pt; its sidecar (same name, .json) gives the "
                                     "schedule, prediction, time input and sample shape")
      ->required();
  app.add_option("--schedule", f.schedule, "Override the sidecar's schedule (with its default parameters)")
      ->check(CLI::IsMember(schedule_names()));
  app.add_option("--prediction", f.prediction, "Override the sidecar's prediction: eps, x0, v, score, flow")
      ->check(CLI::IsMember({"eps", "x0", "v", "score", "flow"}));
  app.add_option("--time-input", f.time_input, "Override the sidecar's time input: t, index, sigma, lambda")
      ->check(CLI::IsMember({"t", "index", "sigma", "lambda"}));
  app.add_option("--time-scale", f.time_scale, "Override the sidecar's time-input multiplier")
      ->check(positive())
      ->check(finite_number());
  app.add_option("--shape", f.shape, "Shape of one sample without the batch, e.g. 1,28,28 (default: sidecar)")
      ->delimiter(',');
  app.add_option("--class", f.label, "Class-conditional model: the class to sample (default: no class)")
      ->check(non_negative());
  app.add_option("--guidance", f.guidance, "Class-conditional model: guidance scale s (1 = conditional model; "
                                           "classifier-free guidance costs two calls per evaluation unless the model "
                                           "takes s as input)")
      ->check(finite_number());
  app.add_option("--device", f.device, "Where the network and the state live: cpu, cuda or cuda:N (default cpu; "
                                       "the model file is mapped there as it is read; docs/gpu.md)");
  app.add_option("--dtype", f.dtype, "Precision of the network's parameters and of the state: float32 or float64 "
                                     "(default: the file's parameters, a float32 state; solver coefficients are "
                                     "float64 on the host either way)");
}

at::TensorOptions LoadedModel::state_options() const {
  return at::TensorOptions()
      .dtype(placement.dtype.value_or(at::kFloat))
      .device(placement.device.value_or(at::Device(at::kCPU)));
}

json LoadedModel::identity() const {
  std::error_code ec;
  const auto size = fsys::file_size(path, ec);
  const auto mtime = fsys::last_write_time(path, ec);
  return {{"model", fsys::absolute(path).lexically_normal().string()},
          {"bytes", ec ? 0 : static_cast<int64_t>(size)},
          {"mtime", ec ? 0 : static_cast<int64_t>(mtime.time_since_epoch().count())},
          {"schedule", schedule_spec},
          {"prediction", prediction},
          {"time_input", time_input},
          {"time_scale", time_scale},
          {"shape", shape},
          {"class", label},
          {"guidance", guidance ? json(*guidance) : json()},
          {"dtype", dtype_name(state_options().dtype().toScalarType())}};
}

LoadedModel load_model(const ModelFlags& c) {
  if (!fsys::exists(c.model)) throw UsageError("--model '" + c.model + "' does not exist");
  if (fsys::is_directory(c.model)) throw UsageError("--model '" + c.model + "' is a directory, not a model file");
  // Sidecar first, flags override; without either the model cannot be interpreted.
  const std::optional<json> side = read_sidecar(c.model);
  const std::string side_name = model_sidecar_path(c.model);
  auto need = [&](const char* flag, const char* key) -> json {
    if (side && side->contains(key)) return side->at(key);
    throw UsageError(std::string("--model '") + c.model + "' has no sidecar '" + side_name + "' with \"" + key +
                     "\"; pass " + flag);
  };
  LoadedModel m;
  try {
    m.placement = parse_placement(c.device, c.dtype, "--device", "--dtype");
  } catch (const c10::ValueError& e) {
    throw UsageError(e.what_without_backtrace());
  }
  m.path = c.model;
  m.label = c.label;
  m.guidance = c.guidance;
  const bool overrides = !c.schedule.empty() || !c.prediction.empty() || !c.time_input.empty() ||
                         c.time_scale.has_value();
  if (side && !overrides) {
    ModelConditioning cond;
    if (c.label >= 0) cond.labels = at::full({1}, c.label, at::kLong);
    if (c.guidance) cond.guidance = *c.guidance;
    std::optional<ModelFile> loaded;
    try {
      loaded.emplace(load_model_file(c.model, cond, m.placement));
    } catch (const c10::Error& e) {
      throw UsageError("--model '" + c.model + "': " + e.what_without_backtrace());
    }
    ModelFile& f = *loaded;
    m.schedule_spec = side->at("schedule");
    m.schedule_spec.erase("repr");
    m.schedule = f.schedule;
    m.prediction = to_string(f.prediction);
    m.time_input = side->value("time_input", std::string("t"));
    m.time_scale = side->value("time_scale", 1.0);
    m.shape = !c.shape.empty() ? c.shape : f.sample_shape;
    m.file_shape = f.sample_shape;
    m.denoiser = std::make_shared<const Denoiser>(std::move(f.denoiser));
    m.solver = f.solver;
    m.timesteps = f.timesteps;
    m.tuned_grids = f.info.tuned_grids;
    return m;
  }
  if (c.label >= 0 || c.guidance)
    throw UsageError("--class/--guidance need the model's sidecar and no --schedule/--prediction/--time-input/"
                     "--time-scale overrides");
  m.schedule_spec = !c.schedule.empty() ? default_schedule_spec(c.schedule) : need("--schedule", "schedule");
  m.schedule_spec.erase("repr");
  m.schedule = make_schedule(m.schedule_spec, c.schedule.empty() ? side_name : "--schedule");
  m.prediction = !c.prediction.empty() ? c.prediction : need("--prediction", "prediction").get<std::string>();
  m.time_input = !c.time_input.empty() ? c.time_input : (side ? side->value("time_input", std::string("t")) : "t");
  m.time_scale = c.time_scale ? *c.time_scale : (side ? side->value("time_scale", 1.0) : 1.0);
  m.shape = !c.shape.empty() ? c.shape : need("--shape", "sample_shape").get<std::vector<int64_t>>();
  for (int64_t d : m.shape) {
    if (d <= 0) throw UsageError("--shape entries must be positive");
  }
  try {
    m.denoiser = std::make_shared<const Denoiser>(Denoiser::torchscript(
        c.model, m.schedule, parse_prediction(m.prediction), parse_time_input(m.time_input), m.time_scale,
        m.placement));
  } catch (const c10::Error& e) {
    throw UsageError("--model '" + c.model + "' cannot be loaded as TorchScript: " + e.what_without_backtrace());
  }
  return m;
}

std::pair<std::string, OptionValue> parse_option(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw UsageError("--option '" + text + "' must look like key=value");
  try {
    return {text.substr(0, eq), parse_option_value(text.substr(eq + 1))};
  } catch (const c10::Error& e) {
    throw UsageError("--option '" + text + "': " + e.what_without_backtrace());
  }
}

std::shared_ptr<const Stepper> make_stepper(const std::string& name, const std::vector<std::string>& option_texts,
                                            const std::string& flag) {
  const auto names = stepper_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw UsageError(flag + " '" + name + "' is not a solver (expected one of: " + known + ")");
  }
  Options options;
  for (const auto& text : option_texts) {
    auto [key, value] = parse_option(text);
    options.set(key, value);
  }
  try {
    return solver(name, options);
  } catch (const c10::Error& e) {
    throw UsageError("--option: " + std::string(e.what_without_backtrace()));
  }
}

std::vector<uint64_t> sample_seeds(uint64_t seed, int64_t n) {
  std::vector<uint64_t> seeds(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) seeds[static_cast<size_t>(i)] = seed + static_cast<uint64_t>(i);
  return seeds;
}

void add_sampler_flags(CLI::App& app, SamplerFlags& f) {
  app.add_option("--solver", f.solver, "Solver name (see the list below, or 'fewstep solvers'); default: a distilled "
                                       "model's own solver, else dpmpp_2m");
  app.footer(app.get_footer() + "\n" + solver_list());
  app.add_option("--steps", f.steps, "Steps, as the solver reads them: grid steps for most (NFE = steps x the "
                                     "solver's evaluations per step; multistep solvers use one per step), the NFE "
                                     "budget for dpm_solver_fast and micro. Default: a distilled model's own grid, "
                                     "else " + std::to_string(kDefaultSteps))
      ->check(positive());
  app.add_option("--nfe", f.nfe, "Evaluation budget instead of --steps: the step count that spends exactly this "
                                 "many model evaluations")
      ->check(positive());
  app.add_option("--spacing", f.spacing, "Time grid: logsnr (uniform in log-SNR), time, quadratic, karras, "
                                         "leading/trailing (discrete schedules)")
      ->check(CLI::IsMember({"logsnr", "time", "quadratic", "karras", "leading", "trailing"}))
      ->each([&f](const std::string&) { f.spacing_given = true; })
      ->capture_default_str();
  app.add_option("--grid", f.grid, "tuned: with --steps/--nfe, sample on the model file's tuned grid for this solver "
                                   "and NFE when it has one (fewstep tune-grid --write-sidecar); default: the grid "
                                   "--spacing makes (passing --spacing also does this)")
      ->check(CLI::IsMember({"tuned", "default"}))
      ->capture_default_str();
  app.add_option("--option", f.options, "Solver option key=value (repeatable), e.g. --option lower_order_final=false");
  app.add_option("--rtol", f.rtol, "Adaptive sampling: relative tolerance of a PID step-size controller instead of "
                                   "a grid (solvers with an error estimate, e.g. dpm_adaptive; default 0.05 when "
                                   "only --atol is given)")
      ->check(positive())
      ->check(finite_number());
  app.add_option("--atol", f.atol, "Adaptive sampling: absolute tolerance (default 0.0078 when only --rtol is given)")
      ->check(positive())
      ->check(finite_number());
  app.add_flag("--denoise-to-zero", f.denoise_to_zero, "Finish with the model's x0 prediction at t_min (+1 NFE)");
}

SampleRequest sampler_request(const LoadedModel& model, const SamplerFlags& f, const std::vector<uint64_t>& seeds) {
  if (!f.solver.empty()) {
    const auto names = stepper_names();
    if (std::find(names.begin(), names.end(), f.solver) == names.end()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw UsageError("--solver '" + f.solver + "' is not a solver (expected one of: " + known + ")");
    }
  }
  SampleRequest r;
  r.model = model.denoiser;
  r.sample_shape = model.shape;
  r.x_T_options = model.state_options();
  r.options.seeds = seeds;
  r.solver = f.solver;
  for (const auto& text : f.options) {
    auto [key, value] = parse_option(text);
    r.solver_options.set(key, value);
  }
  if (f.steps > 0) r.steps = f.steps;
  if (f.nfe > 0) r.nfe = f.nfe;
  r.spacing = parse_spacing(f.spacing);
  r.rtol = f.rtol;
  r.atol = f.atol;
  r.options.denoise_to_zero = f.denoise_to_zero;
  r.model_defaults = {model.solver, model.timesteps, model.tuned_grids, model.file_shape};
  r.use_tuned_grid = f.grid == "tuned" && !f.spacing_given;
  r.fallback_steps = kDefaultSteps;
  return r;
}

ResolvedSample resolve_request(const SampleRequest& request) {
  try {
    return resolve(request);
  } catch (const c10::ValueError& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

Solution run_request(const ResolvedSample& job) {
  try {
    return job.run();
  } catch (const c10::ValueError& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

}  // namespace fewstep::cli
