#include "fewstep/train/consistency_trainer.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <limits>

#include "fewstep/core/check.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"

namespace fewstep {

ConsistencyMethod parse_consistency_method(const std::string& name) {
  if (name == "cd") return ConsistencyMethod::Distillation;
  if (name == "ct") return ConsistencyMethod::Training;
  if (name == "ict") return ConsistencyMethod::ImprovedTraining;
  FEWSTEP_CHECK_VALUE(false, "consistency method must be one of cd, ct, ict, got '", name, "'");
  throw;  // unreachable
}

std::string to_string(ConsistencyMethod method) {
  switch (method) {
    case ConsistencyMethod::Distillation: return "cd";
    case ConsistencyMethod::Training: return "ct";
    case ConsistencyMethod::ImprovedTraining: return "ict";
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
  optimizer.schedule.validate();
}

namespace {

void ema_towards(torch::jit::Module& target, const torch::jit::Module& source, double mu) {
  at::NoGradGuard no_grad;
  auto t = target.parameters(true);
  auto s = source.parameters(true);
  auto ti = t.begin();
  for (auto si = s.begin(); si != s.end() && ti != t.end(); ++si, ++ti) {
    at::Tensor dst = *ti;
    dst.mul_(mu).add_(*si, 1.0 - mu);
  }
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

  explicit Impl(ConsistencyTrainerOptions o) : options(std::move(o)), rng(options.seed) {}
  bool has_target() const { return options.method != ConsistencyMethod::ImprovedTraining; }

  int64_t points(int64_t k) const {
    switch (options.method) {
      case ConsistencyMethod::Distillation: return options.num_points;
      case ConsistencyMethod::Training: return options.ct.points(k);
      case ConsistencyMethod::ImprovedTraining: return options.ict.points(k);
    }
    return options.num_points;
  }
  double mu(int64_t k) const {
    switch (options.method) {
      case ConsistencyMethod::Distillation: return options.target_ema;
      case ConsistencyMethod::Training: return options.ct.target_ema(k);
      case ConsistencyMethod::ImprovedTraining: return 0.0;
    }
    return 0.0;
  }
  std::vector<double> levels(int64_t n) const {
    std::vector<double> grid = timesteps(*schedule, n - 1, Spacing::Karras, schedule->t_max(), t_lo, options.rho);
    std::reverse(grid.begin(), grid.end());
    grid.front() = t_lo;  // exact boundary: f(·, t_min) is the identity
    return grid;
  }

  Denoiser teacher() const {
    ScriptNet net = teacher_net;
    Denoiser::Network fn = [net](const at::Tensor& x, const at::Tensor& t) {
      return forward_network(*net, x, t, {}, {}, "consistency distillation teacher");
    };
    return Denoiser(std::move(fn), schedule, options.teacher_prediction, options.teacher_time_input,
                    options.teacher_time_scale);
  }

  // x̂_i for rows with levels t_hi → t_lo: the teacher's ODE step, grouped by index (the stepper takes host times).
  at::Tensor teacher_step_rows(const at::Tensor& x_hi, const std::vector<int64_t>& idx,
                               const std::vector<double>& lv) const {
    std::map<int64_t, std::vector<int64_t>> groups;
    for (size_t b = 0; b < idx.size(); ++b) groups[idx[b]].push_back(static_cast<int64_t>(b));
    at::Tensor out = at::empty_like(x_hi);
    const Denoiser model = teacher();
    for (const auto& [i, rows] : groups) {
      const at::Tensor r = at::tensor(rows, at::kLong).to(x_hi.device());
      const at::Tensor x = x_hi.index_select(0, r);
      ModelEvaluator eval(model);
      StepContext ctx;  // a single step, no grid: adaptive-style context
      StepResult res = teacher_step->step(eval, x, lv[i + 1], lv[i], teacher_step->init(x), ctx);
      out.index_copy_(0, r, res.x);
    }
    return out;
  }

  // The loss at step k's N with draws from `rng`; backward-ready when grad is on.
  at::Tensor loss(const at::Tensor& x0, int64_t k, RngBundle& draws) const {
    const int64_t n = x0.size(0);
    const int64_t big_n = points(k);
    const std::vector<double> lv = levels(big_n);
    at::Generator& gen = draws.get("noise");
    at::Tensor index;
    if (options.method == ConsistencyMethod::ImprovedTraining) {
      std::vector<double> sig(lv.size());
      for (size_t i = 0; i < lv.size(); ++i) sig[i] = schedule->sigma_tilde(lv[i]);
      const std::vector<double> p = lognormal_index_probabilities(sig, options.p_mean, options.p_std);
      index = at::multinomial(at::tensor(p, at::kDouble), n, /*replacement=*/true, gen);
    } else {
      index = at::randint(0, big_n - 1, {n}, gen, at::kLong);
    }
    const at::Tensor z = at::randn(x0.sizes(), gen, at::TensorOptions().dtype(x0.scalar_type())).to(x0.device());
    const uint64_t dropout_seed = static_cast<uint64_t>(
        at::randint(0, std::numeric_limits<int64_t>::max(), {1}, draws.get("dropout"), at::kLong).item<int64_t>());

    const at::Tensor idx_cpu = index.to(at::kCPU, at::kLong).contiguous();
    std::vector<int64_t> idx(idx_cpu.data_ptr<int64_t>(), idx_cpu.data_ptr<int64_t>() + n);
    std::vector<double> t_hi(n), t_lo_v(n), a_hi(n), s_hi(n), a_lo(n), s_lo(n), w(n, 1.0);
    for (int64_t b = 0; b < n; ++b) {
      t_hi[b] = lv[idx[b] + 1], t_lo_v[b] = lv[idx[b]];
      a_hi[b] = schedule->alpha(t_hi[b]), s_hi[b] = schedule->sigma(t_hi[b]);
      a_lo[b] = schedule->alpha(t_lo_v[b]), s_lo[b] = schedule->sigma(t_lo_v[b]);
      if (options.method == ConsistencyMethod::ImprovedTraining)
        w[b] = 1.0 / (schedule->sigma_tilde(t_hi[b]) - schedule->sigma_tilde(t_lo_v[b]));
    }
    std::vector<int64_t> shape(static_cast<size_t>(x0.dim()), 1);
    shape[0] = n;
    const auto column = [&](const std::vector<double>& v) {
      return at::tensor(v, at::kDouble).to(x0.options()).view(shape);
    };
    const at::Tensor x_hi = x0 * column(a_hi) + z * column(s_hi);
    at::Tensor x_lo;
    {
      at::NoGradGuard no_grad;
      x_lo = options.method == ConsistencyMethod::Distillation ? teacher_step_rows(x_hi, idx, lv)
                                                               : x0 * column(a_lo) + z * column(s_lo);
    }
    const ConsistencyParameterization& p = options.function;
    const at::Tensor th = at::tensor(t_hi, at::kDouble), tl = at::tensor(t_lo_v, at::kDouble);
    const at::Tensor online =
        with_dropout_seed(dropout_seed, [&] { return consistency_function(*student, *schedule, p, x_hi, th); });
    at::Tensor tgt;
    {
      at::NoGradGuard no_grad;
      const torch::jit::Module& net = has_target() ? *target : *student;
      tgt = with_dropout_seed(dropout_seed, [&] { return consistency_function(net, *schedule, p, x_lo, tl); });
    }
    const at::Tensor diff = (online - tgt).flatten(1);
    at::Tensor d;
    switch (options.distance) {
      case ConsistencyDistance::L2: d = diff.pow(2).mean(1); break;
      case ConsistencyDistance::L1: d = diff.abs().mean(1); break;
      case ConsistencyDistance::PseudoHuber: {
        const double c = options.huber_c > 0.0 ? options.huber_c : 0.00054 * std::sqrt(double(diff.size(1)));
        d = (diff.pow(2).sum(1) + c * c).sqrt() - c;
        break;
      }
    }
    return (d * at::tensor(w, at::kDouble).to(d.options())).mean();
  }
};

ConsistencyTrainer::ConsistencyTrainer(ScriptNet student, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                                       ConsistencyTrainerOptions options, ScriptNet teacher) {
  FEWSTEP_CHECK_VALUE(student != nullptr, "ConsistencyTrainer: student must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "ConsistencyTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "ConsistencyTrainer: data must not be null");
  options.validate();
  const bool cd = options.method == ConsistencyMethod::Distillation;
  FEWSTEP_CHECK_VALUE(!cd || teacher != nullptr, "ConsistencyTrainer: consistency distillation (cd) needs a teacher");
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
    loss = s.loss(x0, k, s.rng);
    loss.backward();
  }
  const double value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(value), "ConsistencyTrainer: loss is ", value, " at step ", k,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ")");
  const Optimizer::Stats o = s.optimizer->step(k);
  s.ema->update(*s.student);
  const double mu = s.mu(k);
  if (s.has_target()) ema_towards(*s.target, *s.student, mu);
  s.step += 1;
  return {s.step, value, o.lr, o.grad_norm, {{"N", double(s.points(k))}, {"mu", mu}}};
}

double ConsistencyTrainer::loss_on(const at::Tensor& x0, uint64_t seed) const {
  const Impl& s = *impl_;
  FEWSTEP_CHECK_VALUE(x0.defined() && x0.dim() >= 2, "ConsistencyTrainer.loss_on: x0 must be a [B, ...] tensor");
  const at::Tensor& first = s.optimizer->parameters().front();
  RngBundle draws(seed);
  at::NoGradGuard no_grad;
  ScopedUnoptimizedExecutor guard;
  return s.loss(x0.to(first.device(), first.scalar_type()), s.step, draws).item<double>();
}

Checkpoint ConsistencyTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  save_training_parts(c, s.step, {"student", s.student.get(), s.ema.get(), s.optimizer.get(),
                                  const_cast<RngBundle*>(&s.rng), s.data.get()});
  if (s.target) save_module_state(c, "target", *s.target);
  c.set_string("config/method", to_string(s.options.method));
  c.set_string("config/distance", to_string(s.options.distance));
  c.set_int("config/num_points", s.options.num_points);
  c.set_string("config/teacher_solver", s.teacher_step ? s.teacher_step->traits().name : "");
  c.set_string("config/data", s.data->describe());
  return c;
}

void ConsistencyTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  constexpr const char* who = "ConsistencyTrainer.load_checkpoint";
  check_setting(c, "method", to_string(s.options.method), who);
  check_setting(c, "distance", to_string(s.options.distance), who);
  check_setting(c, "num_points", s.options.num_points, who);
  check_setting(c, "teacher_solver", s.teacher_step ? s.teacher_step->traits().name : "", who);
  s.step = load_training_parts(c, {"student", s.student.get(), s.ema.get(), s.optimizer.get(), &s.rng, s.data.get()},
                               who);
  if (s.target) load_module_state(c, "target", *s.target);
}

int64_t ConsistencyTrainer::step_count() const { return impl_->step; }
int64_t ConsistencyTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
int64_t ConsistencyTrainer::points_at(int64_t k) const { return impl_->points(k); }
double ConsistencyTrainer::target_ema_at(int64_t k) const { return impl_->mu(k); }
std::vector<double> ConsistencyTrainer::levels(int64_t n) const {
  FEWSTEP_CHECK_VALUE(n >= 2, "ConsistencyTrainer.levels: n must be >= 2, got ", n);
  return impl_->levels(n);
}
const ScriptNet& ConsistencyTrainer::student() const { return impl_->student; }
const ScriptNet& ConsistencyTrainer::target() const { return impl_->target ? impl_->target : impl_->student; }
const ScriptNet& ConsistencyTrainer::ema_student() const { return impl_->ema->module(); }
Denoiser ConsistencyTrainer::denoiser() const {
  return consistency_denoiser(impl_->ema->module(), impl_->schedule, impl_->options.function);
}
const ConsistencyTrainerOptions& ConsistencyTrainer::options() const { return impl_->options; }

}  // namespace fewstep
