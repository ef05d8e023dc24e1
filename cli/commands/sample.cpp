// `fewstep sample`: loads a TorchScript denoiser with its schedule and prediction (from the sidecar
// `fewstep train` wrote, or from flags), samples it through the library's sampling request
// (sample/request.h) from per-sample seeded noise, and writes a PNG: an image grid for [C, H, W]
// samples, a scatter plot for vectors.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "../command.h"
#include "../model_loader.h"
#include "fewstep/io/png.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/core/tensor_archive.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  ModelFlags model;
  SamplerFlags sampler;
  std::string out = "grid.png", micro, save_samples;
  int64_t n = 16, nrow = 0, padding = 2, scale = 1, size = 512;
  uint64_t seed = 0;
  bool quiet = false;
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
    add_sampler_flags(app, c.sampler);
    app.add_option("--n", c.n, "Number of samples")->check(count_at_most(kMaxSamples))->capture_default_str();
    app.add_option("--seed", c.seed, "Sample i starts from noise seeded with seed + i, so '--seed 5 --n 1' "
                                     "reproduces sample 5 of '--seed 0 --n 16' (stochastic solvers draw their step "
                                     "noise from other streams of the same seeds)")
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
    app.add_option("--micro", c.micro, "A micro-distilled sampler (fewstep distill micro) of this --model: the solver "
                                       "'micro' with this file; --steps is then its budget of teacher evaluations "
                                       "(learned step sizes and nonlinear term)");
    app.add_option("--save-samples", c.save_samples, "Also write the samples to this file: {\"x\": [n, ...] in --dtype, "
                                                     "\"nfe\", \"steps\", \"solver\"} (torch.load(path, "
                                                     "weights_only=False) reads it; fewstep eval --reference takes it)");
    app.add_flag("--quiet", c.quiet, "No progress bar or summary line");
  }

  int run(const GlobalOptions&) override {
    Config& c = config_;
    if (!fsys::exists(c.model.model)) throw UsageError("--model '" + c.model.model + "' does not exist");
    for (const auto& [flag, file] : {std::pair<std::string, std::string>{"--out", c.out}, {"--save-samples", c.save_samples}}) {
      const std::string dir = fsys::path(file).parent_path().string();
      if (!dir.empty() && !fsys::is_directory(dir))
        throw UsageError(flag + " '" + file + "': directory '" + dir + "' does not exist");
    }
    try {
      check_png_path(c.out);  // before sampling, which may take minutes
    } catch (const c10::ValueError& e) {
      throw UsageError("--out: " + std::string(e.what_without_backtrace()));
    }
    if (!c.micro.empty()) {
      if (!c.sampler.solver.empty()) throw UsageError("--micro is the solver 'micro' with that file; drop --solver");
      c.sampler.solver = "micro";
    }
    if (!c.sampler.solver.empty()) make_stepper(c.sampler.solver, {});  // a bad --solver fails before loading
    const LoadedModel model = load_model(c.model);
    const std::vector<int64_t>& shape = model.shape;
    SampleRequest request = sampler_request(model, c.sampler, sample_seeds(c.seed, c.n));
    if (!c.micro.empty()) request.solver_options.set("path", c.micro);
    ResolvedSample job = resolve_request(request);
    const std::string label = job.solver + (c.micro.empty() ? "" : " " + c.micro);
    if (job.tuned_grid && !c.quiet)
      std::cerr << "fewstep sample: using the model file's tuned grid for " << job.solver << " at NFE "
                << job.tuned_grid->nfe << " (--grid default or --spacing for a generated one)\n";
    ProgressBar bar(job.adaptive() ? 0 : static_cast<int64_t>(job.grid.size()) - 1, "sample " + label, !c.quiet);
    job.options.callback = [&](const StepInfo& info) { bar.update(info.index + 1, {{"nfe", double(info.nfe)}}); };
    const auto t0 = std::chrono::steady_clock::now();
    const Solution sol = run_request(job);
    bar.close();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const at::Tensor x = sol.x.to(at::kCPU);  // one copy off the device, after the loop (docs/gpu.md)

    at::Tensor image;
    if (shape.size() == 3) {
      if (shape[0] != 1 && shape[0] != 3)
        throw UsageError("samples of shape [" + std::to_string(shape[0]) + ", H, W] have neither 1 nor 3 channels");
      ImageGridOptions grid_options;
      grid_options.nrow = c.nrow;
      grid_options.padding = c.padding;
      grid_options.scale = c.scale;
      image = image_grid(x, grid_options);
    } else if (shape.size() == 1 && shape[0] >= 2) {
      image = scatter_image(x, c.size);
    } else {
      throw UsageError("cannot draw samples of this --shape as a PNG (expected [C, H, W] or a vector of >= 2)");
    }
    write_png(c.out, image);
    if (!c.save_samples.empty()) {
      TensorArchive archive;
      archive.set_tensor("x", x.contiguous());
      archive.set_int("nfe", sol.nfe);
      archive.set_int("steps", sol.steps);
      archive.set_string("solver", job.solver);
      archive.save(c.save_samples);
    }
    if (!c.quiet) {
      std::cerr << "fewstep sample: " << c.n << " samples, " << label << ", " << sol.steps << (sol.steps == 1 ? " step, " : " steps, ") << sol.nfe
                << " NFE in " << format_duration(seconds) << " -> " << c.out << " (" << image.size(1) << "x" << image.size(0)
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
