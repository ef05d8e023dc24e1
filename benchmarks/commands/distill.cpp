// `fewstep-bench distill`: distilled students (progressive, knowledge, guidance distillation) beside
// their teacher sampled with DDIM and with the best training-free solver at the same number of
// network calls, from the same x_T. Three tables:
//  - Fashion-MNIST, unconditional: FD-FMNIST, class KL, "FD to ref" (the Fréchet distance between the
//    classifier features of the samples and of the teacher's reference samples from the same x_T: 0 for
//    a perfect imitation of the teacher, where FD-FMNIST also scores how far the teacher is from the
//    data) and the coupled error against the teacher's 100-step DPM-Solver++(2M) reference (the demo's;
//    its cache is shared);
//  - Fashion-MNIST, class-conditional with guidance scale s: the teacher with classifier-free
//    guidance (2 calls per evaluation) against the guidance-distilled students (1 call);
//  - the 16-D Gaussian mixture: the coupled error against the teacher's 200-step reference and the
//    mean log-likelihood of the samples under the exact mixture.
// Student files are found by pattern ({N} = the step count); missing ones are skipped with a note.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "../batched_runs.h"
#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/core/check.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/core/noise.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::bench {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  // The teacher the shipped Fashion-MNIST students were distilled from (models/fmnist-unet-eps-v1.md):
  // their coupled error is measured against its own reference, and they are compared with its samplers.
  std::string teacher = "models/fmnist-unet-eps-v1.pt";
  std::string pd = "models/distilled/fmnist-pd-{N}step.pt";
  std::string kd = "models/distilled/fmnist-kd-{N}step.pt";
  std::string cond_teacher = "models/fmnist-unet-cond.pt";
  std::string guided = "models/distilled/fmnist-guided.pt";
  std::string guided_pd = "models/distilled/fmnist-guided-pd-{N}step.pt";
  std::string mixture_teacher = "models/gmm16d-mlp-eps.pt";
  std::string mixture_pd = "models/distilled/gmm16d-pd-{N}step.pt";
  std::string mixture_kd = "models/distilled/gmm16d-kd-{N}step.pt";
  // Consistency students ({M} = cd, ct, ict, ect, scd, sct, dmd): 1- and 2-step `consistency` samplers
  // (dmd: a consistency network tuned by distribution matching, docs/distillation.md).
  std::string cm = "models/distilled/fmnist-{M}-{N}step.pt";
  std::string mixture_cm = "models/distilled/gmm16d-{M}-{N}step.pt";
  std::string classifier = "models/fmnist-classifier.pt";
  std::string fmnist_dir;
  std::string out = "out/distill";
  std::string reference_cache = "out/demo/reference.pt";  // the demo's, when its settings match
  std::vector<int64_t> steps = {8, 4, 2, 1};
  std::vector<std::string> training_free = {"dpmpp_2m", "dpmpp_3m", "unipc", "deis", "dpm_solver_fast"};
  double guidance = 2.0;
  int64_t n = 1000, mixture_n = 4000, batch = 250;
  uint64_t seed = 0;
  std::vector<std::string> tables = {"fmnist", "guided", "mixture"};
  bool quiet = false;
};

std::string with_steps(const std::string& pattern, int64_t n) {
  std::string s = pattern;
  const auto at = s.find("{N}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(n));
  return s;
}

/// pattern with "{M}" replaced by a consistency method name.
std::string with_method(const std::string& pattern, const std::string& method) {
  std::string s = pattern;
  const auto at = s.find("{M}");
  if (at != std::string::npos) s.replace(at, 3, method);
  return s;
}

/// The students a table compares, as (row label, file pattern with {N}): progressive, KD, then one
/// consistency student per method of the trainer.
std::vector<std::pair<std::string, std::string>> student_patterns(const std::string& pd, const std::string& kd,
                                                                  const std::string& cm) {
  std::vector<std::pair<std::string, std::string>> out = {{"progressive student", pd}, {"KD student", kd}};
  for (const auto& [label, method] : {std::pair<const char*, const char*>{"CD", "cd"}, {"CT", "ct"}, {"iCT", "ict"},
                                      {"ECT", "ect"}, {"sCD", "scd"}, {"sCT", "sct"},
                                      {"DMD", "dmd"}})
    out.emplace_back(std::string("consistency student (") + label + ")", with_method(cm, method));
  return out;
}

std::string file_key(const std::string& path) {
  return fsys::absolute(path).string() + " size=" + std::to_string(fsys::file_size(path)) +
         " mtime=" + std::to_string(fsys::last_write_time(path).time_since_epoch().count());
}

// One table: rows of (method, steps, NFE, metrics...).
class Section {
 public:
  Section(std::string name, std::vector<std::string> metric_names, std::function<std::vector<double>(const at::Tensor&)> metrics,
          at::Tensor reference)
      : name_(std::move(name)), metric_names_(std::move(metric_names)), metrics_(std::move(metrics)),
        reference_(std::move(reference)) {
    std::vector<std::string> header = {"method", "steps", "NFE"};
    header.insert(header.end(), metric_names_.begin(), metric_names_.end());
    header.push_back("coupled RMS err (median)");
    header.push_back("seconds");
    table_ = std::make_unique<Table>(header);
  }
  double add(const std::string& method, int64_t steps, int64_t nfe, const Run& run) {
    const std::vector<double> m = metrics_(run.x);
    const double err = coupled_error(run.x, reference_).median;
    std::vector<std::string> row = {method, std::to_string(steps), std::to_string(nfe)};
    json j = {{"method", method}, {"steps", steps}, {"nfe", nfe}, {"coupled_error_median", err},
              {"seconds", run.seconds}};
    for (size_t i = 0; i < m.size(); ++i) {
      row.push_back(std::abs(m[i]) < 1e-2 ? sci(m[i], 2) : fixed(m[i], 3));
      j[metric_names_[i]] = m[i];
    }
    row.push_back(sci(err, 2));
    row.push_back(fixed(run.seconds, 1));
    table_->add_row(row);
    rows_.push_back(j);
    return err;
  }
  void note(const std::string& text) { notes_.push_back(text); }
  void print(std::ostream& out, std::ostream& md, const std::string& title) const {
    table_->print(out, title);
    md << "### " << title << "\n\n";
    table_->print_markdown(md);
    for (const auto& n : notes_) md << "\n" << n << "\n";
    md << "\n";
  }
  json rows() const { return rows_; }

 private:
  std::string name_;
  std::vector<std::string> metric_names_;
  std::function<std::vector<double>(const at::Tensor&)> metrics_;
  at::Tensor reference_;
  std::unique_ptr<Table> table_;
  json rows_ = json::array();
  std::vector<std::string> notes_;
};

class DistillBench : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--teacher", c_.teacher, "Unconditional Fashion-MNIST teacher")->capture_default_str();
    app.add_option("--pd", c_.pd, "Progressive-distillation students ({N} = steps)")->capture_default_str();
    app.add_option("--kd", c_.kd, "Knowledge-distillation students")->capture_default_str();
    app.add_option("--cond-teacher", c_.cond_teacher, "Class-conditional teacher (label dropout)")->capture_default_str();
    app.add_option("--guided", c_.guided, "Guidance-distilled student (guidance weight as input)")->capture_default_str();
    app.add_option("--guided-pd", c_.guided_pd, "Its progressive-distillation students")->capture_default_str();
    app.add_option("--mixture-teacher", c_.mixture_teacher, "16-D mixture teacher")->capture_default_str();
    app.add_option("--mixture-pd", c_.mixture_pd, "Its progressive-distillation students")->capture_default_str();
    app.add_option("--cm", c_.cm, "Consistency students ({M} = cd, ct, ict, ect, scd, sct, dmd; {N} = steps)")->capture_default_str();
    app.add_option("--mixture-cm", c_.mixture_cm, "16-D mixture consistency students")->capture_default_str();
    app.add_option("--mixture-kd", c_.mixture_kd, "Its knowledge-distillation students")->capture_default_str();
    app.add_option("--classifier", c_.classifier, "Classifier of FD-FMNIST")->capture_default_str();
    app.add_option("--fmnist-dir", c_.fmnist_dir, "Fashion-MNIST directory");
    app.add_option("--out", c_.out, "Output directory (table.md, distill.json, cached references)")
        ->capture_default_str();
    app.add_option("--reference-cache", c_.reference_cache, "Cache of the unconditional reference (shared with the "
                                                            "demo)")
        ->capture_default_str();
    app.add_option("--steps", c_.steps, "Student step counts")->delimiter(',')->capture_default_str();
    app.add_option("--guidance", c_.guidance, "Guidance scale s of the conditional table")->capture_default_str();
    app.add_option("--n", c_.n, "Fashion-MNIST samples per row")->check(positive())->capture_default_str();
    app.add_option("--mixture-n", c_.mixture_n, "Mixture samples per row")->check(positive())
        ->capture_default_str();
    app.add_option("--tables", c_.tables, "Which tables: fmnist, guided, mixture")->delimiter(',')
        ->capture_default_str();
    app.add_option("--seed", c_.seed,
                   "x_T of sample i uses seed + i; a student that re-noises (multistep consistency) draws its "
                   "step noise from the streams of seed + 1000003 + i (fs.sample(..., seeds=...) reproduces a row; "
                   "fewstep eval --seed uses seed + i for both)")
        ->check(unsigned_integer())
        ->capture_default_str();
    app.add_flag("--quiet", c_.quiet, "No progress bars");
  }

  int run(const GlobalOptions&) override {
    fsys::create_directories(c_.out);
    print_machine(std::cout, machine_info());
    std::ofstream md((fsys::path(c_.out) / "table.md").string());
    json doc = {{"machine", to_json(machine_info())}, {"n", c_.n}, {"seed", c_.seed}};
    auto wants = [&](const std::string& t) { return std::find(c_.tables.begin(), c_.tables.end(), t) != c_.tables.end(); };
    if (wants("fmnist") || wants("guided")) {
      FmnistEvaluatorOptions eo;
      eo.data_dir = c_.fmnist_dir;
      eo.cache_dir = c_.out;
      evaluator_ = std::make_unique<FmnistEvaluator>(c_.classifier, eo);
    }
    if (wants("fmnist")) doc["fmnist"] = fmnist_table(md);
    if (wants("guided")) doc["guided"] = guided_table(md);
    if (wants("mixture")) doc["mixture"] = mixture_table(md);
    write_json((fsys::path(c_.out) / "distill.json").string(), doc);
    std::cout << "wrote " << c_.out << "/table.md, distill.json\n";
    return 0;
  }

 private:
  Run solve(const Denoiser& model, const at::Tensor& x_T, const std::string& name, int64_t steps, const std::string& label) {
    return run_batched(x_T, c_.batch, label, !c_.quiet, [&](const at::Tensor& chunk) {
      return sample(model, chunk, name, steps, Spacing::LogSNR);
    });
  }
  // A student on its own grid with its own solver (the request's model-file defaults).
  Run solve_student(const ModelFile& m, const at::Tensor& x_T, const std::string& label) {
    // Per-sample step-noise seeds (consistency sampling re-noises), batch-independent. The offset predates
    // the library's separate step-noise stream per seed; it stays so that the published tables reproduce.
    int64_t offset = 0;
    return run_batched(x_T, c_.batch, label, !c_.quiet, [&](const at::Tensor& chunk) {
      SampleRequest request;
      request.model = borrowed(m.denoiser);
      request.x_T = chunk;
      request.model_defaults = {m.solver, m.timesteps, {}, m.sample_shape};
      for (int64_t i = 0; i < chunk.size(0); ++i) request.options.seeds.push_back(c_.seed + 1000003 + offset + i);
      offset += chunk.size(0);
      return sample(request);
    });
  }

  // A student's row with its own solver, named when it is not the method's own (a progressive student
  // sampled by the solver `fewstep distill progressive --student-solver auto` measured for it), with its
  // DDIM row beside it then: what the trained steps alone give.
  void student_rows(Section& s, const std::string& label, ModelFile m, const at::Tensor& x_T, int64_t n) {
    if (m.solver.empty() || m.solver == "ddim" || m.solver == "consistency") {
      s.add(label, n, n, solve_student(m, x_T, label));
      return;
    }
    s.add(label + ", " + m.solver, n, n, solve_student(m, x_T, label));
    m.solver = "ddim";
    s.add(label + ", ddim", n, n, solve_student(m, x_T, label + " (ddim)"));
  }

  // Teacher rows at `steps` NFE-matched steps: DDIM and the best training-free solver (least coupled error).
  void teacher_rows(Section& s, const Denoiser& teacher, const at::Tensor& x_T, int64_t steps, int64_t calls_per_nfe,
                    const std::string& who) {
    s.add(who + " ddim", steps, steps * calls_per_nfe, solve(teacher, x_T, "ddim", steps, "ddim"));
    double best = std::numeric_limits<double>::infinity();
    std::string best_name;
    Run best_run;
    for (const auto& name : c_.training_free) {
      const int64_t k = steps_for_nfe(*solver(name), steps);
      if (k <= 0) continue;
      Run r = solve(teacher, x_T, name, k, name);
      const double err = coupled_error(r.x, reference_).median;
      if (err < best) best = err, best_name = name, best_run = r;
    }
    if (!best_name.empty()) s.add(who + " " + best_name + " (best training-free)", steps, steps * calls_per_nfe, best_run);
  }

  std::vector<double> fmnist_metrics(const at::Tensor& x) {
    const FmnistReport r = evaluator_->evaluate(x);
    return {r.fd, r.class_kl, frechet_distance(gaussian_stats(evaluator_->features(x)), reference_stats_)};
  }
  // The table's reference samples, and the feature statistics that "FD to ref" compares with.
  void set_image_reference(at::Tensor reference) {
    reference_ = std::move(reference);
    reference_stats_ = gaussian_stats(evaluator_->features(reference_));
  }

  json fmnist_table(std::ostream& md) {
    const ModelFile teacher = load_model_file(c_.teacher);
    const at::Tensor x_T = seeded_noise(teacher.sample_shape, c_.n, c_.seed);
    std::ostringstream key;  // the demo's key format: its cached reference is reused
    key << "model=" << fsys::absolute(teacher.path).string() << " size=" << fsys::file_size(teacher.path)
        << " mtime=" << fsys::last_write_time(teacher.path).time_since_epoch().count()
        << " solver=dpmpp_2m steps=100 spacing=logsnr n=" << c_.n << " seed=" << c_.seed;
    double ref_seconds = 0;
    fsys::create_directories(fsys::path(c_.reference_cache).parent_path());
    set_image_reference(cached_run(c_.reference_cache, key.str(),
                                   [&] { return solve(teacher.denoiser, x_T, "dpmpp_2m", 100, "reference"); },
                                   &ref_seconds));
    Section s("fmnist", {"FD-FMNIST", "class KL", "FD to ref"}, [this](const at::Tensor& x) { return fmnist_metrics(x); },
              reference_);
    Run ref{reference_, 100, 100, ref_seconds};
    s.add("teacher dpmpp_2m (reference)", 100, 100, ref);
    for (int64_t n : c_.steps) {
      teacher_rows(s, teacher.denoiser, x_T, n, 1, "teacher");
      for (const auto& [label, pattern] : student_patterns(c_.pd, c_.kd, c_.cm)) {
        const std::string path = with_steps(pattern, n);
        if (!fsys::exists(path)) continue;
        student_rows(s, label, load_model_file(path), x_T, n);
      }
    }
    s.note("FD floor (" + std::to_string(c_.n) + " train images vs test): " +
           fixed(evaluator_->evaluate(reference_).fd_floor, 2) +
           ". FD to ref: the samples' classifier features against the reference's, from the same x_T (0 for a "
           "perfect imitation of the teacher; FD-FMNIST also counts the teacher's own distance to the data).");
    std::ostringstream title;
    title << "Fashion-MNIST, unconditional teacher " << fsys::path(c_.teacher).filename().string() << ", " << c_.n
          << " samples, " << at::get_num_threads() << " threads";
    s.print(std::cout, md, title.str());
    return s.rows();
  }

  json guided_table(std::ostream& md) {
    ModelConditioning cfg;
    cfg.guidance = c_.guidance;
    // Every batch carries labels 0, 1, ..., 9, 0, ...: sample i has label i mod 10 when the batch is a multiple of 10.
    FEWSTEP_CHECK_VALUE(c_.batch % 10 == 0, "--batch must be a multiple of 10 for the guided table");
    cfg.labels = at::arange(c_.batch, at::kLong).remainder(10);
    const ModelFile teacher = load_model_file(c_.cond_teacher, cfg);
    const at::Tensor x_T = seeded_noise(teacher.sample_shape, c_.n, c_.seed);
    double ref_seconds = 0;
    const std::string key = file_key(c_.cond_teacher) + " cfg s=" + std::to_string(c_.guidance) +
                            " dpmpp_2m 100 n=" + std::to_string(c_.n) + " seed=" + std::to_string(c_.seed);
    set_image_reference(cached_run((fsys::path(c_.out) / "reference_guided.pt").string(), key,
                                   [&] { return solve(teacher.denoiser, x_T, "dpmpp_2m", 100, "guided reference"); },
                                   &ref_seconds));
    Section s("guided", {"FD-FMNIST", "class KL", "FD to ref"}, [this](const at::Tensor& x) { return fmnist_metrics(x); },
              reference_);
    s.add("teacher + CFG dpmpp_2m (reference)", 100, 200, Run{reference_, 100, 100, ref_seconds});
    std::optional<ModelFile> guided;
    if (fsys::exists(c_.guided)) guided.emplace(load_model_file(c_.guided, cfg));
    for (int64_t n : c_.steps) {
      teacher_rows(s, teacher.denoiser, x_T, n, 2, "teacher + CFG");
      if (guided) {
        const auto k = steps_for_nfe(*solver("unipc"), n);
        if (k > 0) s.add("guidance-distilled unipc", k, n, solve(guided->denoiser, x_T, "unipc", k, "guided"));
      }
      const std::string path = with_steps(c_.guided_pd, n);
      if (!fsys::exists(path)) continue;
      student_rows(s, "guided progressive student", load_model_file(path, cfg), x_T, n);
    }
    s.note("Labels cycle 0..9 over the samples; guidance scale s = " + fixed(c_.guidance, 1) +
           " (s = 1 is the conditional model). NFE counts network calls per sample: CFG makes two per evaluation.");
    std::ostringstream title;
    title << "Fashion-MNIST, class-conditional, guidance s = " << fixed(c_.guidance, 1) << ", " << c_.n << " samples";
    s.print(std::cout, md, title.str());
    return s.rows();
  }

  json mixture_table(std::ostream& md) {
    const ModelFile teacher = load_model_file(c_.mixture_teacher);
    const json side = json::parse(teacher.sidecar_json);
    const json& d = side.at("data");
    auto gmm = GaussianMixture::random(d.at("dim").get<int64_t>(), d.at("components").get<int64_t>(),
                                       d.at("gmm_seed").get<uint64_t>());
    const at::Tensor x_T = seeded_noise(teacher.sample_shape, c_.mixture_n, c_.seed);
    double ref_seconds = 0;
    reference_ = cached_run((fsys::path(c_.out) / "reference_mixture.pt").string(),
                            file_key(c_.mixture_teacher) + " dpmpp_2m 200 n=" + std::to_string(c_.mixture_n) +
                                " seed=" + std::to_string(c_.seed),
                            [&] { return solve(teacher.denoiser, x_T, "dpmpp_2m", 200, "mixture reference"); },
                            &ref_seconds);
    auto loglik = [gmm](const at::Tensor& x) {
      return std::vector<double>{gmm->log_prob(x.to(at::kDouble), 1.0, 0.0).mean().item<double>()};
    };
    Section s("mixture", {"exact log-lik"}, loglik, reference_);
    s.add("teacher dpmpp_2m (reference)", 200, 200, Run{reference_, 200, 200, ref_seconds});
    const at::Tensor data = gmm->sample(c_.mixture_n, at::detail::createCPUGenerator(c_.seed + 99));
    s.note("Exact log-likelihood of true mixture samples: " + fixed(gmm->log_prob(data, 1.0, 0.0).mean().item<double>(), 3) +
           ". The coupled error is against the teacher's own 200-step solve (the students imitate the teacher, "
           "not the exact model).");
    for (int64_t n : c_.steps) {
      teacher_rows(s, teacher.denoiser, x_T, n, 1, "teacher");
      for (const auto& [label, pattern] : student_patterns(c_.mixture_pd, c_.mixture_kd, c_.mixture_cm)) {
        const std::string path = with_steps(pattern, n);
        if (!fsys::exists(path)) continue;
        student_rows(s, label, load_model_file(path), x_T, n);
      }
    }
    std::ostringstream title;
    title << "16-D Gaussian mixture, teacher " << fsys::path(c_.mixture_teacher).filename().string() << ", "
          << c_.mixture_n << " samples";
    s.print(std::cout, md, title.str());
    return s.rows();
  }

  Config c_;
  std::unique_ptr<FmnistEvaluator> evaluator_;
  at::Tensor reference_;
  GaussianStats reference_stats_;  // of the image tables' reference features
};

const bool registered = register_command(
    {"distill", "Distilled students beside their teacher (DDIM, best training-free solver) at equal network calls",
     [] { return std::make_unique<DistillBench>(); }});

}  // namespace
}  // namespace fewstep::bench
