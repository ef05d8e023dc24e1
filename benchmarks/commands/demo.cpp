// `fewstep-bench demo`: the main job of `make demo`. Samples the shipped Fashion-MNIST teacher with
// several solvers at the same NFE and with a high-NFE reference from the same x_T, then writes
// sample grids (PNG) and a table (solver, NFE, FD-FMNIST with its train-vs-test floor, class KL,
// coupled error against the reference, seconds) under --out.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "../batched_runs.h"
#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/core/check.h"
#include "fewstep/io/png.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/core/noise.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep::bench {
namespace {

namespace fsys = std::filesystem;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Config {
  std::string model = "models/fmnist-unet-eps.pt";
  std::string classifier = "models/fmnist-classifier.pt";
  std::string fmnist_dir;  // default: the reader's ($FEWSTEP_FASHION_MNIST_DIR or the Debian path)
  std::string out = "out/demo";
  std::vector<std::string> solvers = {"ddim", "dpm_solver_fast", "dpmpp_2m", "dpmpp_3m", "deis", "unipc"};
  int64_t nfe = 10;
  std::string spacing = "logsnr";
  // Within a median per-pixel RMS of 1.4e-3 of 1000 steps on this teacher: 30x below the best
  // 10-NFE error, at a tenth of the cost.
  std::string reference_solver = "dpmpp_2m";
  int64_t reference_steps = 100;
  int64_t n = 1000;
  int64_t batch = 250;  // samples per network call: bounds memory, drives the progress bar
  int64_t grid = 64;    // samples shown per PNG grid
  uint64_t seed = 0;
  bool quiet = false;
};

Run run_solver(const ModelFile& model, const at::Tensor& x_T, const std::string& name, int64_t steps,
               const Config& c) {
  const Spacing spacing = parse_spacing(c.spacing);
  // By name, so that a stepper with its own plan (dpm_solver_fast) reads `steps` as its budget.
  return run_batched(x_T, c.batch, name + " (" + std::to_string(steps) + " steps)", !c.quiet,
                     [&](const at::Tensor& chunk) { return sample(model.denoiser, chunk, name, steps, spacing); });
}

// The reference is by far the costliest run; it is cached under --out, keyed by everything that
// determines it, and recomputed when any of that changes.
at::Tensor reference_sample(const ModelFile& model, const at::Tensor& x_T, const Config& c, double* seconds) {
  std::ostringstream key;
  key << "model=" << fsys::absolute(model.path).string() << " size=" << fsys::file_size(model.path)
      << " mtime=" << fsys::last_write_time(model.path).time_since_epoch().count() << " solver=" << c.reference_solver
      << " steps=" << c.reference_steps << " spacing=" << c.spacing << " n=" << c.n << " seed=" << c.seed;
  return cached_run((fsys::path(c.out) / "reference.pt").string(), key.str(),
                    [&] { return run_solver(model, x_T, c.reference_solver, c.reference_steps, c); }, seconds);
}

void write_grid(const at::Tensor& x, const Config& c, const std::string& file) {
  const at::Tensor shown = x.slice(0, 0, std::min<int64_t>(c.grid, x.size(0)));
  write_png((fsys::path(c.out) / file).string(), image_grid(shown.clamp(-1.0, 1.0)));
}

class DemoCommand : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--model", c_.model, "TorchScript teacher with its sidecar (.json)")->capture_default_str();
    app.add_option("--classifier", c_.classifier, "TorchScript Fashion-MNIST classifier for FD-FMNIST and class KL")
        ->capture_default_str();
    app.add_option("--fmnist-dir", c_.fmnist_dir, "Directory of the Fashion-MNIST IDX .gz files");
    app.add_option("--out", c_.out, "Output directory (grids, table.md, demo.json, cached reference)")
        ->capture_default_str();
    app.add_option("--solvers", c_.solvers, "Solvers compared at equal NFE")->delimiter(',')->capture_default_str();
    app.add_option("--nfe", c_.nfe, "Network evaluations per sample for each solver")->check(positive())
        ->capture_default_str();
    app.add_option("--spacing", c_.spacing, "Time grid: logsnr, time, quadratic, karras")->capture_default_str();
    app.add_option("--reference-solver", c_.reference_solver, "Solver of the reference sample")->capture_default_str();
    app.add_option("--reference-steps", c_.reference_steps, "Steps of the reference sample")
        ->check(positive())->capture_default_str();
    app.add_option("--n", c_.n, "Samples per solver (FD needs hundreds)")->check(positive())
        ->capture_default_str();
    app.add_option("--batch", c_.batch, "Samples per batch")->check(positive())->capture_default_str();
    app.add_option("--grid", c_.grid, "Samples shown in each PNG grid")->check(positive())
        ->capture_default_str();
    app.add_option("--seed", c_.seed, "x_T of sample i uses seed + i")->check(unsigned_integer())->capture_default_str();
    app.add_flag("--quiet", c_.quiet, "No progress bars");
  }

  int run(const GlobalOptions&) override {
    const Config& c = c_;
    fsys::create_directories(c.out);
    print_machine(std::cout, machine_info());
    const ModelFile model = load_model_file(c.model);
    FEWSTEP_CHECK_VALUE(model.sample_shape == std::vector<int64_t>({1, 28, 28}), "--model '", c.model,
                        "' makes samples of shape ", at::IntArrayRef(model.sample_shape),
                        "; the demo needs a Fashion-MNIST model ([1, 28, 28])");
    std::vector<int64_t> steps;
    for (const auto& name : c.solvers) {
      const int64_t s = steps_for_nfe(*solver(name), c.nfe);  // solver(): ValueError listing names if unknown
      FEWSTEP_CHECK_VALUE(s > 0, "--solvers: '", name, "' cannot spend exactly --nfe ", c.nfe, " evaluations");
      steps.push_back(s);
    }
    std::cout << "model: " << c.model << " (" << model.schedule->repr() << ", prediction "
              << to_string(model.prediction) << ")\n";

    std::vector<uint64_t> seeds(static_cast<size_t>(c.n));
    for (int64_t i = 0; i < c.n; ++i) seeds[static_cast<size_t>(i)] = c.seed + static_cast<uint64_t>(i);
    std::vector<int64_t> shape = model.sample_shape;
    const at::Tensor x_T = randn_per_sample(shape, seeds, at::TensorOptions().dtype(at::kFloat));

    const auto eval_start = Clock::now();
    FmnistEvaluatorOptions eval_options;
    eval_options.data_dir = c.fmnist_dir;
    eval_options.cache_dir = c.out;  // test-set statistics and floor features, reused by later runs
    FmnistEvaluator evaluator(c.classifier, eval_options);
    std::cerr << "classifier: " << c.classifier << " (test accuracy " << fixed(100 * evaluator.test_accuracy(), 2)
              << "%), set up in " << format_duration(seconds_since(eval_start)) << "\n";

    double ref_seconds = 0;
    const at::Tensor x_ref = reference_sample(model, x_T, c, &ref_seconds);
    write_grid(x_ref, c, "grid_reference.png");

    Table table({"solver", "NFE", "FD-FMNIST", "FD floor", "class KL", "coupled RMS err (median)", "seconds"});
    nlohmann::json rows = nlohmann::json::array();
    auto add = [&](const std::string& label, int64_t nfe, const at::Tensor& x, double seconds, bool is_reference) {
      const FmnistReport r = evaluator.evaluate(x);
      const CoupledError err = coupled_error(x, x_ref);
      table.add_row({label, std::to_string(nfe), fixed(r.fd, 2), fixed(r.fd_floor, 2), sci(r.class_kl, 2),
                     is_reference ? "(reference)" : sci(err.median, 2), fixed(seconds, 1)});
      rows.push_back({{"solver", label},
                      {"nfe", nfe},
                      {"fd_fmnist", r.fd},
                      {"fd_floor", r.fd_floor},
                      {"class_kl", r.class_kl},
                      {"coupled_error_rms", {{"median", err.median}, {"mean", err.mean}, {"max", err.max}}},
                      {"seconds", seconds}});
    };
    add(c.reference_solver + " (reference)", solver(c.reference_solver)->nfe_for_steps(c.reference_steps), x_ref,
        ref_seconds, true);
    for (size_t i = 0; i < c.solvers.size(); ++i) {
      Run run = run_solver(model, x_T, c.solvers[i], steps[i], c);
      write_grid(run.x, c, "grid_" + c.solvers[i] + ".png");
      add(c.solvers[i], run.nfe, run.x, run.seconds, false);
    }

    std::ostringstream title;
    title << "Fashion-MNIST teacher " << fsys::path(c.model).filename().string() << ", " << c.n << " samples, "
          << c.spacing << " grid, " << at::get_num_threads() << " threads";
    table.print(std::cout, title.str());
    std::ofstream md((fsys::path(c.out) / "table.md").string());
    md << title.str() << "\n\n";
    table.print_markdown(md);
    write_json((fsys::path(c.out) / "demo.json").string(),
               {{"machine", to_json(machine_info())},
                {"model", c.model},
                {"classifier", c.classifier},
                {"n", c.n},
                {"seed", c.seed},
                {"spacing", c.spacing},
                {"reference", {{"solver", c.reference_solver}, {"steps", c.reference_steps}}},
                {"rows", rows}});
    std::cout << "wrote " << c.out << "/grid_*.png, table.md, demo.json\n";
    return 0;
  }

 private:
  Config c_;
};

const bool registered = register_command(
    {"demo", "Sample the shipped Fashion-MNIST teacher with several solvers; grids, FD-FMNIST, coupled error",
     [] { return std::make_unique<DemoCommand>(); }});

}  // namespace
}  // namespace fewstep::bench
