#include "fewstep/sample/teacher_cache.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <filesystem>

#include "fewstep/core/check.h"
#include "fewstep/core/noise.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

namespace {

using json = nlohmann::json;
namespace fsys = std::filesystem;

constexpr const char* kFormat = "fewstep.teacher_solve.v1";

std::vector<int64_t> with_batch(int64_t n, int64_t k, const std::vector<int64_t>& sample_shape) {
  std::vector<int64_t> shape = {n};
  if (k >= 0) shape.push_back(k);
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  return shape;
}

// The key: everything the kept tensors are a function of (not batch or progress).
json solve_key(const std::string& fingerprint, const TeacherSolveSpec& spec, int64_t keep_every) {
  json options = json::object();
  for (const auto& [k, v] : spec.solver_options.values()) options[k] = to_string(v);
  return {{"format", kFormat},
          {"teacher", fingerprint},
          {"x_T", "randn_per_sample(seed + i)"},
          {"seed", spec.seed},
          {"n", spec.n},
          {"sample_shape", spec.sample_shape},
          {"dtype", std::string(c10::toString(spec.dtype))},
          {"solver", spec.solver},
          {"solver_options", options},
          {"grid", spec.grid},
          {"keep_every", keep_every},
          {"keep_eps", spec.keep_eps},
          {"num_classes", spec.num_classes}};
}

// The key with what only some solves have (so that the keys of the others stay as they were): the
// device when it is not the CPU, the scale of x_T when it is not 1 (VE teachers, request.h prior_scale).
json solve_key_on(const std::string& fingerprint, const TeacherSolveSpec& spec, int64_t keep_every, double x_T_scale) {
  json key = solve_key(fingerprint, spec, keep_every);
  if (!spec.device.is_cpu()) key["device"] = spec.device.str();
  if (x_T_scale != 1.0) key["x_T_scale"] = x_T_scale;
  return key;
}

std::vector<uint64_t> seeds_of(const TeacherSolveSpec& spec) {
  std::vector<uint64_t> seeds(static_cast<size_t>(spec.n));
  for (int64_t i = 0; i < spec.n; ++i) seeds[static_cast<size_t>(i)] = spec.seed + static_cast<uint64_t>(i);
  return seeds;
}

// The tensors of a teacher-solve archive (format checked, key not compared).
TeacherSolve from_archive(const TensorArchive& c, const std::string& file) {
  FEWSTEP_CHECK_VALUE(c.contains("format") && c.string("format") == kFormat, "'", file,
                      "' is not a teacher-solve file (format ", kFormat, ")");
  TeacherSolve out;
  out.key = c.string("key");
  out.x = c.tensor("x");
  if (c.contains("eps")) out.eps = c.tensor("eps");
  if (c.contains("labels")) out.labels = c.tensor("labels");
  out.nfe = c.integer("nfe");
  const at::Tensor times = c.tensor("times").to(at::kDouble).contiguous();
  out.times.assign(times.data_ptr<double>(), times.data_ptr<double>() + times.numel());
  FEWSTEP_CHECK_VALUE(out.x.dim() >= 3 && static_cast<int64_t>(out.times.size()) == out.x.size(1), "'", file,
                      "' is a damaged teacher-solve file (x and times disagree)");
  out.cache_file = file;
  return out;
}

// The cached solve in `file` if it is the one `key` describes; otherwise nullopt and why.
std::optional<TeacherSolve> read_cached(const std::string& file, const std::string& key, const TeacherSolveSpec& spec,
                                        int64_t kept, const at::Tensor& x_T, std::string* note) {
  std::error_code ec;
  if (!fsys::exists(file, ec)) return std::nullopt;
  try {
    const TensorArchive c = TensorArchive::load(file);
    if (!c.contains("format") || c.string("format") != kFormat || !c.contains("key") || c.string("key") != key) {
      *note = "cache file '" + file + "' holds another solve (key mismatch); recomputed";
      return std::nullopt;
    }
    TeacherSolve out = from_archive(c, file);
    bool ok = out.x.sizes() == c10::IntArrayRef(with_batch(spec.n, kept + 1, spec.sample_shape)) &&
              out.x.scalar_type() == spec.dtype;
    if (ok && spec.keep_eps)
      ok = out.eps.defined() && out.eps.sizes() == c10::IntArrayRef(with_batch(spec.n, kept, spec.sample_shape));
    if (ok && spec.num_classes > 0) ok = out.labels.defined() && out.labels.size(0) == spec.n;
    // The stored x_T must be this library's draw for these seeds, bit for bit.
    ok = ok && at::equal(out.x.select(1, 0), x_T);
    if (!ok) {
      *note = "cache file '" + file + "' does not match its key (shapes or x_T differ); recomputed";
      return std::nullopt;
    }
    return out;
  } catch (const c10::Error& e) {
    *note = "cache file '" + file + "' is unreadable (" + e.what_without_backtrace() + "); recomputed";
    return std::nullopt;
  }
}

}  // namespace

void TeacherSolveSpec::validate() const {
  FEWSTEP_CHECK_VALUE(!sample_shape.empty(), "TeacherSolveSpec.sample_shape must not be empty");
  for (int64_t d : sample_shape)
    FEWSTEP_CHECK_VALUE(d > 0, "TeacherSolveSpec.sample_shape entries must be positive, got ",
                        c10::IntArrayRef(sample_shape));
  FEWSTEP_CHECK_VALUE(n >= 1, "TeacherSolveSpec.n must be >= 1, got ", n);
  FEWSTEP_CHECK_VALUE(grid.size() >= 2, "TeacherSolveSpec.grid needs >= 2 times, got ", grid.size());
  const int64_t steps = static_cast<int64_t>(grid.size()) - 1;
  FEWSTEP_CHECK_VALUE(keep_every >= 0 && (keep_every == 0 || steps % keep_every == 0),
                      "TeacherSolveSpec.keep_every must be 0 or divide the grid's ", steps, " steps, got ", keep_every);
  FEWSTEP_CHECK_VALUE(num_classes >= 0, "TeacherSolveSpec.num_classes must be >= 0, got ", num_classes);
  FEWSTEP_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble,
                      "TeacherSolveSpec.dtype must be float32 or float64, got ", dtype);
  FEWSTEP_CHECK_VALUE(batch >= 1, "TeacherSolveSpec.batch must be >= 1, got ", batch);
}

at::Tensor TeacherSolve::x_T() const { return x.select(1, 0); }
at::Tensor TeacherSolve::x_end() const { return x.select(1, x.size(1) - 1); }

std::string teacher_cache_dir(const std::string& cache_root) {
  return (fsys::path(cache_root) / "teacher-solves").string();
}

TeacherSolve teacher_solve(const Denoiser& teacher, const TeacherSolveSpec& spec, const std::string& cache_root,
                           const ConditionedTeacher& conditioned) {
  spec.validate();
  validate_grid(teacher.schedule_ref(), spec.grid);
  const auto stepper = solver(spec.solver, spec.solver_options);
  const StepperTraits& traits = stepper->traits();
  FEWSTEP_CHECK_VALUE(!traits.stochastic, "teacher_solve: solver '", spec.solver,
                      "' is stochastic; a teacher solve is a function of x_T (use e.g. unipc, deis, dpmpp_2m, heun)");
  FEWSTEP_CHECK_VALUE(!spec.keep_eps || traits.nfe_per_step == 1, "teacher_solve: keep_eps needs a solver with one "
                      "evaluation per step (e.g. deis), got '", spec.solver, "' with ", traits.nfe_per_step);
  FEWSTEP_CHECK_VALUE(spec.num_classes == 0 || static_cast<bool>(conditioned),
                      "teacher_solve: num_classes = ", spec.num_classes, " needs the `conditioned` teacher function");
  const int64_t steps = static_cast<int64_t>(spec.grid.size()) - 1;
  const int64_t k = spec.keep_every == 0 ? steps : spec.keep_every;
  const int64_t kept = steps / k;  // K: kept points after x_T

  TeacherSolve out;
  std::string file;
  const std::optional<std::string> fingerprint = teacher.fingerprint();
  // x_T is the prior at the grid's first time: randn_per_sample, times sigma(t_0) for VE teachers.
  const double x_T_scale = prior_scale(teacher.schedule_ref(), spec.grid.front());
  out.key = solve_key_on(fingerprint ? *fingerprint : "no fingerprint: " + teacher.description(), spec, k, x_T_scale)
                .dump();
  if (!cache_root.empty()) {
    FEWSTEP_CHECK_VALUE(fingerprint.has_value(), "teacher_solve: caching needs a teacher with a content fingerprint, ",
                        "and ", teacher.description(), " has none (a network given as a plain callable). Give it one "
                        "(Python: fs.Denoiser(net, ..., fingerprint=...) or an nn.Module, whose weights are hashed; "
                        "C++: Denoiser::with_fingerprint), load it from a file, or solve without a cache");
    file = (fsys::path(teacher_cache_dir(cache_root)) / (sha256_hex(out.key).substr(0, 32) + ".pt")).string();
  }
  at::Tensor x_T = randn_per_sample(spec.sample_shape, seeds_of(spec), at::TensorOptions().dtype(spec.dtype));
  if (x_T_scale != 1.0) x_T = x_T * x_T_scale;
  if (!file.empty()) {
    if (auto cached = read_cached(file, out.key, spec, kept, x_T, &out.note)) {
      cached->key = out.key;
      cached->cache_file = file;
      cached->from_cache = true;
      return *cached;
    }
  }

  for (int64_t j = 0; j <= kept; ++j) out.times.push_back(spec.grid[static_cast<size_t>(j * k)]);
  out.x = at::empty(with_batch(spec.n, kept + 1, spec.sample_shape), spec.dtype);
  out.x.select(1, 0).copy_(x_T);
  if (spec.keep_eps) out.eps = at::empty(with_batch(spec.n, kept, spec.sample_shape), spec.dtype);
  if (spec.num_classes > 0) out.labels = at::arange(spec.n, at::kLong).remainder(spec.num_classes);
  const NoiseSchedule& schedule = teacher.schedule_ref();
  ProgressBar bar(spec.n, spec.label, spec.progress);
  for (int64_t start = 0; start < spec.n; start += spec.batch) {
    const int64_t b = std::min(spec.batch, spec.n - start);
    at::Tensor xb = out.x.narrow(0, start, b);
    at::Tensor eb = spec.keep_eps ? out.eps.narrow(0, start, b) : at::Tensor();
    SampleOptions so;
    so.callback = [&](const StepInfo& info) {
      // Step i runs t_i → t_{i+1} and evaluates the model once at t_i (keep_eps): at a kept point
      // j = i/k its x̂_0 gives ε̂_j = (x_j − α x̂_0)/σ; the step landing on point (i+1)/k stores x.
      if (spec.keep_eps && info.index % k == 0) {
        const int64_t j = info.index / k;
        eb.select(1, j).copy_((xb.select(1, j) - schedule.alpha(info.t) * info.x0.to(at::kCPU)) / schedule.sigma(info.t));
      }
      if ((info.index + 1) % k == 0) xb.select(1, (info.index + 1) / k).copy_(info.x);
    };
    const Denoiser model = spec.num_classes > 0 ? conditioned(out.labels.narrow(0, start, b)) : teacher;
    const Solution sol = sample(model, xb.select(1, 0).to(spec.device, /*non_blocking=*/false, /*copy=*/true), *stepper,
                                spec.grid, so);
    xb.select(1, kept).copy_(sol.x);
    out.nfe = sol.nfe;
    bar.update(start + b);
  }
  bar.close();

  if (!file.empty()) {
    TensorArchive c;
    c.set_string("format", kFormat);
    c.set_string("key", out.key);
    c.set_tensor("x", out.x);
    if (out.eps.defined()) c.set_tensor("eps", out.eps);
    if (out.labels.defined()) c.set_tensor("labels", out.labels);
    c.set_tensor("times", at::tensor(out.times, at::TensorOptions().dtype(at::kDouble)));
    c.set_int("nfe", out.nfe);
    try {
      std::error_code ec;
      fsys::create_directories(fsys::path(file).parent_path(), ec);
      c.save(file);
      out.cache_file = file;
    } catch (const c10::Error& e) {
      out.note += std::string(out.note.empty() ? "" : "; ") + "cannot write the cache file '" + file +
                  "': " + e.what_without_backtrace();
    }
  }
  return out;
}

TeacherSolve load_teacher_solve(const std::string& file) {
  TeacherSolve out = from_archive(TensorArchive::load(file), file);
  out.from_cache = true;
  return out;
}

RolloutPairs rollout_pairs(const TeacherSolve& solve) {
  return {solve.x_T().contiguous(), solve.x_end().contiguous(), solve.labels, solve.key, solve.from_cache};
}

}  // namespace fewstep
