// `fewstep-bench micro`: micro-distilled samplers (train/micro_trainer.h) against the
// training-free solvers at equal teacher evaluations (NFE), and against 1000-step DDIM.
//
// Two problems: the 16-D Gaussian mixture with its exact denoiser as the teacher (reference: the
// float64 Dormand–Prince solve at rtol = atol = 1e-10), and the Fashion-MNIST teacher (reference: its
// own DEIS-3 solve in λ, 500 steps, checked against 250 steps). For every NFE the median coupled
// error (per-sample L2 distance to the reference from the same x_T) and, for images, FD-FMNIST.
// Accounting (docs/design.md §5): NFE counts teacher evaluations; the heads' parameters and
// FLOPs per pass are printed beside, and the measured time of a teacher evaluation and of a head pass
// on the same batch, side by side, as a ratio; every row has its wall time per sample.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

#include "../batched_runs.h"
#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/micro/exponential_step.h"
#include "fewstep/micro/micro_sampler.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/reference.h"
#include "fewstep/sample/sample.h"
#include "fewstep/core/noise.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::bench {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  std::string mixture_teacher = "models/gmm16d-mlp-eps.pt";  // its sidecar names the exact mixture
  std::string mixture_samplers = "models/distilled/gmm16d-micro-{M}.pt";
  // The shipped Fashion-MNIST micro samplers refuse any teacher but the one they were trained on.
  std::string fmnist_teacher = "models/fmnist-unet-eps-v1.pt";
  std::string fmnist_samplers = "models/distilled/fmnist-micro-{M}.pt";
  std::string classifier = "models/fmnist-classifier.pt";
  std::string fmnist_dir;
  std::string out = "out/micro";
  std::vector<int64_t> nfe = {5, 6, 8, 10, 12, 15, 20};
  std::vector<std::string> solvers = {"dpmpp_2m", "dpmpp_3m", "unipc", "deis"};
  std::vector<std::string> tables = {"mixture", "fmnist"};
  int64_t ddim_steps = 1000;
  int64_t mixture_n = 2000, fmnist_n = 500, batch = 250;
  int64_t fmnist_reference_steps = 500;
  uint64_t seed = 7000000;  // away from the training trajectories' seeds
  bool quiet = false;
};

// {M} of the sampler patterns and the row labels; "_history": residual heads that reuse the previous
// evaluation (MicroHeadConfig::history); "coefficients": the coefficient head (residual_kind);
// "hybrid": coefficients plus a network head; "_nfe10": trained at a budget of 10 evaluations only
// (a sampler for that budget).
const std::vector<std::pair<std::string, std::string>> kVariants = {
    {"joint", "micro joint (g+h)"},
    {"residual", "micro g alone (fixed grid)"},
    {"step_size", "micro h alone (DEIS-2)"},
    {"joint_history", "micro joint, history (g+h)"},
    {"residual_history", "micro g alone, history (fixed grid)"},
    {"coefficients", "micro learned coefficients + h, history"},
    {"coefficients_nfe10", "micro learned coefficients + h, 3 previous, trained at 10 NFE"},
    {"hybrid_nfe10", "micro coefficients + network + h, 3 previous, trained at 10 NFE"}};

std::string with_mode(const std::string& pattern, const std::string& mode) {
  std::string s = pattern;
  const auto at = s.find("{M}");
  if (at != std::string::npos) s.replace(at, 3, mode);
  return s;
}

double seconds_of(const std::function<void()>& f, int repeats) {
  f();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / repeats;
}

struct Problem {
  std::string name, title;
  Denoiser teacher;
  at::Tensor x_T;
  at::Tensor reference;
  std::string reference_note;
  std::vector<std::pair<std::string, std::shared_ptr<const MicroSampler>>> samplers;  // label, sampler
  std::function<double(const at::Tensor&)> fd;  // null: no FD column
};

class MicroBench : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--mixture-teacher", c_.mixture_teacher, "16-D mixture teacher file (its exact mixture is used)")
        ->capture_default_str();
    std::string variants;
    for (const auto& [mode, label] : kVariants) variants += (variants.empty() ? "" : ", ") + mode;
    app.add_option("--mixture-samplers", c_.mixture_samplers, "Its micro samplers ({M} = " + variants + ")")
        ->capture_default_str();
    app.add_option("--fmnist-teacher", c_.fmnist_teacher, "Fashion-MNIST teacher")->capture_default_str();
    app.add_option("--fmnist-samplers", c_.fmnist_samplers, "Its micro samplers")->capture_default_str();
    app.add_option("--classifier", c_.classifier, "Classifier of FD-FMNIST")->capture_default_str();
    app.add_option("--fmnist-dir", c_.fmnist_dir, "Fashion-MNIST directory");
    app.add_option("--out", c_.out, "Output directory (table.md, micro.json, cached references)")->capture_default_str();
    app.add_option("--nfe", c_.nfe, "Teacher evaluations per sample")->delimiter(',')->capture_default_str();
    app.add_option("--solvers", c_.solvers, "Training-free solvers to compare")->delimiter(',')->capture_default_str();
    app.add_option("--tables", c_.tables, "mixture, fmnist")->delimiter(',')->capture_default_str();
    app.add_option("--ddim-steps", c_.ddim_steps, "Steps of the long DDIM baseline (uniform in t)")->capture_default_str();
    app.add_option("--mixture-n", c_.mixture_n, "Mixture samples")->check(positive())->capture_default_str();
    app.add_option("--fmnist-n", c_.fmnist_n, "Fashion-MNIST samples")->check(positive())->capture_default_str();
    app.add_option("--fmnist-reference-steps", c_.fmnist_reference_steps, "DEIS-3 steps of the image reference")
        ->capture_default_str();
    app.add_option("--seed", c_.seed, "x_T of sample i uses seed + i")->check(unsigned_integer())->capture_default_str();
    app.add_flag("--quiet", c_.quiet, "No progress bars");
  }

  int run(const GlobalOptions&) override {
    fsys::create_directories(fsys::path(c_.out) / "cells");
    print_machine(std::cout, machine_info());
    std::ofstream md((fsys::path(c_.out) / "table.md").string());
    json doc = {{"machine", to_json(machine_info())}, {"nfe", c_.nfe}, {"seed", c_.seed}};
    auto wants = [&](const std::string& t) { return std::find(c_.tables.begin(), c_.tables.end(), t) != c_.tables.end(); };
    if (wants("mixture")) doc["mixture"] = table(mixture_problem(), md);
    if (wants("fmnist")) doc["fmnist"] = table(fmnist_problem(), md);
    write_json((fsys::path(c_.out) / "micro.json").string(), doc);
    std::cout << "wrote " << c_.out << "/table.md, micro.json\n";
    return 0;
  }

 private:
  std::vector<std::pair<std::string, std::shared_ptr<const MicroSampler>>> load_samplers(const std::string& pattern) {
    std::vector<std::pair<std::string, std::shared_ptr<const MicroSampler>>> out;
    for (const auto& [mode, label] : kVariants) {
      const std::string path = with_mode(pattern, mode);
      if (!fsys::exists(path)) {
        std::cerr << "[micro] " << path << " not found: row skipped\n";
        continue;
      }
      out.push_back({label, MicroSampler::load(path)});
    }
    return out;
  }

  Problem mixture_problem() {
    const ModelFile file = load_model_file(c_.mixture_teacher);
    const json data = json::parse(file.sidecar_json).at("data");
    const int64_t dim = data.at("dim").get<int64_t>(), components = data.at("components").get<int64_t>();
    const uint64_t gmm_seed = data.at("gmm_seed").get<uint64_t>();
    Problem p{"mixture", "", Denoiser::exact(GaussianMixture::random(dim, components, gmm_seed), file.schedule), {}, {},
              {}, load_samplers(c_.mixture_samplers), nullptr};
    std::ostringstream title;
    title << "16-D Gaussian mixture (exact teacher GaussianMixture::random(" << dim << ", " << components << ", "
          << gmm_seed << ")), " << c_.mixture_n << " samples, float64";
    p.title = title.str();
    p.x_T = seeded_noise({dim}, c_.mixture_n, c_.seed, at::kDouble);
    ReferenceOptions ro;
    ro.rtol = ro.atol = 1e-10;
    const auto& s = p.teacher.schedule_ref();
    const ReferenceResult ref = reference_solve(p.teacher, p.x_T, s.t_max(), s.t_min(), ro);
    p.reference = ref.x;
    p.reference_note = "Reference: float64 Dormand-Prince 5(4) in lambda, rtol = atol = 1e-10 (" +
                       std::to_string(ref.nfe) + " evaluations).";
    return p;
  }

  Problem fmnist_problem() {
    const ModelFile file = load_model_file(c_.fmnist_teacher);
    Problem p{"fmnist", "", file.denoiser, {}, {}, {}, load_samplers(c_.fmnist_samplers), nullptr};
    p.title = "Fashion-MNIST teacher " + fsys::path(c_.fmnist_teacher).filename().string() + ", " +
              std::to_string(c_.fmnist_n) + " samples";
    p.x_T = seeded_noise(file.sample_shape, c_.fmnist_n, c_.seed, at::kFloat);
    const auto deis3 = solver("deis", {{"order", int64_t{3}}, {"variable", std::string("lambda")}});
    auto solve_ref = [&](int64_t steps) {
      const std::string key = "model=" + fsys::absolute(c_.fmnist_teacher).string() +
                              " size=" + std::to_string(fsys::file_size(c_.fmnist_teacher)) +
                              " solver=deis3-lambda steps=" + std::to_string(steps) +
                              " n=" + std::to_string(c_.fmnist_n) + " seed=" + std::to_string(c_.seed);
      double seconds = 0;
      return cached_run((fsys::path(c_.out) / ("reference_fmnist_" + std::to_string(steps) + ".pt")).string(), key,
                        [&] {
                          return run_batched(p.x_T, c_.batch, "reference " + std::to_string(steps), !c_.quiet,
                                             [&](const at::Tensor& chunk) {
                                               return sample(p.teacher, chunk, *deis3,
                                                             timesteps(p.teacher.schedule_ref(), steps, Spacing::LogSNR));
                                             });
                        },
                        &seconds);
    };
    p.reference = solve_ref(c_.fmnist_reference_steps);
    const at::Tensor half = solve_ref(c_.fmnist_reference_steps / 2);
    const CoupledError check = coupled_error(half, p.reference);
    p.reference_note = "Reference: the teacher's DEIS-3 (lambda) solve with " +
                       std::to_string(c_.fmnist_reference_steps) + " steps; against " +
                       std::to_string(c_.fmnist_reference_steps / 2) + " steps its median distance is " +
                       sci(check.median) + " (third order: the reference's own error is about 1/7 of that).";
    FmnistEvaluatorOptions eo;
    eo.data_dir = c_.fmnist_dir;
    eo.cache_dir = c_.out;
    evaluator_ = std::make_unique<FmnistEvaluator>(c_.classifier, eo);
    p.fd = [this](const at::Tensor& x) { return evaluator_->evaluate(x).fd; };
    return p;
  }

  json table(const Problem& p, std::ostream& md) {
    const int64_t n = p.x_T.size(0);
    std::vector<std::string> header = {"method"};
    for (int64_t k : c_.nfe) header.push_back("NFE " + std::to_string(k));
    Table errors(header), fds(header), times(header);
    json rows = json::array();
    std::map<std::string, std::map<int64_t, double>> err_of, ms_of;
    auto record = [&](const std::string& method, int64_t nfe, const Run& run, std::vector<std::string>& e_row,
                      std::vector<std::string>& f_row, std::vector<std::string>& t_row) {
      const double err = coupled_error(run.x, p.reference).median;
      const double fd = p.fd ? p.fd(run.x) : std::numeric_limits<double>::quiet_NaN();
      err_of[method][nfe] = err;
      ms_of[method][nfe] = 1e3 * run.seconds / n;
      e_row.push_back(sci(err, 2));
      f_row.push_back(p.fd ? fixed(fd, 2) : "");
      t_row.push_back(fixed(1e3 * run.seconds / n, 3));
      rows.push_back({{"method", method}, {"nfe", nfe}, {"coupled_error_median", err}, {"fd", p.fd ? json(fd) : json()},
                      {"seconds", run.seconds}, {"ms_per_sample", 1e3 * run.seconds / n}});
    };
    auto add_method = [&](const std::string& method, const std::function<Run(int64_t)>& run_at) {
      std::vector<std::string> e_row = {method}, f_row = {method}, t_row = {method};
      for (int64_t k : c_.nfe) record(method, k, run_at(k), e_row, f_row, t_row);
      errors.add_row(e_row);
      fds.add_row(f_row);
      times.add_row(t_row);
    };
    // Every cell is cached under out/ with what determines it, so adding a sampler re-runs only its rows.
    auto cached = [&](const std::string& id, int64_t k, const std::function<Run()>& make) {
      Run run;
      const std::string key = p.title + " seed=" + std::to_string(c_.seed) + " " + id + " nfe=" + std::to_string(k);
      const std::string file = p.name + "_" + std::to_string(std::hash<std::string>{}(key)) + ".pt";
      run.x = cached_run((fsys::path(c_.out) / "cells" / file).string(), key, make, &run.seconds);
      return run;
    };
    for (const auto& name : c_.solvers) {
      const auto stepper = solver(name);
      add_method(name, [&](int64_t k) {
        return cached(name, k, [&] {
          return run_batched(p.x_T, c_.batch, name + " " + std::to_string(k), !c_.quiet, [&](const at::Tensor& chunk) {
            return sample(p.teacher, chunk, name, steps_for_nfe(*stepper, k));
          });
        });
      });
    }
    for (const auto& [label, sampler] : p.samplers) {
      const std::string id = sampler->source() + " size=" + std::to_string(fsys::file_size(sampler->source())) +
                             " mtime=" +
                             std::to_string(fsys::last_write_time(sampler->source()).time_since_epoch().count());
      add_method(label, [&, s = sampler](int64_t k) {
        return cached(id, k, [&] {
          return run_batched(p.x_T, c_.batch, label + " " + std::to_string(k), !c_.quiet,
                             [&](const at::Tensor& chunk) { return s->sample(p.teacher, chunk, k); });
        });
      });
    }
    // The long baseline: DDIM with ddim_steps steps uniform in t (cached: it is the slowest row).
    Run ddim;
    ddim.x = cached_run((fsys::path(c_.out) / ("ddim_" + p.name + ".pt")).string(),
                        p.title + " ddim steps=" + std::to_string(c_.ddim_steps) + " seed=" + std::to_string(c_.seed),
                        [&] {
                          return run_batched(p.x_T, c_.batch, "ddim " + std::to_string(c_.ddim_steps), !c_.quiet,
                                             [&](const at::Tensor& chunk) {
                                               return sample(p.teacher, chunk, "ddim", c_.ddim_steps, Spacing::Time);
                                             });
                        },
                        &ddim.seconds);
    const double ddim_err = coupled_error(ddim.x, p.reference).median;
    const double ddim_fd = p.fd ? p.fd(ddim.x) : std::numeric_limits<double>::quiet_NaN();
    rows.push_back({{"method", "ddim"}, {"nfe", c_.ddim_steps}, {"coupled_error_median", ddim_err},
                    {"fd", p.fd ? json(ddim_fd) : json()}, {"seconds", ddim.seconds}});

    std::ostringstream notes;
    notes << p.reference_note << "\n\n" << c_.ddim_steps << "-step DDIM (uniform t): median coupled error "
          << sci(ddim_err) << (p.fd ? ", FD-FMNIST " + fixed(ddim_fd, 2) : std::string()) << ", "
          << fixed(1e3 * ddim.seconds / n, 2) << " ms per sample.\n";
    // The other yardstick: the best training-free solver at the same 10 NFE (target: a third of its error).
    std::string best;
    for (const auto& name : c_.solvers)
      if (err_of[name].count(10) && (best.empty() || err_of[name][10] < err_of[best][10])) best = name;
    // The benchmark's yardstick: at 10 teacher evaluations, no worse than 1000-step DDIM.
    for (const auto& [label, sampler] : p.samplers) {
      const auto it = err_of[label].find(10);
      if (it == err_of[label].end()) continue;
      notes << "\n" << label << " at 10 NFE: " << sci(it->second) << " = " << fixed(it->second / ddim_err, 2)
            << "x the " << c_.ddim_steps << "-step DDIM error (target <= 1), " << fixed(ms_of[label][10], 3)
            << " ms per sample (" << c_.ddim_steps << "-step DDIM: " << fixed(1e3 * ddim.seconds / n, 2) << ").";
      // Equal quality: the fewest NFE at which a training-free solver matches it.
      int64_t match = -1;
      std::string who;
      for (int64_t k : c_.nfe)
        for (const auto& name : c_.solvers)
          if (match < 0 && err_of[name][k] <= it->second) match = k, who = name;
      notes << (match > 0 ? " Equal quality from a training-free solver: " + who + " at " + std::to_string(match) +
                                " NFE, " + fixed(ms_of[who][match], 3) + " ms per sample."
                          : " No training-free solver reaches it within " + std::to_string(c_.nfe.back()) + " NFE.");
      if (!best.empty())
        notes << " Against the best training-free solver at 10 NFE (" << best << ", " << sci(err_of[best][10])
              << "): " << fixed(it->second / err_of[best][10], 2) << "x its error (target <= 0.33).";
    }
    notes << "\n\n" << accounting(p);

    std::cout << "\n== " << p.title << " ==\n";
    errors.print(std::cout, "median coupled error vs NFE (teacher evaluations)");
    if (p.fd) fds.print(std::cout, "FD-FMNIST vs NFE");
    times.print(std::cout, "wall time per sample (ms)");
    std::cout << notes.str() << "\n";
    md << "### " << p.title << "\n\nMedian coupled error against the reference, by teacher evaluations (NFE):\n\n";
    errors.print_markdown(md);
    if (p.fd) {
      md << "\nFD-FMNIST:\n\n";
      fds.print_markdown(md);
    }
    md << "\nWall time per sample (ms, batch " << c_.batch << "; measured when the cell was computed — cells are "
          "cached in " << c_.out << "/cells):\n\n";
    times.print_markdown(md);
    md << "\n" << notes.str() << "\n\n";
    return {{"title", p.title}, {"rows", rows}, {"ddim_error", ddim_err}};
  }

  // Parameters, FLOPs and measured time of the heads beside a teacher evaluation, on one batch.
  std::string accounting(const Problem& p) {
    std::ostringstream out;
    const at::Tensor x = p.x_T.slice(0, 0, std::min<int64_t>(c_.batch, p.x_T.size(0)));
    const auto& s = p.teacher.schedule_ref();
    const double t = 0.5;
    c10::InferenceMode guard;
    const double teacher_s = seconds_of([&] { (void)p.teacher(x, t); }, 10);
    out << "Accounting (batch " << x.size(0) << ", " << at::get_num_threads()
        << " threads): a teacher evaluation takes " << fixed(1e3 * teacher_s, 2) << " ms.";
    for (const auto& [label, sampler] : p.samplers) {
      out << " " << label << ":";
      if (sampler->residual()) {
        const at::Tensor eps = p.teacher(x, t).eps;
        const auto opts = at::TensorOptions().dtype(at::kDouble);
        const at::Tensor ls = at::scalar_tensor(s.lambda(t), opts), lt = at::scalar_tensor(s.lambda(0.4), opts);
        const double g_s = seconds_of(
            [&] {
              (void)micro_nonlinear_term(sampler->residual().get(), sampler->info().heads.previous_evaluations(),
                                         s.family(), x, eps, ls, lt);
            },
            10);
        out << " g_psi " << sampler->residual_parameters() << " parameters, "
            << sci(static_cast<double>(residual_head_flops(sampler->info().heads)), 2) << " FLOPs/sample, "
            << fixed(1e3 * g_s, 2) << " ms per pass (" << fixed(g_s / teacher_s, 3) << "x a teacher evaluation);";
      }
      if (sampler->step_size()) {
        out << " h_phi " << sampler->step_size_parameters() << " parameters, "
            << step_size_head_flops(sampler->info().heads) << " FLOPs/sample;";
      }
    }
    out << " Times per sample in the table include everything (teacher, heads, step arithmetic).";
    return out.str();
  }

  Config c_;
  std::unique_ptr<FmnistEvaluator> evaluator_;
};

const bool registered = register_command(
    {"micro", "Micro-distilled samplers (g_psi, h_phi) vs training-free solvers and 1000-step DDIM at equal NFE",
     [] { return std::make_unique<MicroBench>(); }});

}  // namespace
}  // namespace fewstep::bench
