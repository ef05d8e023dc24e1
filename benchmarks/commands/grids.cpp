// `fewstep-bench grids`: optimised time grids (grids/optimize.h, docs/grids.md) against the best
// fixed-grid configuration (every deterministic fixed-grid solver x every generated spacing), on
// held-out seeds, per NFE: on the exact Gaussian mixture of `fewstep-bench solvers` and on a model
// file (the Fashion-MNIST teacher), with the fitting times.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>
#include <sstream>

#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/core/cache_dir.h"
#include "fewstep/grids/optimize.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::bench {
namespace {

using json = nlohmann::json;

struct Config {
  std::vector<std::string> problems = {"mixture", "fmnist"};
  std::vector<int64_t> nfe = {5, 6, 8, 10};
  std::vector<std::string> solvers = {"dpmpp_2m", "unipc", "dpmpp_3m", "deis"};
  std::vector<std::string> fixed_solvers = {"all"};
  std::vector<std::string> methods = {"dp", "gradient"};
  std::vector<std::string> spacings = {"logsnr", "time", "quadratic", "karras"};
  // mixture (as fewstep-bench solvers)
  int64_t dim = 16, components = 8;
  uint64_t mixture_seed = 0;
  // fitting (GridFitSettings)
  int64_t n = 64, heldout_n = 256, candidates = 100, substeps = 4, iterations = 300;
  double lr = 0.05, fd_step = 1e-4;
  // the model-file problem
  std::string model = "models/fmnist-unet-eps.pt";
  int64_t model_n = 32, model_heldout_n = 64, model_iterations = 100;
  double model_fd_step = 1e-2;
  std::string json_out = "out/bench/grids.json";
  std::string cache_dir;
};

struct Problem {
  std::string name;
  std::shared_ptr<const Denoiser> model;
  GridFitSettings settings;
};

class GridsCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--problems", c_.problems, "mixture (exact, float64), fmnist (--model, float32)")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--nfe", c_.nfe, "NFE budgets")->delimiter(',')->capture_default_str();
    app.add_option("--solvers", c_.solvers, "Solvers to fit grids for")->delimiter(',')->capture_default_str();
    app.add_option("--fixed-solvers", c_.fixed_solvers, "'all' (every deterministic fixed-grid solver) or a list: "
                                                        "the fixed-grid configurations compared against")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--methods", c_.methods, "dp, gradient")->delimiter(',')->capture_default_str();
    app.add_option("--spacings", c_.spacings, "Fixed spacings compared against")->delimiter(',')->capture_default_str();
    app.add_option("--dim", c_.dim, "Mixture dimension")->capture_default_str();
    app.add_option("--components", c_.components, "Mixture components")->capture_default_str();
    app.add_option("--mixture-seed", c_.mixture_seed, "Mixture seed")->check(unsigned_integer())->capture_default_str();
    app.add_option("--n", c_.n, "mixture: training seeds")->capture_default_str();
    app.add_option("--heldout-n", c_.heldout_n, "mixture: held-out seeds")->capture_default_str();
    app.add_option("--candidates", c_.candidates, "DP candidate times")->capture_default_str();
    app.add_option("--substeps", c_.substeps, "Reference steps per candidate interval")->capture_default_str();
    app.add_option("--iterations", c_.iterations, "mixture: gradient iterations")->capture_default_str();
    app.add_option("--lr", c_.lr, "gradient: Adam's learning rate")->capture_default_str();
    app.add_option("--fd-step", c_.fd_step, "mixture: forward-difference step in log-SNR")->capture_default_str();
    app.add_option("--model", c_.model, "fmnist: the model file")->capture_default_str();
    app.add_option("--model-n", c_.model_n, "fmnist: training seeds")->capture_default_str();
    app.add_option("--model-heldout-n", c_.model_heldout_n, "fmnist: held-out seeds")->capture_default_str();
    app.add_option("--model-iterations", c_.model_iterations, "fmnist: gradient iterations")->capture_default_str();
    app.add_option("--model-fd-step", c_.model_fd_step, "fmnist: forward-difference step (float32 solves)")
        ->capture_default_str();
    app.add_option("--json", c_.json_out, "JSON report")->capture_default_str();
    app.add_option("--cache-dir", c_.cache_dir, "Cache root of the reference solves (default: fewstep's cache)");
  }

  int run(const GlobalOptions&) override {
    print_machine(std::cout, machine_info());
    const std::string cache = c_.cache_dir.empty() ? cache_directory() : c_.cache_dir;
    json doc = {{"config", {{"nfe", c_.nfe}, {"solvers", c_.solvers}, {"methods", c_.methods},
                            {"spacings", c_.spacings}, {"candidates", c_.candidates}, {"substeps", c_.substeps}}},
                {"error", "median over held-out seeds of the per-sample RMS error of x_0 against the reference"},
                {"problems", json::array()}};
    for (const std::string& name : c_.problems) doc["problems"].push_back(run_problem(make_problem(name, cache)));
    write_json(c_.json_out, doc);
    std::cout << "\nJSON written to " << c_.json_out << "\n";
    return 0;
  }

 private:
  Problem make_problem(const std::string& name, const std::string& cache) const {
    Problem p;
    p.name = name;
    GridFitSettings& s = p.settings;
    s.candidates = c_.candidates;
    s.substeps = c_.substeps;
    s.lr = c_.lr;
    s.cache_root = cache;
    s.progress = false;
    if (name == "mixture") {
      auto schedule = std::make_shared<VPLinear>(0.1, 20.0);
      p.model = std::make_shared<const Denoiser>(
          Denoiser::exact(GaussianMixture::random(c_.dim, c_.components, c_.mixture_seed), schedule));
      s.sample_shape = {c_.dim};
      s.n = c_.n;
      s.heldout_n = c_.heldout_n;
      s.iterations = c_.iterations;
      s.fd_step = c_.fd_step;
      s.dtype = at::kDouble;
    } else if (name == "fmnist") {
      ModelFile file = load_model_file(c_.model);
      s.sample_shape = file.sample_shape;
      p.model = std::make_shared<const Denoiser>(std::move(file.denoiser));
      s.n = c_.model_n;
      s.heldout_n = c_.model_heldout_n;
      s.iterations = c_.model_iterations;
      s.fd_step = c_.model_fd_step;
      s.dtype = at::kFloat;
      s.batch = 64;
    } else {
      FEWSTEP_CHECK_VALUE(false, "--problems: unknown problem '", name, "' (expected mixture or fmnist)");
    }
    return p;
  }

  std::vector<std::string> fixed_solvers() const {
    if (!(c_.fixed_solvers.size() == 1 && c_.fixed_solvers[0] == "all")) return c_.fixed_solvers;
    std::vector<std::string> out;
    for (const auto& e : registered_steppers())
      if (!e.traits.stochastic && !e.traits.adaptive_by_default) out.push_back(e.traits.name);
    return out;
  }

  json run_problem(const Problem& p) const {
    const Denoiser& model = *p.model;
    const GridFitSettings& s = p.settings;
    const NoiseSchedule& schedule = model.schedule_ref();
    std::cout << "\nproblem " << p.name << ": " << model.description() << ", reference " << s.reference_solver << " "
              << s.candidates * s.substeps << " log-SNR steps, train seeds " << s.seed << ".. (n " << s.n
              << "), held-out seeds " << s.heldout_seed << ".. (n " << s.heldout_n << ")\n";
    // The held-out references: the same cached teacher solve optimize_timesteps scores with.
    TeacherSolveSpec spec;
    spec.sample_shape = s.sample_shape;
    spec.n = s.heldout_n;
    spec.seed = s.heldout_seed;
    spec.solver = s.reference_solver;
    spec.grid = timesteps(schedule, s.candidates * s.substeps, Spacing::LogSNR);
    spec.dtype = s.dtype;
    spec.batch = s.batch;
    spec.label = "held-out references";
    const TeacherSolve held = teacher_solve(model, spec, s.cache_root);

    json rows = json::array();
    Table table({"NFE", "best fixed (solver, spacing)", "error", "dp (solver)", "error", "ratio", "fit s",
                 "gradient (solver)", "error", "ratio", "fit s"});
    for (int64_t nfe : c_.nfe) {
      json row = {{"nfe", nfe}};
      // Best fixed-grid configuration.
      double best_fixed = std::numeric_limits<double>::infinity();
      std::string best_config;
      json fixed_rows = json::array();
      for (const std::string& name : fixed_solvers()) {
        std::shared_ptr<const Stepper> stepper;
        try {
          stepper = solver(name);  // e.g. micro needs its file: not a fixed-grid configuration here
        } catch (const c10::Error&) {
          continue;
        }
        const int64_t steps = steps_for_nfe(*stepper, nfe);
        if (steps == 0 || stepper->plan(schedule, steps, Spacing::LogSNR, std::nullopt, std::nullopt)) continue;
        for (const std::string& sp : c_.spacings) {
          double e = std::numeric_limits<double>::quiet_NaN();
          try {
            e = at::quantile(grid_errors(model, name, {}, timesteps(schedule, steps, sp), held.x_T(), held.x_end(),
                                         s.batch),
                             0.5)
                    .item<double>();
          } catch (const c10::Error&) {
            continue;
          }
          fixed_rows.push_back({{"solver", name}, {"spacing", sp}, {"error", e}});
          if (e < best_fixed) {
            best_fixed = e;
            best_config = name + ", " + sp;
          }
        }
      }
      row["best_fixed"] = {{"config", best_config}, {"error", best_fixed}};
      row["fixed"] = fixed_rows;
      std::vector<std::string> cells = {std::to_string(nfe), best_config, sci(best_fixed, 2)};
      for (const std::string& method : {std::string("dp"), std::string("gradient")}) {
        if (std::find(c_.methods.begin(), c_.methods.end(), method) == c_.methods.end()) {
          cells.insert(cells.end(), {"-", "-", "-", "-"});
          continue;
        }
        double best = std::numeric_limits<double>::infinity(), seconds = 0.0;
        std::string best_solver;
        json fits = json::array();
        for (const std::string& name : c_.solvers) {
          const auto stepper = solver(name);
          if (steps_for_nfe(*stepper, nfe) == 0) continue;
          const OptimizedGrid g = optimize_timesteps(model, name, {}, nfe, method, s);
          fits.push_back({{"solver", name}, {"times", g.times}, {"heldout_error", g.heldout_error},
                          {"train_error", g.train_error}, {"fit_seconds", g.fit_seconds},
                          {"best_fixed_spacing_same_solver", g.best_fixed_spacing},
                          {"best_fixed_error_same_solver", g.best_fixed_error}});
          std::cout << "  NFE " << nfe << " " << method << " " << name << ": held-out " << sci(g.heldout_error, 3)
                    << " (same solver, best fixed " << g.best_fixed_spacing << " " << sci(g.best_fixed_error, 3)
                    << "), fit " << fixed(g.fit_seconds, 1) << " s" << std::endl;
          if (g.heldout_error < best) {
            best = g.heldout_error;
            best_solver = name;
            seconds = g.fit_seconds;
          }
        }
        row[method] = {{"best_solver", best_solver}, {"error", best}, {"ratio_to_best_fixed", best / best_fixed},
                       {"fit_seconds", seconds}, {"fits", fits}};
        cells.insert(cells.end(), {best_solver, sci(best, 2), fixed(best / best_fixed, 2), fixed(seconds, 1)});
      }
      table.add_row(cells);
      rows.push_back(row);
    }
    std::cout << "\n";
    table.print(std::cout, p.name + ": median held-out error, tuned grid vs the best fixed-grid configuration "
                               "(ratio < 1: the tuned grid is better; fit s includes the reference solves unless "
                               "cached)");
    std::cout << "\n";
    table.print_markdown(std::cout);
    return {{"problem", p.name}, {"model", model.description()}, {"rows", rows}};
  }

  Config c_;
};

[[maybe_unused]] const bool kRegistered = register_command(
    {"grids", "optimised time grids (dp, gradient) vs the best fixed-grid configuration on held-out seeds",
     [] { return std::make_unique<GridsCommand>(); }});

}  // namespace
}  // namespace fewstep::bench
