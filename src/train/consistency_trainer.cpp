#include "fewstep/train/consistency_trainer.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <limits>

#include "fewstep/core/check.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

ConsistencyMethod parse_consistency_method(const std::string& name) {
  if (name == "cd") return ConsistencyMethod::Distillation;
  if (name == "ct") return ConsistencyMethod::Training;
  if (name == "ict") return ConsistencyMethod::ImprovedTraining;
  if (name == "ect") return ConsistencyMethod::EasyTuning;
  if (name == "scd") return ConsistencyMethod::ScmDistillation;
  if (name == "sct") return ConsistencyMethod::ScmTraining;
  FEWSTEP_CHECK_VALUE(false, "consistency method must be one of cd, ct, ict, ect, scd, sct, got '", name, "'");
  throw;  // unreachable
}

std::string to_string(ConsistencyMethod method) {
  switch (method) {
    case ConsistencyMethod::Distillation: return "cd";
    case ConsistencyMethod::Training: return "ct";
    case ConsistencyMethod::ImprovedTraining: return "ict";
    case ConsistencyMethod::EasyTuning: return "ect";
    case ConsistencyMethod::ScmDistillation: return "scd";
    case ConsistencyMethod::ScmTraining: return "sct";
  }
  return "?";
}

ConsistencyDistance parse_consistency_distance(const std::string& name) {
  if (name == "l2") return ConsistencyDistance::L2;
  if (name == "l1") return ConsistencyDistance::L1;
  if (name == "pseudo_huber") return ConsistencyDistance::PseudoHuber;
  FEWSTEP_CHECK_VALUE(false, "consistency distance must be one of l2, l1, pseudo_huber, got '", name, "'");
  throw;  // unreachable
}

std::string to_string(ConsistencyDistance distance) {
  switch (distance) {
    case ConsistencyDistance::L2: return "l2";
    case ConsistencyDistance::L1: return "l1";
    case ConsistencyDistance::PseudoHuber: return "pseudo_huber";
  }
  return "?";
}

void ConsistencyTrainerOptions::validate() const {
  function.validate();
  FEWSTEP_CHECK_VALUE(num_points >= 2, "ConsistencyTrainerOptions.num_points must be >= 2, got ", num_points);
  FEWSTEP_CHECK_VALUE(target_ema >= 0.0 && target_ema < 1.0, "ConsistencyTrainerOptions.target_ema must be in [0, 1), got ",
                      target_ema);
  FEWSTEP_CHECK_VALUE(std::isfinite(teacher_time_scale) && teacher_time_scale != 0.0,
                      "ConsistencyTrainerOptions.teacher_time_scale must be non-zero, got ", teacher_time_scale);
  FEWSTEP_CHECK_VALUE(rho > 0.0, "ConsistencyTrainerOptions.rho must be positive, got ", rho);
  FEWSTEP_CHECK_VALUE(p_std > 0.0, "ConsistencyTrainerOptions.p_std must be positive, got ", p_std);
  FEWSTEP_CHECK_VALUE(huber_c >= 0.0, "ConsistencyTrainerOptions.huber_c must be >= 0, got ", huber_c);
  FEWSTEP_CHECK_VALUE(ema_decay >= 0.0 && ema_decay <= 1.0, "ConsistencyTrainerOptions.ema_decay must be in [0, 1], got ",
                      ema_decay);
  if (method == ConsistencyMethod::Training) ct.validate();
  if (method == ConsistencyMethod::ImprovedTraining) ict.validate();
  if (method == ConsistencyMethod::EasyTuning) ect.validate();
  if (method == ConsistencyMethod::ScmDistillation || method == ConsistencyMethod::ScmTraining) scm.validate();
  optimizer.schedule.validate();
}

static void parse_enum(const std::string& name, ConsistencyMethod& out) { out = parse_consistency_method(name); }
static void parse_enum(const std::string& name, ConsistencyDistance& out) { out = parse_consistency_distance(name); }

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("method", o.method);
  v("sigma_data", o.function.sigma_data);
  v("t_min", o.function.t_min);
  v("time_input", o.function.time_input);
  v("time_scale", o.function.time_scale);
  v("teacher_prediction", o.teacher_prediction);
  v("teacher_time_input", o.teacher_time_input);
  v("teacher_time_scale", o.teacher_time_scale);
  v("teacher_solver", o.teacher_solver);
  v("num_points", o.num_points);
  v("target_ema", o.target_ema);
  v("ct_s0", o.ct.s0);
  v("ct_s1", o.ct.s1);
  v("ct_mu0", o.ct.mu0);
  v("ct_total_steps", o.ct.total_steps);
  v("ict_s0", o.ict.s0);
  v("ict_s1", o.ict.s1);
  v("ict_total_steps", o.ict.total_steps);
  v("ect_q", o.ect.q);
  v("ect_k", o.ect.k);
  v("ect_b", o.ect.b);
  v("ect_stages", o.ect.stages);
  v("ect_total_steps", o.ect.total_steps);
  v("scm_tangent_c", o.scm.tangent_c);
  v("scm_warmup_steps", o.scm.warmup_steps);
  v("scm_adaptive_weight", o.scm.adaptive_weight);
  v("p_mean", o.p_mean);
  v("p_std", o.p_std);
  v("rho", o.rho);
  v("distance", o.distance);
  v("huber_c", o.huber_c);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const ConsistencyTrainerOptions& o) {
  ConsistencyTrainerOptions named = o;  // a given stepper is recorded by its name
  if (o.teacher_stepper) named.teacher_solver = o.teacher_stepper->traits().name;
  return json_options::write(named, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, ConsistencyTrainerOptions& o) {
  json_options::read(json, o, "ConsistencyTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

ConsistencyDistance default_consistency_distance(ConsistencyMethod method) {
  return method == ConsistencyMethod::ImprovedTraining || method == ConsistencyMethod::EasyTuning
             ? ConsistencyDistance::PseudoHuber
             : ConsistencyDistance::L2;
}

ConsistencyTrainerOptions consistency_options_from_json(const std::string& json) {
  ConsistencyTrainerOptions o;
  options_from_json(json, o);  // validates the text first
  const json_options::json parsed = json_options::json::parse(json);
  if (!parsed.contains("distance")) o.distance = default_consistency_distance(o.method);
  return o;
}

int64_t consistency_points(const ConsistencyTrainerOptions& o, int64_t k) {
  switch (o.method) {
    case ConsistencyMethod::Distillation: return o.num_points;
    case ConsistencyMethod::Training: return o.ct.points(k);
    case ConsistencyMethod::ImprovedTraining: return o.ict.points(k);
    case ConsistencyMethod::EasyTuning:
    case ConsistencyMethod::ScmDistillation:
    case ConsistencyMethod::ScmTraining: return 0;
  }
  return o.num_points;
}

double consistency_target_ema(const ConsistencyTrainerOptions& o, int64_t k) {
  switch (o.method) {
    case ConsistencyMethod::Distillation: return o.target_ema;
    case ConsistencyMethod::Training: return o.ct.target_ema(k);
    case ConsistencyMethod::ImprovedTraining:
    case ConsistencyMethod::EasyTuning:
    case ConsistencyMethod::ScmDistillation:
    case ConsistencyMethod::ScmTraining: return 0.0;
  }
  return 0.0;
}

std::vector<double> consistency_levels(const NoiseSchedule& schedule, int64_t n, double t_lo, double rho) {
  FEWSTEP_CHECK_VALUE(n >= 2, "consistency_levels: n must be >= 2, got ", n);
  std::vector<double> grid = timesteps(schedule, n - 1, Spacing::Karras, schedule.t_max(), t_lo, rho);
  std::reverse(grid.begin(), grid.end());
  grid.front() = t_lo;  // exact boundary: f(·, t_min) is the identity
  return grid;
}

at::Tensor consistency_draw_index(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& o,
                                  const std::vector<double>& levels, int64_t n, at::Generator& gen) {
  FEWSTEP_CHECK_VALUE(levels.size() >= 2, "consistency_draw_index: need >= 2 levels, got ", levels.size());
  if (o.method != ConsistencyMethod::ImprovedTraining)
    return at::randint(0, static_cast<int64_t>(levels.size()) - 1, {n}, gen, at::kLong);
  std::vector<double> sig(levels.size());
  for (size_t i = 0; i < levels.size(); ++i) sig[i] = schedule.sigma_tilde(levels[i]);
  const std::vector<double> p = lognormal_index_probabilities(sig, o.p_mean, o.p_std);
  return at::multinomial(at::tensor(p, at::kDouble), n, /*replacement=*/true, gen);
}

ConsistencyPairTimes consistency_pair_times(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& o,
                                            const std::vector<double>& levels, const at::Tensor& index) {
  const at::Tensor idx = index.to(at::kCPU, at::kLong).contiguous();
  const int64_t n = idx.numel();
  const int64_t* ip = idx.data_ptr<int64_t>();
  std::vector<double> t_hi(n), t_lo(n), a_hi(n), s_hi(n), a_lo(n), s_lo(n), w(n, 1.0);
  for (int64_t b = 0; b < n; ++b) {
    FEWSTEP_CHECK_VALUE(ip[b] >= 0 && ip[b] + 1 < static_cast<int64_t>(levels.size()), "consistency: index ", ip[b],
                        " is outside 0..", levels.size() - 2);
    t_hi[b] = levels[ip[b] + 1], t_lo[b] = levels[ip[b]];
    a_hi[b] = schedule.alpha(t_hi[b]), s_hi[b] = schedule.sigma(t_hi[b]);
    a_lo[b] = schedule.alpha(t_lo[b]), s_lo[b] = schedule.sigma(t_lo[b]);
    if (o.method == ConsistencyMethod::ImprovedTraining)
      w[b] = 1.0 / (schedule.sigma_tilde(t_hi[b]) - schedule.sigma_tilde(t_lo[b]));
  }
  const auto tensor = [](const std::vector<double>& v) { return at::tensor(v, at::kDouble); };
  return {tensor(t_hi), tensor(t_lo), tensor(a_hi), tensor(s_hi), tensor(a_lo), tensor(s_lo), tensor(w), at::Tensor()};
}

namespace {

// The schedule's time of level σ̃ (λ = −log σ̃), pinned to [t_lo, t_max] (ECT's and sCM's draws).
double time_of_level(const NoiseSchedule& schedule, double s, double t_lo) {
  if (s <= schedule.sigma_tilde(t_lo)) return t_lo;
  if (s >= schedule.sigma_tilde(schedule.t_max())) return schedule.t_max();
  return std::clamp(schedule.t_of_lambda(-std::log(s)), t_lo, schedule.t_max());
}

// σ̃ = exp(P_mean + P_std n), clamped to the schedule's range [σ̃(t_lo), σ̃(t_max)].
double lognormal_level(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& o, double t_lo, double n) {
  return std::clamp(std::exp(o.p_mean + o.p_std * n), schedule.sigma_tilde(t_lo),
                    schedule.sigma_tilde(schedule.t_max()));
}

}  // namespace

ConsistencyPairTimes ect_pair_times(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& o, int64_t k,
                                    double t_lo, const at::Tensor& normals) {
  FEWSTEP_CHECK_VALUE(o.method == ConsistencyMethod::EasyTuning, "ect_pair_times: method is '", to_string(o.method),
                      "', expected 'ect'");
  const at::Tensor nrm = normals.to(at::kCPU, at::kDouble).contiguous();
  const int64_t n = nrm.numel();
  const double* np = nrm.data_ptr<double>();
  const double s_min = schedule.sigma_tilde(t_lo);
  std::vector<double> t_hi(n), t_r(n), a_hi(n), s_hi(n), a_lo(n), s_lo(n), w(n);
  std::vector<uint8_t> data(n);
  for (int64_t b = 0; b < n; ++b) {
    const double st = lognormal_level(schedule, o, t_lo, np[b]);
    const double sr = o.ect.r(st, k);
    t_hi[b] = time_of_level(schedule, st, t_lo), t_r[b] = time_of_level(schedule, sr, t_lo);
    data[b] = sr <= s_min;
    w[b] = 1.0 / (st - sr);
    a_hi[b] = schedule.alpha(t_hi[b]), s_hi[b] = schedule.sigma(t_hi[b]);
    a_lo[b] = schedule.alpha(t_r[b]), s_lo[b] = schedule.sigma(t_r[b]);
  }
  const auto tensor = [](const std::vector<double>& v) { return at::tensor(v, at::kDouble); };
  return {tensor(t_hi), tensor(t_r), tensor(a_hi), tensor(s_hi), tensor(a_lo), tensor(s_lo), tensor(w),
          at::tensor(std::vector<int64_t>(data.begin(), data.end()), at::kLong).to(at::kBool)};
}

at::Tensor consistency_teacher_step(const Denoiser& teacher, const Stepper& stepper, const at::Tensor& x_hi,
                                    const at::Tensor& index, const std::vector<double>& levels) {
  at::NoGradGuard no_grad;
  const at::Tensor idx = index.to(at::kCPU, at::kLong).contiguous();
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t b = 0; b < idx.numel(); ++b) groups[idx.data_ptr<int64_t>()[b]].push_back(b);
  at::Tensor out = at::empty_like(x_hi);
  for (const auto& [i, rows] : groups) {
    FEWSTEP_CHECK_VALUE(i >= 0 && i + 1 < static_cast<int64_t>(levels.size()), "consistency: index ", i,
                        " is outside 0..", levels.size() - 2);
    const at::Tensor r = at::tensor(rows, at::kLong).to(x_hi.device());
    const at::Tensor x = x_hi.index_select(0, r);
    ModelEvaluator eval(teacher);
    StepContext ctx;  // a single step, no grid: adaptive-style context
    StepResult res = stepper.step(eval, x, levels[i + 1], levels[i], stepper.init(x), ctx);
    out.index_copy_(0, r, res.x);
  }
  return out;
}

at::Tensor consistency_distance(const at::Tensor& a, const at::Tensor& b, ConsistencyDistance distance,
                                double huber_c) {
  FEWSTEP_CHECK_VALUE(a.sizes() == b.sizes(), "consistency_distance: shapes ", a.sizes(), " and ", b.sizes(),
                      " differ");
  const at::Tensor diff = (a - b).flatten(1);
  switch (distance) {
    case ConsistencyDistance::L2: return diff.pow(2).mean(1);
    case ConsistencyDistance::L1: return diff.abs().mean(1);
    case ConsistencyDistance::PseudoHuber: {
      const double c = huber_c > 0.0 ? huber_c : 0.00054 * std::sqrt(double(diff.size(1)));
      return (diff.pow(2).sum(1) + c * c).sqrt() - c;
    }
  }
  return diff.pow(2).mean(1);
}

namespace {

// θ⁻ ← μ θ⁻ + (1 − μ) θ over the parameters (train/ema.h's update; the target keeps its buffers).
void ema_towards(torch::jit::Module& target, const torch::jit::Module& source, double mu) {
  std::vector<at::Tensor> t, s;
  for (const at::Tensor& p : target.parameters(true)) t.push_back(p);
  for (const at::Tensor& p : source.parameters(true)) s.push_back(p);
  ema_update(t, s, {}, {}, mu);
}

}  // namespace

struct ConsistencyTrainer::Impl {
  ConsistencyTrainerOptions options;
  SchedulePtr schedule;
  std::shared_ptr<BatchSource> data;
  ScriptNet student, target, teacher_net;
  std::shared_ptr<const Stepper> teacher_step;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  RngBundle rng;
  int64_t step = 0;
  double t_lo = 0.0;
  at::Tensor log_weight;  // sCM's adaptive weight: knots over log σ̃ (undefined for other methods or when off)

  explicit Impl(ConsistencyTrainerOptions o) : options(std::move(o)), rng(options.seed) {}
  bool has_target() const {
    return options.method == ConsistencyMethod::Distillation || options.method == ConsistencyMethod::Training;
  }
  bool ect() const { return options.method == ConsistencyMethod::EasyTuning; }
  bool scm() const {
    return options.method == ConsistencyMethod::ScmDistillation || options.method == ConsistencyMethod::ScmTraining;
  }
  double warmup(int64_t k) const { return options.scm.warmup(k, options.optimizer.schedule.total_steps); }

  int64_t points(int64_t k) const { return consistency_points(options, k); }
  double mu(int64_t k) const { return consistency_target_ema(options, k); }
  std::vector<double> levels(int64_t n) const { return consistency_levels(*schedule, n, t_lo, options.rho); }

  Denoiser teacher() const {
    ScriptNet net = teacher_net;
    Denoiser::Network fn = [net](const at::Tensor& x, const at::Tensor& t) {
      return forward_network(*net, x, t, {}, {}, "consistency distillation teacher");
    };
    return Denoiser(std::move(fn), schedule, options.teacher_prediction, options.teacher_time_input,
                    options.teacher_time_scale);
  }

  // The teacher's ε̂ at per-row host times t: one network call, each row converted at its own time.
  at::Tensor teacher_eps(const at::Tensor& x, const at::Tensor& t) const {
    const at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
    const double* tp = host.data_ptr<double>();
    std::vector<double> t_in(static_cast<size_t>(host.numel()));
    for (int64_t b = 0; b < host.numel(); ++b)
      t_in[b] = network_time(*schedule, tp[b], options.teacher_time_input, options.teacher_time_scale);
    const at::Tensor out = forward_network(*teacher_net, x, at::tensor(t_in, at::kDouble).to(x.options()), {}, {},
                                           "consistency distillation teacher");
    if (options.teacher_prediction == Prediction::Eps) return out;
    std::vector<at::Tensor> eps;
    for (int64_t b = 0; b < host.numel(); ++b)
      eps.push_back(convert_prediction(x.narrow(0, b, 1), out.narrow(0, b, 1), options.teacher_prediction, *schedule,
                                       tp[b], Needs::Eps)
                        .eps);
    return at::cat(eps);
  }

  // sCD / sCT (train/continuous_consistency.h): σ̃ from the lognormal, one JVP pass of θ⁻ = θ along the
  // ODE, the online pass regressed onto its normalised tangent with the adaptive weight.
  // After the times' draw: the batch's noise z (this process's rows) from "noise", then one dropout seed
  // from "dropout" — the order every method keeps, so checkpoints resume bit-exactly.
  static std::pair<at::Tensor, uint64_t> draw_noise_and_dropout(
      const at::Tensor& x_all, RngBundle& draws, const std::function<at::Tensor(const at::Tensor&)>& rows) {
    const at::Tensor z = rows(at::randn(x_all.sizes(), draws.get("noise"),
                                        at::TensorOptions().dtype(x_all.scalar_type())).to(x_all.device()));
    const uint64_t dropout_seed = static_cast<uint64_t>(
        at::randint(0, std::numeric_limits<int64_t>::max(), {1}, draws.get("dropout"), at::kLong).item<int64_t>());
    return {z, dropout_seed};
  }

  // The shape that broadcasts a per-row vector over x's other dimensions: [B, 1, 1, ...].
  static std::vector<int64_t> row_column_shape(const at::Tensor& x) {
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[0] = x.size(0);
    return shape;
  }

  at::Tensor scm_loss_rows(const at::Tensor& x_all, int64_t k, RngBundle& draws,
                           const std::function<at::Tensor(const at::Tensor&)>& rows) const {
    const at::Tensor normals = rows(at::randn({x_all.size(0)}, draws.get("noise"), at::kDouble)).contiguous();
    const auto [z, dropout_seed] = draw_noise_and_dropout(x_all, draws, rows);
    const at::Tensor x0 = rows(x_all);
    const int64_t n = normals.numel();
    // Draws below σ̃(t_min) sit clamped on the boundary, where f is the identity whatever F: no tangent to
    // match, so `inside` masks them out of the loss.
    std::vector<double> t(n), level(n), alpha(n), sigma(n), dalpha(n), dsigma(n), inside(n);
    for (int64_t b = 0; b < n; ++b) {
      level[b] = lognormal_level(*schedule, options, t_lo, normals.data_ptr<double>()[b]);
      t[b] = time_of_level(*schedule, level[b], t_lo);
      alpha[b] = schedule->alpha(t[b]), sigma[b] = schedule->sigma(t[b]);
      dalpha[b] = schedule->dalpha_dt(t[b]), dsigma[b] = schedule->dsigma_dt(t[b]);
      inside[b] = t[b] > t_lo ? 1.0 : 0.0;
    }
    const auto column = [&](const std::vector<double>& v) {
      return at::tensor(v, at::kDouble).to(x0.options()).view(row_column_shape(x0));
    };
    const at::Tensor times = at::tensor(t, at::kDouble);
    const at::Tensor x_t = x0 * column(alpha) + z * column(sigma);
    at::Tensor dx_dt;
    if (options.method == ConsistencyMethod::ScmDistillation) {
      at::NoGradGuard no_grad;
      dx_dt = ode_velocity_from_eps(*schedule, x_t, teacher_eps(x_t, times), times);
    } else {
      dx_dt = x0 * column(dalpha) + z * column(dsigma);  // the conditional velocity of this (x_0, z)
    }
    const ScriptNet net = student;
    const ConsistencyNetwork F = [net](const at::Tensor& x, const at::Tensor& t_in) {
      return forward_network(*net, x, t_in, {}, {}, "consistency network");
    };
    ScmTangent tangent;
    with_dropout_seed(dropout_seed, [&] {
      tangent = scm_tangent(F, *schedule, options.function, x_t, times, dx_dt, warmup(k), options.scm.tangent_c);
      return tangent.F_minus;
    });
    const at::Tensor online = with_dropout_seed(dropout_seed, [&] { return F(tangent.input, tangent.time_input); });
    const at::Tensor w =
        log_weight.defined()
            ? scm_log_weight(log_weight, at::tensor(level, at::kDouble).to(log_weight.device()),
                             schedule->sigma_tilde(t_lo), schedule->sigma_tilde(schedule->t_max()))
            : at::Tensor();
    return scm_loss(online, tangent, w, at::tensor(inside, at::kDouble));
  }

  // The loss at step k's N with draws from `draws` for the whole batch, on the rows `rows` keeps
  // (this process's shard); backward-ready when grad is on.
  at::Tensor loss(const at::Tensor& x_all, int64_t k, RngBundle& draws,
                  const std::function<at::Tensor(const at::Tensor&)>& rows) const {
    if (scm()) return scm_loss_rows(x_all, k, draws, rows);
    const std::vector<double> lv = ect() ? std::vector<double>{} : levels(points(k));
    at::Generator& gen = draws.get("noise");
    const at::Tensor index = ect() ? at::randn({x_all.size(0)}, gen, at::kDouble)  // ECT: the lognormal's normals
                                   : consistency_draw_index(*schedule, options, lv, x_all.size(0), gen);
    const auto [z, dropout_seed] = draw_noise_and_dropout(x_all, draws, rows);
    const at::Tensor x0 = rows(x_all);
    const ConsistencyPairTimes p = ect() ? ect_pair_times(*schedule, options, k, t_lo, rows(index))
                                         : consistency_pair_times(*schedule, options, lv, rows(index));
    const std::vector<int64_t> shape = row_column_shape(x0);
    const auto column = [&](const at::Tensor& v) { return v.to(x0.options()).view(shape); };
    const at::Tensor x_hi = x0 * column(p.alpha_hi) + z * column(p.sigma_hi);
    at::Tensor x_lo;
    {
      at::NoGradGuard no_grad;
      x_lo = options.method == ConsistencyMethod::Distillation
                 ? consistency_teacher_step(teacher(), *teacher_step, x_hi, rows(index), lv)
                 : x0 * column(p.alpha_lo) + z * column(p.sigma_lo);
    }
    const ConsistencyParameterization& f = options.function;
    const at::Tensor online =
        with_dropout_seed(dropout_seed, [&] { return consistency_function(*student, *schedule, f, x_hi, p.t_hi); });
    at::Tensor tgt;
    {
      at::NoGradGuard no_grad;
      const torch::jit::Module& net = has_target() ? *target : *student;
      tgt = with_dropout_seed(dropout_seed, [&] { return consistency_function(net, *schedule, f, x_lo, p.t_lo); });
      if (p.to_data.defined()) tgt = at::where(p.to_data.to(x0.device()).view(shape), x0, tgt);  // ECT's diffusion limit
    }
    const at::Tensor d = consistency_distance(online, tgt, options.distance, options.huber_c);
    return (d * p.weight.to(d.options())).mean();
  }
};

ConsistencyTrainer::ConsistencyTrainer(ScriptNet student, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                                       ConsistencyTrainerOptions options, ScriptNet teacher) {
  FEWSTEP_CHECK_VALUE(student != nullptr, "ConsistencyTrainer: student must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "ConsistencyTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "ConsistencyTrainer: data must not be null");
  options.validate();
  const bool cd = options.method == ConsistencyMethod::Distillation;
  const bool needs_teacher = cd || options.method == ConsistencyMethod::ScmDistillation;
  FEWSTEP_CHECK_VALUE(!needs_teacher || teacher != nullptr, "ConsistencyTrainer: consistency distillation (",
                      to_string(options.method), ") needs a teacher");
  impl_ = std::make_unique<Impl>(std::move(options));
  Impl& s = *impl_;
  s.schedule = std::move(schedule);
  s.data = std::move(data);
  s.t_lo = s.options.function.t_min > 0.0 ? s.options.function.t_min : s.schedule->t_min();
  s.schedule->check_time(s.t_lo, "ConsistencyTrainerOptions.function.t_min");
  if (cd) {
    s.teacher_step = s.options.teacher_stepper ? s.options.teacher_stepper : solver(s.options.teacher_solver);
    FEWSTEP_CHECK_VALUE(!s.teacher_step->traits().stochastic,
                        "ConsistencyTrainerOptions.teacher_solver must be deterministic (an ODE step), got '",
                        s.teacher_step->traits().name, "'");
  }
  if (needs_teacher) {
    at::NoGradGuard no_grad;
    s.teacher_net = std::make_shared<torch::jit::Module>(teacher->clone());
    for (const at::Tensor& p : s.teacher_net->parameters(true)) at::Tensor(p).requires_grad_(false);
    s.teacher_net->eval();
  }
  {
    at::NoGradGuard no_grad;
    s.student = std::make_shared<torch::jit::Module>(student->clone());
    for (const at::Tensor& p : s.student->parameters(true)) at::Tensor(p).requires_grad_(true);
    if (s.has_target()) {
      s.target = std::make_shared<torch::jit::Module>(student->clone());
      for (const at::Tensor& p : s.target->parameters(true)) at::Tensor(p).requires_grad_(false);
    }
  }
  std::vector<at::Tensor> params = trainable_parameters(*s.student);
  FEWSTEP_CHECK_VALUE(!params.empty(), "ConsistencyTrainer: the student has no parameters that require grad");
  if (s.scm() && s.options.scm.adaptive_weight) {
    s.log_weight = at::zeros({kScmWeightKnots}, params.front().options()).requires_grad_(true);
    params.push_back(s.log_weight);  // trained by the same AdamW
  }
  s.optimizer = std::make_unique<Optimizer>(std::move(params), s.options.optimizer);
  s.ema = std::make_unique<Ema>(*s.student, s.options.ema_decay);
  s.student->train();
  if (s.target) s.target->train();  // same dropout behaviour as the online pass
}

ConsistencyTrainer::~ConsistencyTrainer() = default;

TrainStepStats ConsistencyTrainer::step() {
  Impl& s = *impl_;
  const at::Tensor& first = s.optimizer->parameters().front();
  Batch batch = s.data->next();
  FEWSTEP_CHECK_VALUE(batch.x.defined() && batch.x.dim() >= 2, "ConsistencyTrainer: data source ", s.data->describe(),
                      " returned a batch that is not a [B, ...] tensor");
  const at::Tensor x0 = batch.x.to(first.device(), first.scalar_type());
  const int64_t k = s.step;
  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    loss = s.loss(x0, k, s.rng, [this](const at::Tensor& t) { return shard(t); });
    loss.backward();
  }
  const double value = average_loss(loss.item<double>());
  FEWSTEP_CHECK(std::isfinite(value), "ConsistencyTrainer: loss is ", value, " at step ", k,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ")");
  const Optimizer::Stats o = update(*s.optimizer, k);
  s.ema->update(*s.student);
  const double mu = s.mu(k);
  if (s.has_target()) ema_towards(*s.target, *s.student, mu);
  s.step += 1;
  if (s.ect()) return {s.step, value, o.lr, o.grad_norm, {{"stage", double(s.options.ect.stage(k))}}};
  if (s.scm()) return {s.step, value, o.lr, o.grad_norm, {{"warmup", s.warmup(k)}}};
  return {s.step, value, o.lr, o.grad_norm, {{"N", double(s.points(k))}, {"mu", mu}}};
}

double ConsistencyTrainer::loss_on(const at::Tensor& x0, uint64_t seed, int64_t at_step) const {
  const Impl& s = *impl_;
  FEWSTEP_CHECK_VALUE(x0.defined() && x0.dim() >= 2, "ConsistencyTrainer.loss_on: x0 must be a [B, ...] tensor");
  const at::Tensor& first = s.optimizer->parameters().front();
  RngBundle draws(seed);
  at::NoGradGuard no_grad;
  ScopedUnoptimizedExecutor guard;
  return s.loss(x0.to(first.device(), first.scalar_type()), at_step >= 0 ? at_step : s.step, draws,
                [](const at::Tensor& t) { return t; })
      .item<double>();
}

Checkpoint ConsistencyTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  save_training_parts(c, s.step, {"student", s.student.get(), s.ema.get(), s.optimizer.get(),
                                  const_cast<RngBundle*>(&s.rng), s.data.get()});
  if (s.target) save_module_state(c, "target", *s.target);
  if (s.log_weight.defined()) c.set_tensor("scm/log_weight", s.log_weight.detach().to(at::kCPU).clone());
  return c;
}

void ConsistencyTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  s.step = load_training_parts(c, {"student", s.student.get(), s.ema.get(), s.optimizer.get(), &s.rng, s.data.get()},
                               "ConsistencyTrainer.load_checkpoint");
  if (s.target) load_module_state(c, "target", *s.target);
  if (s.log_weight.defined()) {
    FEWSTEP_CHECK_VALUE(c.contains("scm/log_weight"), "ConsistencyTrainer.load_checkpoint: ", c.source(),
                        " has no scm/log_weight (not an sCM run with the adaptive weight)");
    const at::Tensor& w = c.tensor("scm/log_weight");
    FEWSTEP_CHECK_VALUE(w.sizes() == s.log_weight.sizes(), "ConsistencyTrainer.load_checkpoint: scm/log_weight has shape ",
                        w.sizes(), ", expected ", s.log_weight.sizes());
    at::NoGradGuard no_grad;
    s.log_weight.copy_(w);
  }
}

std::string ConsistencyTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  j["t_min"] = s.t_lo;
  j["schedule"] = s.schedule->repr();
  j["data"] = s.data->describe();
  return j.dump();
}

int64_t ConsistencyTrainer::step_count() const { return impl_->step; }
int64_t ConsistencyTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
int64_t ConsistencyTrainer::points_at(int64_t k) const { return impl_->points(k); }
double ConsistencyTrainer::target_ema_at(int64_t k) const { return impl_->mu(k); }
std::vector<double> ConsistencyTrainer::levels(int64_t n) const { return impl_->levels(n); }
const ScriptNet& ConsistencyTrainer::student() const { return impl_->student; }
const ScriptNet& ConsistencyTrainer::target() const { return impl_->target ? impl_->target : impl_->student; }
const ScriptNet& ConsistencyTrainer::ema_student() const { return impl_->ema->module(); }
Denoiser ConsistencyTrainer::denoiser() const {
  return consistency_denoiser(impl_->ema->module(), impl_->schedule, impl_->options.function);
}
const ConsistencyTrainerOptions& ConsistencyTrainer::options() const { return impl_->options; }

}  // namespace fewstep
