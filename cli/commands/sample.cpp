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
#include "../model_loader.h"
#include "fewstep/micro/micro_sampler.h"
#include "fewstep/io/png.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  ModelFlags model;
  std::string solver = "dpmpp_2m", spacing = "logsnr", out = "grid.png", micro;
  int64_t steps = 10, n = 16, nrow = 0, padding = 2, scale = 1, size = 512;
  uint64_t seed = 0;
  double rtol = NAN, atol = NAN;
  bool denoise_to_zero = false, quiet = false;
  std::vector<std::string> options;
};

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
    add_model_flags(app, c.model);
    solver_flag_ = app.add_option("--solver", c.solver, "Solver name (see the list below, or 'fewstep solvers')")
        ->capture_default_str();
    app.footer(app.get_footer() + "\n" + solver_list());
    steps_flag_ = app.add_option("--steps", c.steps, "Solver steps on the time grid (NFE = steps x the solver's evaluations per "
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
    app.add_option("--scale", c.scale, "Enlarge the image grid: every pixel becomes a scale x scale block (1-64)")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--size", c.size, "Width and height of a scatter plot in pixels")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--option", c.options, "Solver option key=value (repeatable), e.g. --option "
                                          "lower_order_final=false");
    app.add_option("--rtol", c.rtol, "Adaptive sampling: relative tolerance; with --atol, replaces --steps by a "
                                     "PID step-size controller (solvers with an error estimate, e.g. dpm_adaptive)");
    app.add_option("--atol", c.atol, "Adaptive sampling: absolute tolerance");
    app.add_option("--micro", c.micro, "A micro-distilled sampler (fewstep distill micro) of this --model: --steps is "
                                       "then its budget of teacher evaluations (learned step sizes and nonlinear term)");
    app.add_flag("--denoise-to-zero", c.denoise_to_zero, "Finish with the model's x0 prediction at t_min (+1 NFE)");
    app.add_flag("--quiet", c.quiet, "No progress bar or summary line");
  }

  int run(const GlobalOptions&) override {
    Config& c = config_;
    if (!fsys::exists(c.model.model)) throw UsageError("--model '" + c.model.model + "' does not exist");
    if (std::isnan(c.rtol) != std::isnan(c.atol)) throw UsageError("--rtol and --atol must be given together");
    const std::string out_dir = fsys::path(c.out).parent_path().string();
    if (!out_dir.empty() && !fsys::is_directory(out_dir))
      throw UsageError("--out '" + c.out + "': directory '" + out_dir + "' does not exist");
    try {
      check_png_path(c.out);  // before sampling, which may take minutes
    } catch (const c10::ValueError& e) {
      throw UsageError("--out: " + std::string(e.what_without_backtrace()));
    }
    if (solver_flag_->count() > 0) make_stepper(c.solver, c.options);  // a bad --solver fails before loading
    const LoadedModel model = load_model(c.model);
    const std::vector<int64_t>& shape = model.shape;
    GridSpec grid{c.steps, c.spacing, c.rtol, c.atol, c.denoise_to_zero, /*explicit_grid=*/{}};
    // A distilled student samples on its own grid unless the flags choose another.
    if (!model.timesteps.empty() && solver_flag_->count() == 0 && steps_flag_->count() == 0 && !grid.adaptive()) {
      c.solver = model.solver;
      grid.explicit_grid = model.timesteps;
      grid.steps = static_cast<int64_t>(model.timesteps.size()) - 1;
    }
    std::shared_ptr<const MicroSampler> micro;
    if (!c.micro.empty()) {
      if (grid.adaptive() || solver_flag_->count() > 0)
        throw UsageError("--micro chooses its own steps and step rule; drop --solver/--rtol/--atol");
      try {
        micro = MicroSampler::load(c.micro);
      } catch (const c10::Error& e) {
        throw UsageError("--micro: " + std::string(e.what_without_backtrace()));
      }
      c.solver = "micro " + to_string(micro->info().mode);
    }
    const std::shared_ptr<const Stepper> stepper = micro ? nullptr : make_stepper(c.solver, c.options);

    const std::vector<uint64_t> seeds = sample_seeds(c.seed, c.n);
    const at::Tensor x_T = initial_noise(shape, seeds);
    ProgressBar bar(grid.adaptive() ? 0 : grid.steps, "sample " + c.solver, !c.quiet);
    const auto t0 = std::chrono::steady_clock::now();
    const StepCallback on_step = [&](const StepInfo& info) { bar.update(info.index + 1, {{"nfe", double(info.nfe)}}); };
    Solution sol;
    if (micro) {
      SampleOptions so;
      so.callback = on_step;
      try {
        sol = micro->sample(*model.denoiser, x_T, c.steps, so);
      } catch (const c10::ValueError& e) {
        throw UsageError("--micro: " + std::string(e.what_without_backtrace()));
      }
    } else {
      sol = run_sampler(model, x_T, *stepper, seeds, grid, on_step);
    }
    bar.close();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    at::Tensor image;
    if (shape.size() == 3) {
      if (shape[0] != 1 && shape[0] != 3)
        throw UsageError("samples of shape [" + std::to_string(shape[0]) + ", H, W] have neither 1 nor 3 channels");
      ImageGridOptions grid_options;
      grid_options.nrow = c.nrow;
      grid_options.padding = c.padding;
      grid_options.scale = c.scale;
      image = image_grid(sol.x, grid_options);
    } else if (shape.size() == 1 && shape[0] >= 2) {
      image = scatter_image(sol.x, c.size);
    } else {
      throw UsageError("cannot draw samples of this --shape as a PNG (expected [C, H, W] or a vector of >= 2)");
    }
    write_png(c.out, image);
    if (!c.quiet) {
      std::cerr << "fewstep sample: " << c.n << " samples, " << c.solver << ", " << sol.steps << " steps, " << sol.nfe
                << " NFE in " << format_duration(seconds) << " -> " << c.out << " (" << image.size(1) << "x" << image.size(0)
                << ")\n";
    }
    return 0;
  }

 private:
  Config config_;
  CLI::Option* solver_flag_ = nullptr;
  CLI::Option* steps_flag_ = nullptr;
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
