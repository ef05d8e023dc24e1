// `fewstep sample`: loads a TorchScript denoiser with its schedule and prediction (from the sidecar
// `fewstep train` wrote, or from flags), samples it with any registered solver from per-sample seeded
// noise, and writes a PNG: an image grid for [C, H, W] samples, a scatter plot for vectors.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "../command.h"
#include "../model_card.h"
#include "../schedule_spec.h"
#include "fewstep/control/pid.h"
#include "fewstep/io/png.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/noise.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/progress_bar.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  std::string model, solver = "dpmpp_2m", spacing = "logsnr", out = "grid.png";
  std::string schedule, prediction, time_input;
  double time_scale = NAN;
  std::vector<int64_t> shape;
  int64_t steps = 10, n = 16, nrow = 0, padding = 2, size = 512;
  uint64_t seed = 0;
  double rtol = NAN, atol = NAN;
  bool denoise_to_zero = false, quiet = false;
  std::vector<std::string> options;
};

// "key=value": true/false → bool, integers → int, numbers → double, anything else → string.
std::pair<std::string, OptionValue> parse_option(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw UsageError("--option '" + text + "' must look like key=value");
  const std::string key = text.substr(0, eq), value = text.substr(eq + 1);
  if (value == "true" || value == "false") return {key, value == "true"};
  char* end = nullptr;
  const long long i = std::strtoll(value.c_str(), &end, 10);
  if (!value.empty() && *end == '\0') return {key, static_cast<int64_t>(i)};
  const double d = std::strtod(value.c_str(), &end);
  if (!value.empty() && *end == '\0') return {key, d};
  return {key, value};
}

// Vectors as a scatter plot of their first two coordinates, on a square canvas spanning the
// samples' largest absolute coordinate (with a margin), axes through 0 in light grey.
at::Tensor scatter_image(const at::Tensor& x, int64_t size) {
  const at::Tensor xy = x.to(at::kDouble).slice(1, 0, 2).contiguous();
  const double extent = std::max(1e-6, 1.1 * xy.abs().max().item<double>());
  at::Tensor img = at::full({size, size, 3}, 255, at::TensorOptions().dtype(at::kByte));
  auto a = img.accessor<uint8_t, 3>();
  auto to_pixel = [&](double v) { return static_cast<int64_t>(std::lround((v / extent + 1.0) * 0.5 * (size - 1))); };
  const int64_t zero = to_pixel(0.0);
  for (int64_t i = 0; i < size; ++i) {
    for (int ch = 0; ch < 3; ++ch) a[zero][i][ch] = a[i][zero][ch] = 210;
  }
  auto p = xy.accessor<double, 2>();
  for (int64_t k = 0; k < xy.size(0); ++k) {
    const int64_t cx = to_pixel(p[k][0]), cy = to_pixel(-p[k][1]);  // y grows upwards
    for (int64_t dy = -1; dy <= 1; ++dy) {
      for (int64_t dx = -1; dx <= 1; ++dx) {
        const int64_t yy = cy + dy, xx = cx + dx;
        if (yy < 0 || yy >= size || xx < 0 || xx >= size) continue;
        a[yy][xx][0] = 31, a[yy][xx][1] = 119, a[yy][xx][2] = 180;
      }
    }
  }
  return img;
}

class SampleCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    app.add_option("--model", c.model, "TorchScript model whose forward(x, t) returns its prediction, e.g. "
                                       "models/fmnist-unet-eps.pt; its sidecar (same name, .json) gives the "
                                       "schedule, prediction, time input and sample shape")
        ->required();
    app.add_option("--solver", c.solver, "Solver name (see the list below, or 'fewstep solvers')")
        ->capture_default_str();
    app.footer(app.get_footer() + "\n" + solver_list());
    app.add_option("--steps", c.steps, "Solver steps on the time grid (NFE = steps x the solver's evaluations per "
                                       "step for single-step solvers; multistep solvers use one per step)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--spacing", c.spacing, "Time grid: logsnr (uniform in log-SNR), time, quadratic, karras, "
                                           "leading/trailing (discrete schedules)")
        ->check(CLI::IsMember({"logsnr", "time", "quadratic", "karras", "leading", "trailing"}))
        ->capture_default_str();
    app.add_option("--n", c.n, "Number of samples")->check(positive())->capture_default_str();
    app.add_option("--seed", c.seed, "Sample i starts from noise seeded with seed + i, so '--seed 5 --n 1' "
                                     "reproduces sample 5 of '--seed 0 --n 16'")
        ->capture_default_str();
    app.add_option("--out", c.out, "PNG to write: a grid of the images, or a scatter plot of the first two "
                                   "coordinates for vector samples")
        ->capture_default_str();
    app.add_option("--nrow", c.nrow, "Images per row of the grid (0: about square)")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--padding", c.padding, "Pixels between grid images")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--size", c.size, "Width and height of a scatter plot in pixels")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--option", c.options, "Solver option key=value (repeatable), e.g. --option "
                                          "lower_order_final=false");
    app.add_option("--rtol", c.rtol, "Adaptive sampling: relative tolerance; with --atol, replaces --steps by a "
                                     "PID step-size controller (solvers with an error estimate, e.g. dpm_adaptive)");
    app.add_option("--atol", c.atol, "Adaptive sampling: absolute tolerance");
    app.add_flag("--denoise-to-zero", c.denoise_to_zero, "Finish with the model's x0 prediction at t_min (+1 NFE)");
    app.add_option("--schedule", c.schedule, "Override the sidecar's schedule (with its default parameters)")
        ->check(CLI::IsMember(schedule_names()));
    app.add_option("--prediction", c.prediction, "Override the sidecar's prediction: eps, x0, v, score, flow")
        ->check(CLI::IsMember({"eps", "x0", "v", "score", "flow"}));
    app.add_option("--time-input", c.time_input, "Override the sidecar's time input: t, index, sigma, lambda")
        ->check(CLI::IsMember({"t", "index", "sigma", "lambda"}));
    app.add_option("--time-scale", c.time_scale, "Override the sidecar's time-input multiplier");
    app.add_option("--shape", c.shape, "Shape of one sample without the batch, e.g. 1,28,28 (default: sidecar)")
        ->delimiter(',');
    app.add_flag("--quiet", c.quiet, "No progress bar or summary line");
  }

  int run(const GlobalOptions& global) override {
    Config& c = config_;
    if (!fsys::exists(c.model)) throw UsageError("--model '" + c.model + "' does not exist");
    if (fsys::is_directory(c.model)) throw UsageError("--model '" + c.model + "' is a directory, not a model file");
    const auto names = stepper_names();
    if (std::find(names.begin(), names.end(), c.solver) == names.end()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw UsageError("--solver '" + c.solver + "' is not a solver (expected one of: " + known + ")");
    }
    if (std::isnan(c.rtol) != std::isnan(c.atol)) throw UsageError("--rtol and --atol must be given together");
    const std::string out_dir = fsys::path(c.out).parent_path().string();
    if (!out_dir.empty() && !fsys::is_directory(out_dir))
      throw UsageError("--out '" + c.out + "': directory '" + out_dir + "' does not exist");

    // Sidecar first, flags override; without either the model cannot be interpreted.
    const std::optional<json> side = read_sidecar(c.model);
    const std::string side_name = sidecar_path(c.model);
    auto need = [&](const char* flag, const char* key) -> json {
      if (side && side->contains(key)) return side->at(key);
      throw UsageError(std::string("--model '") + c.model + "' has no sidecar '" + side_name + "' with \"" + key +
                       "\"; pass " + flag);
    };
    const json schedule_spec = !c.schedule.empty() ? default_schedule_spec(c.schedule) : need("--schedule", "schedule");
    const SchedulePtr schedule = make_schedule(schedule_spec, c.schedule.empty() ? side_name : "--schedule");
    const std::string prediction = !c.prediction.empty() ? c.prediction : need("--prediction", "prediction").get<std::string>();
    const std::string time_input =
        !c.time_input.empty() ? c.time_input : (side ? side->value("time_input", std::string("t")) : "t");
    const double time_scale = !std::isnan(c.time_scale) ? c.time_scale : (side ? side->value("time_scale", 1.0) : 1.0);
    const std::vector<int64_t> shape =
        !c.shape.empty() ? c.shape : need("--shape", "sample_shape").get<std::vector<int64_t>>();
    for (int64_t d : shape) {
      if (d <= 0) throw UsageError("--shape entries must be positive");
    }

    Denoiser model = [&] {
      try {
        return Denoiser::torchscript(c.model, schedule, parse_prediction(prediction), parse_time_input(time_input),
                                     time_scale);
      } catch (const c10::Error& e) {
        throw UsageError("--model '" + c.model + "' cannot be loaded as TorchScript: " + e.what_without_backtrace());
      }
    }();

    Options solver_options;
    for (const auto& text : c.options) {
      auto [key, value] = parse_option(text);
      solver_options.set(key, value);
    }
    std::shared_ptr<const Stepper> stepper;
    try {
      stepper = solver(c.solver, solver_options);
    } catch (const c10::Error& e) {
      throw UsageError("--option: " + std::string(e.what_without_backtrace()));
    }

    std::vector<uint64_t> seeds(static_cast<size_t>(c.n));
    for (int64_t i = 0; i < c.n; ++i) seeds[static_cast<size_t>(i)] = c.seed + static_cast<uint64_t>(i);
    const at::Tensor x_T = randn_per_sample(shape, seeds, at::TensorOptions().dtype(at::kFloat));

    const bool adaptive = !std::isnan(c.rtol);
    SampleOptions so;
    so.denoise_to_zero = c.denoise_to_zero;
    // Stochastic solvers: per-sample noise streams distinct from the x_T seeds (else step noise would
    // repeat x_T's draws), still depending only on the sample's own seed.
    for (uint64_t s : seeds) so.seeds.push_back(derive_seed(s, 1));
    ProgressBar bar(adaptive ? 0 : c.steps, "sample " + c.solver, !c.quiet);
    so.callback = [&](const StepInfo& info) { bar.update(info.index + 1, {{"nfe", double(info.nfe)}}); };

    const auto t0 = std::chrono::steady_clock::now();
    Solution sol;
    if (adaptive) {
      PIDController controller(c.rtol, c.atol);
      sol = sample_adaptive(model, x_T, *stepper, controller, schedule->t_max(), schedule->t_min(), so);
    } else {
      const std::vector<double> grid = timesteps(*schedule, c.steps, c.spacing);
      sol = sample(model, x_T, *stepper, grid, so);
    }
    bar.close();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    at::Tensor image;
    if (shape.size() == 3) {
      if (shape[0] != 1 && shape[0] != 3)
        throw UsageError("samples of shape [" + std::to_string(shape[0]) + ", H, W] have neither 1 nor 3 channels");
      image = image_grid(sol.x, c.nrow, c.padding);
    } else if (shape.size() == 1 && shape[0] >= 2) {
      image = scatter_image(sol.x, c.size);
    } else {
      throw UsageError("cannot draw samples of this --shape as a PNG (expected [C, H, W] or a vector of >= 2)");
    }
    write_png(c.out, image);
    if (!c.quiet) {
      std::cerr << "fewstep sample: " << c.n << " samples, " << c.solver << ", " << sol.steps << " steps, " << sol.nfe
                << " NFE in " << seconds << " s -> " << c.out << " (" << image.size(1) << "x" << image.size(0)
                << ")\n";
    }
    return 0;
  }

 private:
  Config config_;
};

const bool registered = register_command(
    {"sample", "Sample a TorchScript denoiser with any solver and write a PNG",
     "Examples:\n"
     "  fewstep sample --model models/fmnist-unet-eps.pt --solver dpmpp_2m --steps 10 --n 16 --seed 0 --out grid.png\n"
     "  fewstep sample --model runs/gmm2d/model.pt --solver unipc --steps 5 --n 2000 --out gmm.png\n"
     "  fewstep sample --model my.pt --schedule vp_linear --prediction eps --shape 1,28,28 --out grid.png\n\n"
     "Images are mapped from [-1, 1] to [0, 255].\n",
     [] { return std::make_unique<SampleCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
