// `fewstep tune-grid`: fits a solver's time grid for a model (grids/optimize.h: dynamic programming or
// gradient descent on reference solves from per-sample seeds), prints it with its errors, and with
// --write-sidecar stores it in the model file's sidecar, where `fewstep sample` / `fs.sample(path)` find it.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "../command.h"
#include "../model_loader.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/core/cache_dir.h"
#include "fewstep/grids/optimize.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  ModelFlags model;
  std::string solver, method = "dp", cache_dir, json_out;
  std::vector<std::string> options;
  int64_t nfe = 0;
  GridFitSettings fit;
  bool write_sidecar = false, no_cache = false, quiet = false;
};

class TuneGridCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    add_model_flags(app, c.model);
    app.add_option("--solver", c.solver, "The solver the grid is for (a deterministic fixed-grid solver)")->required();
    app.add_option("--option", c.options, "Solver option key=value (repeatable); the grid is kept for these options");
    app.add_option("--nfe", c.nfe, "Model evaluations of the grid (steps = the count that spends exactly this)")
        ->required();
    app.add_option("--method", c.method, "dp: dynamic programming over a fine grid of candidate times (GITS, arXiv "
                                         "2405.11326); gradient: Adam on the times (LD3, arXiv 2405.15506)")
        ->capture_default_str();
    app.add_option("--n", c.fit.n, "Training samples (seeds --seed, --seed + 1, ...)")->capture_default_str();
    app.add_option("--seed", c.fit.seed, "First training seed")->capture_default_str();
    app.add_option("--heldout-n", c.fit.heldout_n, "Held-out samples that score the grid")->capture_default_str();
    app.add_option("--heldout-seed", c.fit.heldout_seed, "First held-out seed")->capture_default_str();
    app.add_option("--candidates", c.fit.candidates, "dp: candidate times (log-SNR spaced)")->capture_default_str();
    app.add_flag("--dp-one-step{false}", c.fit.dp_history, "dp: cost every jump by one step from a fresh solver "
                                                           "state (GITS), also for multistep solvers, instead of "
                                                           "with the history along the path");
    app.add_flag("--dp-unweighted{false}", c.fit.dp_propagate, "dp: sum the plain local errors (GITS) instead of "
                                                               "the squared errors propagated to t_min");
    app.add_option("--substeps", c.fit.substeps, "Reference solver steps per candidate interval (reference steps = "
                                                 "candidates x substeps)")
        ->capture_default_str();
    app.add_option("--reference-solver", c.fit.reference_solver, "Solver of the reference solves")->capture_default_str();
    app.add_option("--iterations", c.fit.iterations, "gradient: Adam iterations")->capture_default_str();
    app.add_option("--lr", c.fit.lr, "gradient: Adam's learning rate on the softmax logits")->capture_default_str();
    app.add_option("--fd-step", c.fit.fd_step, "gradient: forward-difference step in log-SNR")->capture_default_str();
    app.add_option("--batch", c.fit.batch, "Samples per solve")->capture_default_str();
    app.add_option("--cache-dir", c.cache_dir, "Cache root of the reference solves (<dir>/teacher-solves/; default "
                                               "$FEWSTEP_CACHE_DIR, $XDG_CACHE_HOME/fewstep or ~/.cache/fewstep)");
    app.add_flag("--no-cache", c.no_cache, "Do not read or write cached reference solves");
    app.add_flag("--write-sidecar", c.write_sidecar, "Store the grid in the model file's sidecar (\"tuned_grids\"); "
                                                     "fewstep sample then uses it for this solver and NFE");
    app.add_option("--json", c.json_out, "Also write the result as JSON to this file");
    app.add_flag("--quiet", c.quiet, "No progress bars");
  }

  int run(const GlobalOptions&) override {
    Config& c = config_;
    // Without --dtype the network and the solves run in float64 (the grid is fitted to the reference, not
    // to float32 rounding); --dtype float32 fits it in the precision a float32 run samples in.
    if (c.model.dtype.empty()) c.model.dtype = "float64";
    const LoadedModel model = load_model(c.model);
    if (model.placement.device && !model.placement.device->is_cpu())
      throw UsageError("--device '" + c.model.device + "': tune-grid runs its reference solves on the CPU");
    Options options;
    for (const auto& text : c.options) {
      auto [key, value] = parse_option(text);
      options.set(key, value);
    }
    make_stepper(c.solver, c.options);  // names the flag for an unknown solver or option
    GridFitSettings fit = c.fit;
    fit.sample_shape = model.shape;
    fit.dtype = model.placement.dtype.value_or(at::kDouble);
    fit.progress = !c.quiet;
    if (!c.no_cache) fit.cache_root = c.cache_dir.empty() ? cache_directory() : c.cache_dir;
    OptimizedGrid grid;
    try {
      grid = optimize_timesteps(*model.denoiser, c.solver, options, c.nfe, c.method, fit);
    } catch (const c10::ValueError& e) {
      throw UsageError(e.what_without_backtrace());
    }
    const json fit_json = json::parse(grid.fit_json());
    std::printf("tuned grid     %s, NFE %lld, method %s, fitted in %.1f s\n", grid.solver.c_str(),
                static_cast<long long>(grid.nfe), grid.method.c_str(), grid.fit_seconds);
    std::printf("times          ");
    for (double t : grid.times) std::printf("%.6g ", t);
    std::printf("\nreference      %s, %lld steps (log-SNR), %lld NFE per solve\n", fit.reference_solver.c_str(),
                static_cast<long long>(fit.candidates * fit.substeps), static_cast<long long>(grid.reference_nfe));
    std::printf("median error   train %.4g (n %lld)   held-out %.4g (n %lld)\n", grid.train_error,
                static_cast<long long>(fit.n), grid.heldout_error, static_cast<long long>(fit.heldout_n));
    std::printf("best fixed     %s: held-out %.4g (ratio tuned/fixed %.3f)\n", grid.best_fixed_spacing.c_str(),
                grid.best_fixed_error, grid.heldout_error / grid.best_fixed_error);
    if (grid.selected != "fitted")
      std::printf("selected       %s: it beat the fitted grid on the training seeds (fitted: train %.4g)\n",
                  grid.selected.c_str(), grid.fitted_train_error);
    if (!c.json_out.empty()) {
      json out = {{"model", model.path}, {"solver", grid.solver}, {"options", c.options}, {"nfe", grid.nfe},
                  {"times", grid.times}, {"fit", fit_json}};
      const std::string text = out.dump(2) + "\n";
      atomic_write_bytes(c.json_out, text.data(), text.size());
    }
    if (c.write_sidecar) {
      try {
        save_optimized_grid(model.path, grid);
      } catch (const c10::ValueError& e) {
        throw UsageError("--write-sidecar: " + std::string(e.what_without_backtrace()));
      }
      std::printf("wrote          the grid into %s\n", model_sidecar_path(model.path).c_str());
    }
    return 0;
  }

 private:
  Config config_;
};

const bool registered = register_command(
    {"tune-grid", "Fit a solver's time grid for a model on reference solves (docs/grids.md)",
     "Examples:\n"
     "  fewstep tune-grid --model models/fmnist-unet-eps.pt --solver unipc --nfe 5 --method dp --dtype float32 "
     "--write-sidecar\n"
     "--dtype is the precision of x_T, the reference and the fitted solves (default float64 here).\n"
     "  fewstep sample --model models/fmnist-unet-eps.pt --solver unipc --steps 5   # uses the tuned grid\n",
     [] { return std::make_unique<TuneGridCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
