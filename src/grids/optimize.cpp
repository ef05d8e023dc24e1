// grids/optimize.h: fitting a time grid by dynamic programming (GITS) or by gradient descent (LD3).
#include "fewstep/grids/optimize.h"

#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "fewstep/core/check.h"
#include "fewstep/core/noise.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/sample/sample.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/version.h"

namespace fewstep {

namespace {

using json = nlohmann::json;

/// The fixed spacings the fitted grid is compared with (schedules/timesteps.h).
const std::vector<Spacing>& fixed_spacings() {
  static const std::vector<Spacing> s = {Spacing::LogSNR, Spacing::Time, Spacing::Quadratic, Spacing::Karras};
  return s;
}

/// Per-sample RMS over coordinates, float64 [n].
at::Tensor rms(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).flatten(1).pow(2).mean(1).sqrt();
}

double median_of(const at::Tensor& v) { return at::quantile(v.to(at::kDouble), 0.5).item<double>(); }

/// The reference solves of `n` samples from seeds first, first + 1, ...: the library's teacher solve
/// on the fine log-SNR grid, keeping x at every candidate time (dense) or only the ends.
TeacherSolve reference(const Denoiser& model, const GridFitSettings& s, uint64_t first, int64_t n, bool dense,
                       const std::string& label) {
  TeacherSolveSpec spec;
  spec.sample_shape = s.sample_shape;
  spec.n = n;
  spec.seed = first;
  spec.solver = s.reference_solver;
  spec.grid = timesteps(model.schedule_ref(), s.candidates * s.substeps, Spacing::LogSNR);
  spec.keep_every = dense ? s.substeps : 0;
  spec.dtype = s.dtype;
  spec.batch = s.batch;
  spec.progress = s.progress;
  spec.label = label;
  return teacher_solve(model, spec, s.cache_root);
}

/// GITS: local costs of jumps between candidate times from the teacher's states, and the least-cost
/// path of `steps` jumps. A jump i → j is one step of the solver from x_i; with `history` (multistep
/// solvers), a jump i → j that follows h → i carries the evaluation at the teacher's (x_h, t_h) as the
/// solver's history, and the path's state is its last jump (h, i). The last jump (into t_M) is
/// taken as the run's last step (ctx.is_last(): lower_order_final applies).
std::vector<double> dp_grid(const Denoiser& model, const Stepper& stepper, const TeacherSolve& train, int64_t steps,
                            bool history, const GridFitSettings& settings) {
  c10::InferenceMode guard;
  const std::vector<double>& T = train.times;
  const int64_t M = static_cast<int64_t>(T.size()) - 1;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const bool progress = settings.progress;

  // How much an error made at t_j still weighs at t_min: g_j = median over probe samples of
  // |Φ_j(x_j + δ) − Φ_j(x_j)| / |δ|, Φ_j the reference solver on the candidate times from t_j, δ a small
  // per-sample-seeded Gaussian direction (linearised propagation; 1 without `propagate`).
  std::vector<double> gain(static_cast<size_t>(M + 1), 1.0);
  if (settings.dp_propagate) {
    const int64_t P = std::min<int64_t>(train.x.size(0), 16);
    std::vector<uint64_t> seeds;
    for (int64_t k = 0; k < P; ++k) seeds.push_back(settings.seed + 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(k));
    const at::Tensor direction = randn_per_sample(settings.sample_shape, seeds, train.x.options());
    const double rel = settings.dtype == at::kDouble ? 1e-5 : 1e-2;
    const auto ref = solver(settings.reference_solver);
    ProgressBar bar(M, "grid error propagation", progress);
    for (int64_t j = 0; j < M; ++j) {
      const at::Tensor x_j = train.x.select(1, j).narrow(0, 0, P);
      const at::Tensor scale = x_j.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12);
      std::vector<int64_t> shape(static_cast<size_t>(x_j.dim()), 1);
      shape[0] = P;
      const at::Tensor delta = direction * (rel * scale).view(shape);
      const std::vector<double> sub(T.begin() + j, T.end());
      const Solution sol = sample(model, at::cat({x_j, x_j + delta}), *ref, sub);
      const at::Tensor ratio = rms(sol.x.narrow(0, P, P), sol.x.narrow(0, 0, P)) / rms(delta, at::zeros_like(delta));
      gain[static_cast<size_t>(j)] = median_of(ratio);
      bar.update(j + 1);
    }
    bar.close();
  }

  // The evaluation at every teacher state, made once: every jump from t_i starts with it.
  std::vector<DenoiserOutput> evals;
  for (int64_t i = 0; i < M; ++i) evals.push_back(model(train.x.select(1, i), T[static_cast<size_t>(i)]));
  struct Anchor {
    at::Tensor x;
    double t = 0.0;
    DenoiserOutput out;
  };
  auto anchor = std::make_shared<Anchor>();
  const Denoiser cached = Denoiser::direct(
      [&model, anchor](const at::Tensor& x, double t) {
        if (t == anchor->t && x.is_same(anchor->x)) return anchor->out;
        return model(x, t);
      },
      model.schedule(), model.description());

  // cost(h, i, j) for h < i < j (h = −1: no history, the path's first jump or a one-step cost).
  const int64_t H = history ? M + 1 : 1;  // history slots: h + 1
  std::vector<double> cost(static_cast<size_t>(H * (M + 1) * (M + 1)), kInf);
  auto at_cost = [&](int64_t h, int64_t i, int64_t j) -> double& {
    return cost[static_cast<size_t>(((history ? h + 1 : 0) * (M + 1) + i) * (M + 1) + j)];
  };
  ProgressBar bar(M, "grid costs", progress);
  for (int64_t i = 0; i < M; ++i) {
    const at::Tensor x_i = train.x.select(1, i);
    anchor->x = x_i;
    anchor->t = T[static_cast<size_t>(i)];
    anchor->out = evals[static_cast<size_t>(i)];
    // Without history every jump is costed from a fresh state; with it, only jumps from t_0 are.
    const int64_t h_first = history && i > 0 ? 0 : -1;
    const int64_t h_last = history && i > 0 ? i - 1 : -1;
    for (int64_t h = h_first; h <= h_last; ++h) {
      std::vector<at::Tensor> row;
      for (int64_t j = i + 1; j <= M; ++j) {
        SolverState state = stepper.init(x_i);
        StepContext ctx;
        if (h >= 0) {
          const DenoiserOutput& e = evals[static_cast<size_t>(h)];
          state.history.push_back(HistoryEntry{T[static_cast<size_t>(h)], e.x0, e.eps});
          ctx.index = 1;
        }
        if (j == M) {  // the run's last step
          ctx.num_steps = steps;
          ctx.index = steps - 1;
        }
        ModelEvaluator evaluator(cached);
        const StepResult r = stepper.step(evaluator, x_i, T[static_cast<size_t>(i)], T[static_cast<size_t>(j)],
                                          std::move(state), ctx);
        row.push_back((rms(r.x, train.x.select(1, j)) * gain[static_cast<size_t>(j)]).pow(2).mean());
      }
      const at::Tensor costs = at::stack(row).contiguous();
      const double* c = costs.data_ptr<double>();
      for (int64_t j = i + 1; j <= M; ++j) {
        const double v = c[j - i - 1];
        at_cost(h, i, j) = std::isfinite(v) ? v : kInf;
      }
    }
    bar.update(i + 1);
  }
  bar.close();

  std::vector<int64_t> path;
  if (history) {
    // F[k][(p, j)]: least cost of reaching candidate j in k jumps, the last from p (p = −1 collapses the
    // previous point when the cost has no history).
    const int64_t P = M + 1;
    auto slot = [&](int64_t p, int64_t j) { return static_cast<size_t>(p * (M + 1) + j); };
    std::vector<std::vector<double>> F(static_cast<size_t>(steps + 1), std::vector<double>(P * (M + 1), kInf));
    std::vector<std::vector<int64_t>> parent(static_cast<size_t>(steps + 1), std::vector<int64_t>(P * (M + 1), -1));
    for (int64_t j = 1; j <= M; ++j) F[1][slot(0, j)] = at_cost(-1, 0, j);
    for (int64_t k = 2; k <= steps; ++k)
      for (int64_t i = k - 1; i < M; ++i)
        for (int64_t h = k - 2; h < i; ++h) {
          const double before = F[static_cast<size_t>(k - 1)][slot(h, i)];
          if (!std::isfinite(before)) continue;
          for (int64_t j = i + 1; j <= M; ++j) {
            const double v = before + at_cost(h, i, j);
            if (v < F[static_cast<size_t>(k)][slot(i, j)]) {
              F[static_cast<size_t>(k)][slot(i, j)] = v;
              parent[static_cast<size_t>(k)][slot(i, j)] = h;
            }
          }
        }
    double best = kInf;
    int64_t bi = -1;
    for (int64_t i = 0; i < M; ++i)
      if (F[static_cast<size_t>(steps)][slot(i, M)] < best) {
        best = F[static_cast<size_t>(steps)][slot(i, M)];
        bi = i;
      }
    FEWSTEP_CHECK(std::isfinite(best), "optimize_timesteps: every path of ", steps, " steps has a non-finite cost "
                  "(the solver diverges between the candidate times)");
    path = {M, bi};
    for (int64_t k = steps, i = bi, j = M; k > 1; --k) {
      const int64_t h = parent[static_cast<size_t>(k)][slot(i, j)];
      path.push_back(h);
      j = i;
      i = h;
    }
  } else {
    std::vector<std::vector<double>> D(static_cast<size_t>(steps + 1), std::vector<double>(M + 1, kInf));
    std::vector<std::vector<int64_t>> from(static_cast<size_t>(steps + 1), std::vector<int64_t>(M + 1, -1));
    D[0][0] = 0.0;
    for (int64_t k = 1; k <= steps; ++k)
      for (int64_t j = k; j <= M; ++j)
        for (int64_t i = k - 1; i < j; ++i) {
          const double v = D[static_cast<size_t>(k - 1)][static_cast<size_t>(i)] + at_cost(-1, i, j);
          if (v < D[static_cast<size_t>(k)][static_cast<size_t>(j)]) {
            D[static_cast<size_t>(k)][static_cast<size_t>(j)] = v;
            from[static_cast<size_t>(k)][static_cast<size_t>(j)] = i;
          }
        }
    FEWSTEP_CHECK(std::isfinite(D[static_cast<size_t>(steps)][static_cast<size_t>(M)]), "optimize_timesteps: every "
                  "path of ", steps, " steps has a non-finite cost (the solver diverges between the candidate times)");
    path = {M};
    for (int64_t k = steps, j = M; k > 0; --k) {
      j = from[static_cast<size_t>(k)][static_cast<size_t>(j)];
      path.push_back(j);
    }
  }
  std::vector<double> grid;
  for (auto it = path.rbegin(); it != path.rend(); ++it) grid.push_back(T[static_cast<size_t>(*it)]);
  return grid;
}

/// LD3: Adam on softmax logits of the λ increments; ∂loss/∂λ_i by forward differences of the solve.
std::vector<double> gradient_grid(const Denoiser& model, const std::string& name, const Options& options,
                                  const TeacherSolve& train, int64_t steps, const GridFitSettings& s,
                                  const std::vector<double>& start, std::vector<double>& history) {
  const NoiseSchedule& schedule = model.schedule_ref();
  const double lam0 = schedule.lambda(schedule.t_max());
  const double span = schedule.lambda(schedule.t_min()) - lam0;
  const at::Tensor x_T = train.x_T();
  const at::Tensor x_ref = train.x_end();
  const auto grid_of = [&](const std::vector<double>& lam) {
    std::vector<double> t(lam.size());
    for (size_t i = 0; i < lam.size(); ++i) t[i] = schedule.t_of_lambda(lam[i]);
    t.front() = schedule.t_max();
    t.back() = schedule.t_min();
    return t;
  };
  const auto loss_of = [&](const std::vector<double>& lam) {
    return grid_errors(model, name, options, grid_of(lam), x_T, x_ref, s.batch).pow(2).mean().item<double>();
  };

  // Descent starts at `start` (LD3 starts from a standard schedule): theta are the logs of its λ increments,
  // so softmax(theta) reproduces them and the first iterate is scored as that grid.
  std::vector<double> log_inc(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) {
    const double inc = schedule.lambda(start[static_cast<size_t>(i + 1)]) - schedule.lambda(start[static_cast<size_t>(i)]);
    log_inc[static_cast<size_t>(i)] = std::log(std::max(inc, 1e-12 * std::abs(span)) / span);
  }
  at::Tensor theta = at::tensor(log_inc, at::TensorOptions().dtype(at::kDouble)).requires_grad_(true);
  OptimizerOptions adam;
  adam.schedule.lr = s.lr;
  adam.grad_clip = 0.0;
  Optimizer optimizer({theta}, adam);
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> best_lam;
  ProgressBar bar(s.iterations, "grid (gradient)", s.progress);
  for (int64_t it = 0; it <= s.iterations; ++it) {
    const at::Tensor lam_t = at::cat({at::zeros({1}, theta.options()), at::softmax(theta, 0).cumsum(0)}) * span + lam0;
    const at::Tensor lam_d = lam_t.detach().contiguous();
    const std::vector<double> lam(lam_d.data_ptr<double>(), lam_d.data_ptr<double>() + lam_d.numel());
    const double loss = loss_of(lam);
    FEWSTEP_CHECK(std::isfinite(loss), "optimize_timesteps: the training loss became non-finite at iteration ", it,
                  "; lower lr (", s.lr, ")");
    history.push_back(loss);
    if (loss < best) {
      best = loss;
      best_lam = lam;
    }
    if (it == s.iterations) break;  // the last iterate is scored, not moved
    std::vector<double> g(lam.size(), 0.0);
    for (int64_t i = 1; i < steps; ++i) {
      // A step of fd_step towards the nearer neighbour's side that keeps the grid decreasing in t.
      std::vector<double> moved = lam;
      const double room = std::min(lam[i + 1] - lam[i], lam[i] - lam[i - 1]);
      const double h = std::min(s.fd_step, 0.5 * room);
      moved[i] += h;
      g[static_cast<size_t>(i)] = (loss_of(moved) - loss) / h;
    }
    (lam_t * at::tensor(g, theta.options())).sum().backward();
    optimizer.step(it);
    bar.update(it + 1);
  }
  bar.close();
  return grid_of(best_lam);
}

}  // namespace

void GridFitSettings::validate() const {
  FEWSTEP_CHECK_VALUE(!sample_shape.empty(), "optimize_timesteps: sample_shape must not be empty");
  FEWSTEP_CHECK_VALUE(n >= 1, "optimize_timesteps: n (training samples) must be >= 1, got ", n);
  FEWSTEP_CHECK_VALUE(heldout_n >= 1, "optimize_timesteps: heldout_n must be >= 1, got ", heldout_n);
  FEWSTEP_CHECK_VALUE(candidates >= 2, "optimize_timesteps: candidates must be >= 2, got ", candidates);
  FEWSTEP_CHECK_VALUE(substeps >= 1, "optimize_timesteps: substeps must be >= 1, got ", substeps);
  FEWSTEP_CHECK_VALUE(iterations >= 0, "optimize_timesteps: iterations must be >= 0, got ", iterations);
  FEWSTEP_CHECK_VALUE(std::isfinite(lr) && lr > 0, "optimize_timesteps: lr must be > 0, got ", lr);
  FEWSTEP_CHECK_VALUE(std::isfinite(fd_step) && fd_step > 0, "optimize_timesteps: fd_step must be > 0, got ", fd_step);
  FEWSTEP_CHECK_VALUE(batch >= 1, "optimize_timesteps: batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble,
                      "optimize_timesteps: dtype must be float32 or float64, got ", dtype);
}

std::vector<std::string> grid_methods() { return {"dp", "gradient"}; }

at::Tensor grid_errors(const Denoiser& model, const std::string& name, const Options& options,
                       const std::vector<double>& grid, const at::Tensor& x_T, const at::Tensor& x_ref,
                       int64_t batch) {
  const auto stepper = solver(name, options);
  std::vector<at::Tensor> errors;
  for (int64_t start = 0; start < x_T.size(0); start += batch) {
    const int64_t b = std::min(batch, x_T.size(0) - start);
    const Solution sol = sample(model, x_T.narrow(0, start, b), *stepper, grid);
    errors.push_back(rms(sol.x, x_ref.narrow(0, start, b)));
  }
  return at::cat(errors);
}

OptimizedGrid optimize_timesteps(const Denoiser& model, const std::string& name, const Options& options, int64_t nfe,
                                 const std::string& method, const GridFitSettings& settings) {
  const auto started = std::chrono::steady_clock::now();
  FEWSTEP_CHECK_VALUE(nfe >= 1, "optimize_timesteps: nfe must be >= 1, got ", nfe);
  FEWSTEP_CHECK_VALUE(method == "dp" || method == "gradient", "optimize_timesteps: method must be 'dp' or "
                      "'gradient', got '", method, "'");
  settings.validate();
  const auto stepper = solver(name, options);
  const StepperTraits& traits = stepper->traits();
  FEWSTEP_CHECK_VALUE(!traits.stochastic, "optimize_timesteps: solver '", name, "' is stochastic; a tuned grid is "
                      "fitted for a deterministic solver");
  const int64_t steps = steps_for_nfe(*stepper, nfe);
  FEWSTEP_CHECK_VALUE(steps > 0, "optimize_timesteps: solver '", name, "' cannot spend exactly nfe=", nfe,
                      " evaluations (it spends ", traits.nfe_per_step, " per step)");
  const NoiseSchedule& schedule = model.schedule_ref();
  FEWSTEP_CHECK_VALUE(!traits.adaptive_by_default && !stepper->plan(schedule, steps, Spacing::LogSNR, std::nullopt,
                                                                     std::nullopt),
                      "optimize_timesteps: solver '", name, "' plans its own steps; a tuned grid is for solvers that "
                      "step on a given grid");
  FEWSTEP_CHECK_VALUE(method != "dp" || settings.candidates >= steps, "optimize_timesteps: candidates (",
                      settings.candidates, ") must be >= the ", steps, " steps of nfe=", nfe);

  OptimizedGrid out;
  out.solver = traits.name;
  out.solver_options = options;
  out.nfe = nfe;
  out.method = method;
  out.settings = settings;
  const TeacherSolve train = reference(model, settings, settings.seed, settings.n, /*dense=*/method == "dp",
                                       "reference solves (train)");
  const TeacherSolve held = reference(model, settings, settings.heldout_seed, settings.heldout_n, false,
                                      "reference solves (held-out)");
  out.reference_nfe = train.nfe;
  out.dp_history = method == "dp" && settings.dp_history && traits.multistep;
  // The fixed spacings on the training samples: the gradient method starts at the one of least mean squared
  // error, and the fit is kept only if it beats the best of them there (a surrogate cost, as DP's local
  // errors, can lose to a fixed grid in the true error): the tuned grid is never worse on the training seeds.
  std::vector<double> start, fallback;
  double start_mse = std::numeric_limits<double>::infinity(), fallback_error = start_mse;
  std::string fallback_spacing;
  for (Spacing spacing : fixed_spacings()) {
    const std::vector<double> grid = timesteps(schedule, steps, spacing);
    const at::Tensor e = grid_errors(model, name, options, grid, train.x_T(), train.x_end(), settings.batch);
    const double mse = e.pow(2).mean().item<double>(), median = median_of(e);
    if (mse < start_mse) start_mse = mse, start = grid;
    if (median < fallback_error) fallback_error = median, fallback = grid, fallback_spacing = to_string(spacing);
  }
  out.times = method == "dp" ? dp_grid(model, *stepper, train, steps, out.dp_history, settings)
                             : gradient_grid(model, name, options, train, steps, settings, start, out.loss);
  out.train_error = median_of(grid_errors(model, name, options, out.times, train.x_T(), train.x_end(), settings.batch));
  out.fitted_train_error = out.train_error;
  if (fallback_error < out.train_error) {
    out.times = fallback;
    out.train_error = fallback_error;
    out.selected = "fixed " + fallback_spacing;
  }
  out.heldout_error = median_of(grid_errors(model, name, options, out.times, held.x_T(), held.x_end(), settings.batch));
  out.best_fixed_error = std::numeric_limits<double>::infinity();
  for (Spacing spacing : fixed_spacings()) {
    const double e = median_of(grid_errors(model, name, options, timesteps(schedule, steps, spacing), held.x_T(),
                                        held.x_end(), settings.batch));
    if (e < out.best_fixed_error) {
      out.best_fixed_error = e;
      out.best_fixed_spacing = to_string(spacing);
    }
  }
  out.fit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return out;
}

std::string OptimizedGrid::fit_json() const {
  const GridFitSettings& s = settings;
  json fit = {{"method", method},
              {"reference", {{"solver", s.reference_solver},
                             {"steps", s.candidates * s.substeps},
                             {"spacing", "logsnr"},
                             {"nfe", reference_nfe}}},
              {"train", {{"seed", s.seed}, {"n", s.n}}},
              {"heldout", {{"seed", s.heldout_seed}, {"n", s.heldout_n}}},
              {"x_T", "randn_per_sample(seed + i)"},
              {"dtype", std::string(c10::toString(s.dtype))},
              {"error", "median over samples of the per-sample RMS error of x_0 against the reference"},
              {"train_error", train_error},
              {"selected", selected},
              {"fitted_train_error", fitted_train_error},
              {"heldout_error", heldout_error},
              {"best_fixed", {{"spacing", best_fixed_spacing}, {"heldout_error", best_fixed_error}}},
              {"fit_seconds", fit_seconds},
              {"fewstep_version", fewstep::version()}};
  if (method == "dp") {
    fit["candidates"] = s.candidates;
    fit["dp_propagated"] = s.dp_propagate;
    fit["dp_cost"] = dp_history ? "with the multistep history along the path" : "one step from a fresh state (GITS)";
  }
  if (method == "gradient") {
    fit["iterations"] = s.iterations;
    fit["lr"] = s.lr;
    fit["fd_step"] = s.fd_step;
    if (!loss.empty()) fit["train_loss"] = {{"first", loss.front()}, {"last", loss.back()}};
  }
  return fit.dump();
}

ModelTunedGrid OptimizedGrid::tuned_grid() const {
  ModelTunedGrid g;
  g.solver = solver;
  g.options = tuned_grid_options(solver_options);
  g.nfe = nfe;
  g.timesteps = times;
  g.fit = fit_json();
  return g;
}

void save_optimized_grid(const std::string& model_path, const OptimizedGrid& grid) {
  save_tuned_grid(model_path, grid.tuned_grid());
}

}  // namespace fewstep
