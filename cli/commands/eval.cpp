// `fewstep eval`: samples a TorchScript denoiser with one solver setting and measures it: coupled error
// against a fine reference solve from the same x_T (any model), and FD-FMNIST with its train-vs-test
// floor, class-histogram KL and mean classifier confidence (Fashion-MNIST image models). The
// reference is one cached teacher solve of the model (sample/teacher_cache.h), keyed by the model's
// content and every setting, so repeated evals reuse it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>

#include "../command.h"
#include "../model_card.h"
#include "../model_loader.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/core/cache_dir.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/version.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kClassifierName = "fmnist-classifier.pt";

struct Config {
  ModelFlags model;
  SamplerFlags sampler;
  int64_t n = 1000, batch = 500;
  uint64_t seed = 0;
  std::string reference_solver = "dpmpp_2m", reference_spacing = "logsnr", reference_file, cache_dir;
  int64_t reference_steps = 1000;
  bool no_reference = false, no_cache = false, no_fd = false, quiet = false;
  std::string classifier, fmnist_dir, json_out;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A reference tensor from a file: a fewstep reference (dict with "x"), a dict {"x": tensor} or a
// bare tensor saved with torch.save. Returns the tensor and the dict's "key" ("" if none).
std::pair<at::Tensor, std::string> read_reference(const std::string& path, const std::string& flag) {
  // A teacher-solve file of fewstep's cache: verified, its last kept point.
  try {
    const TeacherSolve solve = load_teacher_solve(path);
    return {solve.x_end(), solve.key};
  } catch (const c10::Error&) {
    // not one: a plain tensor file, read below
  }
  std::string text;
  try {
    text = read_file(path, flag);  // names the path when it is missing or a directory
  } catch (const c10::Error& e) {
    throw UsageError(e.what_without_backtrace());
  }
  const std::vector<char> bytes(text.begin(), text.end());
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw UsageError(flag + " '" + path + "' is not a tensor file written by torch.save or fewstep eval");
  }
  if (value.isTensor()) return {value.toTensor(), ""};
  if (value.isGenericDict()) {
    at::Tensor x;
    std::string key;
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString()) continue;
      if (entry.key().toStringRef() == "x" && entry.value().isTensor()) x = entry.value().toTensor();
      if (entry.key().toStringRef() == "key" && entry.value().isString()) key = entry.value().toStringRef();
    }
    if (x.defined()) return {x, key};
  }
  throw UsageError(flag + " '" + path + "' holds a " + value.tagKind() + ", expected a tensor or a dict with \"x\"");
}

std::string fmt(double v, const char* spec = "%.4g") {
  if (std::isnan(v)) return "n/a";
  char buf[48];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

class EvalCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    add_model_flags(app, c.model);
    add_sampler_flags(app, c.sampler);
    app.add_option("--n", c.n, "Number of samples (FD is biased by n: compare values at equal n only)")
        ->check(at_least(2))
        ->check(count_at_most(kMaxSamples))
        ->capture_default_str();
    app.add_option("--seed", c.seed, "Sample i starts from noise seeded with seed + i (as 'fewstep sample')")
        ->capture_default_str();
    app.add_option("--batch", c.batch, "Samples per model call batch (results do not depend on it on fixed grids)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--reference-solver", c.reference_solver, "Deterministic solver of the reference sample")
        ->capture_default_str();
    app.add_option("--reference-steps", c.reference_steps, "Steps of the reference solve")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--reference-spacing", c.reference_spacing, "Time grid of the reference solve")
        ->check(CLI::IsMember({"logsnr", "time", "quadratic", "karras", "leading", "trailing"}))
        ->capture_default_str();
    app.add_option("--reference", c.reference_file, "Use this reference sample instead of solving one: a file "
                                                    "written by fewstep eval (see its cache) or torch.save(tensor "
                                                    "[n, ...]) from the same x_T");
    app.add_flag("--no-reference", c.no_reference, "Skip the reference solve and the coupled error");
    app.add_option("--cache-dir", c.cache_dir, "Cache root: reference solves (<dir>/teacher-solves/) and the classifier's "
                                               "test-set and floor statistics (<dir>/fmnist/) are cached (default "
                                               "$FEWSTEP_CACHE_DIR, $XDG_CACHE_HOME/fewstep or ~/.cache/fewstep)");
    app.add_flag("--no-cache", c.no_cache, "Neither read nor write the caches");
    app.add_option("--classifier", c.classifier, "Fashion-MNIST classifier for FD-FMNIST (default: $FEWSTEP_CLASSIFIER, "
                                                 "models/fmnist-classifier.pt, or fmnist-classifier.pt beside the "
                                                 "model or in its parent directory)");
    app.add_flag("--no-fd", c.no_fd, "Skip FD-FMNIST and the class KL (coupled error only)");
    app.add_option("--fmnist-dir", c.fmnist_dir, "Directory of the Fashion-MNIST IDX .gz files (default "
                                                 "$FEWSTEP_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)");
    app.add_option("--json", c.json_out, "Also write every number to this JSON file");
    app.add_flag("--quiet", c.quiet, "No progress bars or cache messages (the results are still printed)");
  }

  int run(const GlobalOptions&) override {
    Config& c = config_;
    if (!fsys::exists(c.model.model)) throw UsageError("--model '" + c.model.model + "' does not exist");
    if (!c.sampler.solver.empty()) make_stepper(c.sampler.solver, {});  // a bad --solver fails before loading
    if (!c.json_out.empty()) {
      const std::string dir = fsys::path(c.json_out).parent_path().string();
      if (!dir.empty() && !fsys::is_directory(dir))
        throw UsageError("--json '" + c.json_out + "': directory '" + dir + "' does not exist");
    }
    const bool want_reference = !c.no_reference;
    if (want_reference && c.reference_file.empty()) {
      if (make_stepper(c.reference_solver, {}, "--reference-solver")->traits().stochastic)
        throw UsageError("--reference-solver '" + c.reference_solver + "' is stochastic; the reference must be a "
                         "deterministic solve (e.g. dpmpp_2m, ddim, heun)");
    }
    if (!c.reference_file.empty() && !fsys::exists(c.reference_file))
      throw UsageError("--reference '" + c.reference_file + "' does not exist");
    const LoadedModel model = load_model(c.model);
    const bool images = model.shape == std::vector<int64_t>{1, 28, 28};
    const bool want_fd = images && !c.no_fd;
    if (!want_reference && !want_fd)
      throw UsageError(images ? "--no-reference with --no-fd leaves nothing to measure"
                              : "--no-reference leaves nothing to measure: FD-FMNIST needs [1, 28, 28] samples");

    // The classifier and test set first: a bad --classifier fails before minutes of sampling.
    std::unique_ptr<FmnistEvaluator> evaluator;
    std::string classifier;
    if (want_fd) {
      classifier = resolve_classifier();
      FmnistEvaluatorOptions eo;
      eo.data_dir = c.fmnist_dir;
      if (!c.no_cache) eo.cache_dir = (fsys::path(cache_root()) / "fmnist").string();
      try {
        evaluator = std::make_unique<FmnistEvaluator>(classifier, eo);
      } catch (const c10::Error& e) {
        throw UsageError((c.classifier.empty() ? "classifier '" + classifier + "'" : "--classifier") + ": " +
                         e.what_without_backtrace());
      }
    }

    const std::vector<uint64_t> seeds = sample_seeds(c.seed, c.n);
    const ResolvedSample job = resolve_request(sampler_request(model, c.sampler, seeds));
    const at::Tensor x_T = job.x_T;
    const int64_t steps = job.adaptive() ? 0 : static_cast<int64_t>(job.grid.size()) - 1;
    const std::string label = job.solver + (job.adaptive() ? " adaptive" : " " + std::to_string(steps));
    // The grid as the JSON names it: the model file's tuned or own grid, else the spacing asked for.
    const std::string spacing = job.tuned_grid ? "tuned" : job.own_grid ? "own" : c.sampler.spacing;
    const auto t0 = Clock::now();
    int64_t nfe = 0;
    const at::Tensor samples = sample_all(job, label, &nfe);
    const double sample_seconds = seconds_since(t0);

    // Reference from the same x_T.
    json ref_json = nullptr;
    at::Tensor reference;
    if (want_reference) reference = get_reference(model, x_T, seeds, &ref_json);

    json out = {{"model", model.identity()},
                {"solver", job.solver},
                {"options", c.sampler.options},
                {"steps", job.adaptive() ? json(nullptr) : json(steps)},
                {"spacing", spacing},
                {"rtol", job.adaptive() && c.sampler.rtol ? json(*c.sampler.rtol) : json(nullptr)},
                {"atol", job.adaptive() && c.sampler.atol ? json(*c.sampler.atol) : json(nullptr)},
                {"denoise_to_zero", c.sampler.denoise_to_zero},
                {"n", c.n},
                {"seed", c.seed},
                {"nfe", nfe},
                {"seconds", sample_seconds},
                {"reference", ref_json},
                {"coupled_error", nullptr},
                {"fd_fmnist", nullptr},
                {"threads", at::get_num_threads()},
                {"fewstep_version", fewstep::version()},
                {"torch_version", fewstep::torch_version()}};
    std::ostringstream o;
    o << "model          " << model.path << " (" << model.schedule->repr() << ", " << model.prediction
      << " prediction)\n";
    const std::string grid_name = job.tuned_grid || job.own_grid ? "the model file's " + spacing + " grid" : spacing;
    o << "sampler        " << label << (job.adaptive() ? "" : (steps == 1 ? " step (" : " steps (") + grid_name + ")")
      << ", NFE " << nfe
      << ", n " << c.n << ", seed " << c.seed << ": " << format_duration(sample_seconds) << " ("
      << fmt(1000.0 * sample_seconds / static_cast<double>(c.n), "%.3g") << " ms/sample)\n";
    if (job.stepper->traits().stochastic)
      o << "note           " << job.solver << " is stochastic: its coupled error includes its own noise\n";
    if (reference.defined()) {
      const CoupledError e = coupled_error(samples, reference);
      out["coupled_error"] = {{"median", e.median}, {"mean", e.mean}, {"rmse", e.rmse}, {"max", e.max}};
      o << "reference      " << ref_json.value("description", std::string()) << "\n";
      o << "coupled error  median " << fmt(e.median) << "  mean " << fmt(e.mean) << "  rmse " << fmt(e.rmse)
        << "  max " << fmt(e.max) << "   (per-sample RMS over coordinates vs the reference)\n";
    }
    if (evaluator) {
      const FmnistReport r = evaluator->evaluate(samples.to(at::kFloat));
      std::vector<double> counts(r.class_counts.data_ptr<double>(), r.class_counts.data_ptr<double>() + 10);
      out["fd_fmnist"] = {{"fd", r.fd},
                          {"fd_floor", r.fd_floor},
                          {"class_kl", r.class_kl},
                          {"class_kl_floor", r.class_kl_floor},
                          {"mean_confidence", r.mean_confidence},
                          {"class_counts", counts},
                          {"classifier", classifier},
                          {"classifier_test_accuracy", evaluator->test_accuracy()},
                          {"seconds", r.seconds}};
      o << "FD-FMNIST      " << fmt(r.fd) << "   (floor: " << c.n << " train vs test images: " << fmt(r.fd_floor)
        << ")\n";
      o << "class KL       " << fmt(r.class_kl) << "   (floor " << fmt(r.class_kl_floor) << "; KL(test || samples) "
        << "of predicted classes)\n";
      o << "confidence     " << fmt(r.mean_confidence, "%.3f") << "   (mean max softmax; classifier "
        << classifier << ", test accuracy " << fmt(100.0 * evaluator->test_accuracy(), "%.2f") << " %)\n";
    } else if (!images) {
      o << "FD-FMNIST      n/a (samples of shape " << json(model.shape).dump() << " are not 28x28 images)\n";
    }
    std::cout << o.str() << std::flush;
    if (!c.json_out.empty()) {
      write_text_file(c.json_out, out.dump(2) + "\n");
      if (!c.quiet) std::cerr << "fewstep eval: wrote " << c.json_out << "\n";
    }
    return 0;
  }

 private:
  // Runs `job` over its x_T in chunks of --batch (per-sample seeds make chunking invisible on fixed grids);
  // adaptive runs sample everything at once so that their NFE is one number.
  at::Tensor sample_all(const ResolvedSample& job, const std::string& label, int64_t* nfe) const {
    const int64_t n = job.x_T.size(0);
    const int64_t batch = job.adaptive() ? n : std::min(config_.batch, n);
    const int64_t per_chunk = job.adaptive() ? 0 : static_cast<int64_t>(job.grid.size()) - 1;
    const int64_t chunks = (n + batch - 1) / batch;
    ProgressBar bar(per_chunk * chunks, label, !config_.quiet);
    std::vector<at::Tensor> parts;
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t start = k * batch, m = std::min(batch, n - start);
      ResolvedSample chunk = job;
      chunk.x_T = job.x_T.narrow(0, start, m);
      chunk.options.seeds.assign(job.options.seeds.begin() + start, job.options.seeds.begin() + start + m);
      chunk.options.callback = [&](const StepInfo& info) {
        bar.update(k * per_chunk + info.index + 1, {{"nfe", double(info.nfe)}});
      };
      const Solution sol = run_request(chunk);
      *nfe = sol.nfe;
      parts.push_back(sol.x);
    }
    bar.close();
    return at::cat(parts, 0).to(at::kCPU);  // the metrics run on the CPU
  }

  at::Tensor get_reference(const LoadedModel& model, const at::Tensor& x_T, const std::vector<uint64_t>& /*seeds*/,
                           json* info) const {
    const Config& c = config_;
    const std::vector<int64_t> want = x_T.sizes().vec();
    auto check_shape = [&](const at::Tensor& x, const std::string& what) {
      if (x.sizes().vec() != want)
        throw UsageError(what + " holds a tensor of shape " + json(x.sizes().vec()).dump() + ", expected " +
                         json(want).dump() + " (--n samples of the model's shape)");
    };
    if (!c.reference_file.empty()) {
      at::Tensor x = read_reference(c.reference_file, "--reference").first;
      check_shape(x, "--reference '" + c.reference_file + "'");
      *info = {{"file", c.reference_file}, {"description", "from --reference " + c.reference_file}};
      return x.to(x_T.scalar_type());
    }
    const std::string what = c.reference_solver + ", " + std::to_string(c.reference_steps) + " steps (" +
                             c.reference_spacing + ")";
    *info = {{"solver", c.reference_solver}, {"steps", c.reference_steps}, {"spacing", c.reference_spacing}};
    TeacherSolveSpec spec;
    spec.sample_shape = model.shape;
    spec.n = c.n;
    spec.seed = c.seed;
    spec.solver = c.reference_solver;
    spec.grid = timesteps(*model.schedule, c.reference_steps, c.reference_spacing);
    spec.dtype = x_T.scalar_type();
    spec.device = x_T.device();
    spec.batch = c.batch;
    spec.progress = !c.quiet;
    spec.label = "reference " + c.reference_solver;
    const auto t0 = Clock::now();
    const TeacherSolve solve = teacher_solve(*model.denoiser, spec, c.no_cache ? "" : cache_root());
    const double seconds = seconds_since(t0);
    const at::Tensor x = solve.x_end().contiguous();
    check_shape(x, "the reference");
    if (!solve.note.empty()) std::cerr << "fewstep eval: warning: " << solve.note << "\n";
    (*info)["nfe"] = solve.nfe;
    (*info)["cached"] = solve.from_cache;
    if (!solve.cache_file.empty()) (*info)["file"] = solve.cache_file;
    std::string where = c.no_cache ? "not cached (--no-cache)" : solve.cache_file.empty() ? "not cached" : "";
    if (solve.from_cache) {
      (*info)["description"] = what + ", read from the cache " + solve.cache_file;
      if (!c.quiet) std::cerr << "fewstep eval: reference read from " << solve.cache_file << "\n";
      return x;
    }
    (*info)["seconds"] = seconds;
    if (!solve.cache_file.empty()) {
      where = "cached in " + solve.cache_file;
      if (!c.quiet) std::cerr << "fewstep eval: reference (" << format_duration(seconds) << ") cached in "
                              << solve.cache_file << "\n";
    }
    (*info)["description"] = what + ", NFE " + std::to_string(solve.nfe) + ", " + format_duration(seconds) + ", " + where;
    return x;
  }

  std::string cache_root() const { return config_.cache_dir.empty() ? cache_directory() : config_.cache_dir; }

  std::string resolve_classifier() const {
    const Config& c = config_;
    if (!c.classifier.empty()) {
      if (!fsys::is_regular_file(c.classifier))
        throw UsageError("--classifier '" + c.classifier + "' does not exist (fewstep ships models/" +
                         kClassifierName + "; 'fewstep train-classifier' trains one)");
      return c.classifier;
    }
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("FEWSTEP_CLASSIFIER"); env && *env) candidates.push_back(env);
    const fsys::path model_dir = fsys::absolute(c.model.model).parent_path();
    candidates.push_back((fsys::path("models") / kClassifierName).string());
    candidates.push_back((model_dir / kClassifierName).string());
    candidates.push_back((model_dir.parent_path() / kClassifierName).string());
    std::string looked;
    for (const auto& p : candidates) {
      if (fsys::is_regular_file(p)) return p;
      looked += (looked.empty() ? "" : ", ") + p;
    }
    throw UsageError("no Fashion-MNIST classifier for FD-FMNIST (looked for " + looked +
                     "); pass --classifier FILE, or --no-fd for the coupled error only");
  }

  Config config_;
};

const bool registered = register_command(
    {"eval", "Measure a solver on a model: coupled error vs a 1000-step reference, FD-FMNIST, class KL",
     "Examples:\n"
     "  fewstep eval --model models/fmnist-unet-eps.pt --solver dpmpp_2m --steps 10 --n 1000 --seed 0\n"
     "  fewstep eval --model models/fmnist-unet-eps.pt --solver unipc --steps 5 --json unipc5.json\n"
     "  fewstep eval --model models/fmnist-unet-eps.pt --solver ddim --steps 20 --reference-solver ddim \\\n"
     "      --reference-steps 1000 --classifier models/fmnist-classifier.pt\n"
     "  fewstep eval --model runs/gmm2d/model.pt --solver heun --steps 8 --n 2000   (vectors: coupled error only)\n\n"
     "What is printed:\n"
     "  coupled error  per-sample RMS distance (over pixels/coordinates) between each sample and the reference\n"
     "                 sample from the same x_T (default: dpmpp_2m with 1000 steps), as median, mean, rmse, max.\n"
     "  FD-FMNIST      Frechet distance between the features of the Fashion-MNIST classifier on the samples and\n"
     "                 on the 10000 test images, beside its floor: the same distance for n training images (what\n"
     "                 real data scores at this n; FD shrinks as n grows, so compare values at equal n only).\n"
     "  class KL       KL(test || samples) of the classifier's predicted-class histograms (mode dropping).\n"
     "The reference is cached under --cache-dir keyed by the model's content (SHA-256 of its files), schedule,\n"
     "seed, n and reference settings: the next eval of the same model, seed and n (any solver) reuses it.\n"
     "See docs/metrics.md.\n",
     [] { return std::make_unique<EvalCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
