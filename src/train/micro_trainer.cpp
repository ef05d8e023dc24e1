#include "fewstep/train/micro_trainer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/micro/exponential_step.h"
#include "fewstep/micro/unroll.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

void MicroTrainerOptions::validate() const {
  FEWSTEP_CHECK_VALUE(batch >= 1, "MicroTrainerOptions.batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(budget_min >= 1 && budget_max >= budget_min, "MicroTrainerOptions.budget_min/budget_max must "
                      "satisfy 1 <= budget_min <= budget_max, got ", budget_min, " and ", budget_max);
  FEWSTEP_CHECK_VALUE(spread >= 0.0 && spread < 1.0, "MicroTrainerOptions.spread must be in [0, 1), got ", spread);
  FEWSTEP_CHECK_VALUE(segment_min >= 1, "MicroTrainerOptions.segment_min must be >= 1, got ", segment_min);
  FEWSTEP_CHECK_VALUE(segment_max == 0 || segment_max >= segment_min, "MicroTrainerOptions.segment_max must be 0 or >= "
                      "segment_min (", segment_min, "), got ", segment_max);
  FEWSTEP_CHECK_VALUE(std::isfinite(ema_decay) && ema_decay >= 0.0 && ema_decay <= 1.0,
                      "MicroTrainerOptions.ema_decay must be in [0, 1], got ", ema_decay);
  FEWSTEP_CHECK_VALUE(loss == "mse" || loss == "rms" || loss == "log-rms",
                      "MicroTrainerOptions.loss must be 'mse', 'rms' or 'log-rms', got '", loss, "'");
  FEWSTEP_CHECK_VALUE(mode != MicroMode::Residual || loss == "mse", "MicroTrainerOptions.loss = '", loss,
                      "' applies to the unrolled modes (joint, step_size); residual mode regresses each step");
  optimizer.schedule.validate();
}

namespace {

using Average = std::function<void(const std::vector<at::Tensor>&)>;

// The mean over the processes of a data-parallel run (train/trainer.h's DataParallel::average), as a
// differentiable operation: forward y = mean_r x_r; backward dx_r = mean_r dy_r. The whole batch's
// loss is the mean of the processes' losses, each depending on y, so ∂L/∂y is the mean of the
// processes' upstream gradients; the trainer then averages the parameter gradients once more, which
// with this backward gives exactly the whole batch's gradient (as SyncBatchNorm does for its statistics).
struct ProcessMean : public torch::autograd::Function<ProcessMean> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local, const Average* average) {
    ctx->saved_data["average"] = reinterpret_cast<int64_t>(average);
    at::Tensor out = local.detach().clone();
    (*average)({out});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* average = reinterpret_cast<const Average*>(ctx->saved_data["average"].toInt());
    at::Tensor g = grads[0].contiguous().clone();
    (*average)({g});
    return {g, at::Tensor()};
  }
};

}  // namespace

static void parse_enum(const std::string& name, MicroMode& out) { out = parse_micro_mode(name); }

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("mode", o.mode);
  v("sample_shape", o.heads.sample_shape);
  v("width", o.heads.width);
  v("blocks", o.heads.blocks);
  v("frequencies", o.heads.frequencies);
  v("embed", o.heads.embed);
  v("groups", o.heads.groups);
  v("step_features", o.heads.step_features);
  v("step_width", o.heads.step_width);
  v("history", o.heads.history);
  v("history_depth", o.heads.history_depth);
  v("residual_kind", o.heads.residual_kind);
  v("batch", o.batch);
  v("budget_min", o.budget_min);
  v("budget_max", o.budget_max);
  v("spread", o.spread);
  v("segment_min", o.segment_min);
  v("segment_max", o.segment_max);
  v("teacher_grad", o.teacher_grad);
  v("time_gradient", o.time_gradient);
  v("loss", o.loss);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const MicroTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, MicroTrainerOptions& o) {
  json_options::read(json, o, "MicroTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

struct MicroTrainer::Impl {
  Denoiser teacher;
  std::string teacher_id;
  DenseTrajectories data;
  at::Tensor knot_lambdas;  // data.lambdas as a float64 tensor (residual mode's per-sample λ's)
  MicroTrainerOptions options;
  ScriptNet residual, step_size;
  std::unique_ptr<Ema> ema_residual, ema_step_size;
  std::unique_ptr<ShuffledBatches> order;
  std::unique_ptr<Optimizer> optimizer;
  RngBundle rng;
  at::Tensor probe;
  int64_t step = 0;
  int64_t segment_max = 0;
  Impl(Denoiser t, MicroTrainerOptions o) : teacher(std::move(t)), options(std::move(o)), rng(options.seed) {}
  bool trains_residual() const { return options.mode != MicroMode::StepSize; }
  bool trains_step_size() const { return options.mode != MicroMode::Residual; }
  MicroSamplerInfo info() const {
    MicroSamplerInfo i;
    i.mode = options.mode;
    i.heads = options.heads;
    i.spread = options.spread;
    i.t_start = data.times.front();
    i.t_end = data.times.back();
    i.teacher = teacher_id;
    i.schedule = teacher.schedule_ref().repr();
    i.training = nlohmann::json{{"mode", to_string(options.mode)},
                                {"steps", step},
                                {"batch", options.batch},
                                {"budget", {options.budget_min, options.budget_max}},
                                {"segments", {options.segment_min, segment_max}},
                                {"teacher_grad", options.teacher_grad},
                                {"time_gradient", options.time_gradient},
                                {"lr", options.optimizer.schedule.lr},
                                {"trajectories", data.settings}}
                     .dump();
    return i;
  }
  // `rows` keeps this process's rows of a whole batch's draws; `average` is the mean over processes.
  using Rows = std::function<at::Tensor(const at::Tensor&)>;
  at::Tensor residual_loss(const Rows& rows);
  at::Tensor unrolled_loss(const Rows& rows, const std::function<double(double)>& average,
                           const std::function<at::Tensor(const at::Tensor&)>& batch_mean, double& error,
                           int64_t& budget);
};

MicroTrainer::MicroTrainer(Denoiser teacher, std::string teacher_id, DenseTrajectories data,
                           MicroTrainerOptions options, std::shared_ptr<const MicroSampler> init) {
  options.validate();
  FEWSTEP_CHECK_VALUE(data.x.defined() && data.eps.defined() && data.segments() >= 1,
                      "MicroTrainer: data must hold dense trajectories (micro/trajectories.h)");
  const int64_t n = data.size();
  FEWSTEP_CHECK_VALUE(n >= options.batch, "MicroTrainer: ", n, " trajectories are fewer than batch = ", options.batch);
  std::vector<int64_t> shape(data.x.sizes().begin() + 2, data.x.sizes().end());
  if (options.heads.sample_shape.empty()) options.heads.sample_shape = shape;
  FEWSTEP_CHECK_VALUE(options.heads.sample_shape == shape, "MicroTrainer: heads.sample_shape ",
                      c10::IntArrayRef(options.heads.sample_shape), " differs from the trajectories' ",
                      c10::IntArrayRef(shape));
  options.heads.validate();
  impl_ = std::make_unique<Impl>(std::move(teacher), std::move(options));
  Impl& s = *impl_;
  s.teacher_id = std::move(teacher_id);
  s.data = std::move(data);
  s.knot_lambdas = at::tensor(s.data.lambdas, at::kDouble);
  s.segment_max = s.options.segment_max > 0 ? s.options.segment_max : std::max<int64_t>(1, s.data.segments() / 4);
  FEWSTEP_CHECK_VALUE(s.segment_max <= s.data.segments() && s.options.segment_min <= s.segment_max,
                      "MicroTrainer: segment lengths [", s.options.segment_min, ", ", s.segment_max,
                      "] do not fit the trajectories' ", s.data.segments(), " segments");
  s.residual = make_residual_head(s.options.heads, s.options.seed);
  s.step_size = make_step_size_head(s.options.heads, s.options.seed);
  if (init) {
    FEWSTEP_CHECK_VALUE(s.options.heads.can_start_from(init->info().heads), "MicroTrainer: init sampler '",
                        init->source(), "' has heads (", init->info().heads.describe(), "), this run uses (",
                        s.options.heads.describe(), ")");
    if (init->residual()) copy_residual_head(init->info().heads, *init->residual(), s.options.heads, *s.residual);
    if (init->step_size()) copy_weights(*init->step_size(), *s.step_size);
  }
  std::vector<at::Tensor> params;
  if (s.trains_residual())
    for (const auto& p : trainable_parameters(*s.residual)) params.push_back(p);
  if (s.trains_step_size())
    for (const auto& p : trainable_parameters(*s.step_size)) params.push_back(p);
  s.optimizer = std::make_unique<Optimizer>(std::move(params), s.options.optimizer);
  s.ema_residual = std::make_unique<Ema>(*s.residual, s.options.ema_decay);
  s.ema_step_size = std::make_unique<Ema>(*s.step_size, s.options.ema_decay);
  s.order = std::make_unique<ShuffledBatches>(at::zeros({n, 1}), at::arange(n, at::kLong), s.options.batch,
                                              s.options.seed ^ 0x6d6963ull);
  s.probe = MicroSampler::probe_teacher(s.teacher, s.info());
  s.residual->train();
  s.step_size->train();
}

MicroTrainer::~MicroTrainer() = default;

at::Tensor MicroTrainer::Impl::residual_loss(const Rows& shard) {
  const at::Tensor batch = order->next().labels;
  const int64_t b_all = batch.size(0), g = data.segments();
  at::Generator& gen = rng.get("segments");
  const at::Tensor length_all = at::randint(options.segment_min, segment_max + 1, {b_all}, gen, at::kLong);
  // Start knot uniform over the positions where the segment fits.
  const at::Tensor start_all =
      (at::rand({b_all}, gen, at::kDouble) * (g - length_all + 1).to(at::kDouble)).floor().to(at::kLong);
  // History heads: the previous evaluation m' ∈ [segment_min, segment_max] knots earlier; where that
  // falls before the first knot, none (the same knot: h_prev = 0), as at a run's first step.
  const at::Tensor back_all = at::randint(options.segment_min, segment_max + 1, {b_all}, gen, at::kLong);
  // Drawn for the whole batch; with data parallelism this process trains on its rows.
  const at::Tensor index = shard(batch), length = shard(length_all), start = shard(start_all);
  const at::Tensor back = shard(back_all);
  const int64_t b = index.size(0);
  const at::Tensor end = start + length;
  const at::Tensor& lambdas = knot_lambdas;
  const auto first = *residual->parameters().begin();
  // Rows of the [n·(G+1), ...] / [n·G, ...] views: trajectory·(knots per trajectory) + knot.
  auto rows = [&](const at::Tensor& all, const at::Tensor& knot) {
    const int64_t per = all.size(1);
    return all.flatten(0, 1).index_select(0, index * per + knot).to(first.scalar_type());
  };
  const at::Tensor x_s = rows(data.x, start), x_t = rows(data.x, end), eps = rows(data.eps, start);
  const at::Tensor before = start - back;
  const at::Tensor prev = at::where(before >= 0, before, start);
  const auto dtype = first.scalar_type();
  const at::Tensor lambda_s = lambdas.index_select(0, start), lambda_t = lambdas.index_select(0, end);
  const ScheduleFamily family = teacher.schedule_ref().family();
  // Deeper heads: each further evaluation as far back again, drawn only for them (so that shallower
  // runs keep their random stream); from where one is missing, the last one there is (differences 0).
  std::vector<PreviousEvaluation> earlier{PreviousEvaluation{rows(data.eps, prev), lambdas.index_select(0, prev)}};
  at::Tensor knot = prev, present = before >= 0;
  for (int64_t k = 2; k <= options.heads.previous_evaluations(); ++k) {
    const at::Tensor further = knot - shard(at::randint(options.segment_min, segment_max + 1, {b_all}, gen, at::kLong));
    present = present.logical_and(further >= 0);
    knot = at::where(present, further, knot);
    earlier.insert(earlier.begin(), PreviousEvaluation{rows(data.eps, knot), lambdas.index_select(0, knot)});
  }
  const at::Tensor pred = micro_nonlinear_term(residual.get(), options.heads.previous_evaluations(), family, x_s, eps,
                                               lambda_s, lambda_t, earlier);
  const at::Tensor target = exact_residual(family, x_s, x_t, lambda_s, lambda_t);
  std::vector<int64_t> shape(x_s.dim(), 1);
  shape[0] = b;
  const at::Tensor c = exponential_step(family, lambda_s, lambda_t).ddim.to(dtype).view(shape);
  return ((pred - target) / c).pow(2).mean();
}

at::Tensor MicroTrainer::Impl::unrolled_loss(const Rows& shard, const std::function<double(double)>& average,
                                             const std::function<at::Tensor(const at::Tensor&)>& batch_mean,
                                             double& error, int64_t& budget) {
  const at::Tensor index = shard(order->next().labels);
  const auto dtype = (*residual->parameters().begin()).scalar_type();
  const at::Tensor x_T = data.x.index_select(0, index).select(1, 0).to(dtype);
  const at::Tensor x_0 = data.x.index_select(0, index).select(1, data.segments()).to(dtype);
  budget = at::randint(options.budget_min, options.budget_max + 1, {1}, rng.get("budget"), at::kLong).item<int64_t>();
  UnrollSpec spec;
  spec.residual = options.mode == MicroMode::StepSize ? nullptr : residual.get();
  spec.history = options.heads.previous_evaluations();
  spec.step_size = step_size.get();
  spec.mode = options.mode;
  spec.budget = budget;
  spec.spread = options.spread;
  spec.t_start = data.times.front();
  spec.t_end = data.times.back();
  spec.teacher_grad = options.teacher_grad;
  spec.time_gradient = options.time_gradient;
  spec.batch_mean = batch_mean;  // h_φ's grid is the whole batch's (data parallelism: every process's rows)
  const at::Tensor squared = (unroll_micro(teacher, x_T, spec).x - x_0).pow(2);
  if (options.loss == "log-rms") {
    // Mean of log RMS: its gradient is already that of the log of the geometric mean.
    const at::Tensor log_rms = 0.5 * at::log(squared.flatten(1).mean(1) + 1e-30).mean();
    error = std::exp(average(log_rms.item<double>()));
    return log_rms;
  }
  const at::Tensor stat = options.loss == "rms" ? at::sqrt(squared.flatten(1).mean(1) + 1e-30).mean() : squared.mean();
  // The whole batch's statistic (the mean of the processes' shard values) as the stop-gradient divisor:
  // the averaged gradients are then those of its log over the whole batch.
  error = average(stat.item<double>());
  return stat / std::max(error, 1e-30);
}

TrainStepStats MicroTrainer::step() {
  Impl& s = *impl_;
  double loss_value = 0.0;
  int64_t budget = 0;
  {
    ScopedUnoptimizedExecutor guard;
    at::Tensor loss;
    const Impl::Rows rows = [this](const at::Tensor& t) { return shard(t); };
    if (s.options.mode == MicroMode::Residual) {
      loss = s.residual_loss(rows);
      loss_value = average_loss(loss.item<double>());
    } else {
      std::function<at::Tensor(const at::Tensor&)> batch_mean;
      if (data_parallel().world > 1) {
        const Average* average = &data_parallel().average;
        batch_mean = [average](const at::Tensor& logits) { return ProcessMean::apply(logits.mean(), average); };
      }
      loss = s.unrolled_loss(rows, [this](double v) { return average_loss(v); }, batch_mean, loss_value, budget);
    }
    loss.backward();
  }
  FEWSTEP_CHECK(std::isfinite(loss_value), "MicroTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ")");
  const Optimizer::Stats o = update(*s.optimizer, s.step);
  if (s.trains_residual()) s.ema_residual->update(*s.residual);
  if (s.trains_step_size()) s.ema_step_size->update(*s.step_size);
  ++s.step;
  TrainStepStats stats{s.step, loss_value, o.lr, o.grad_norm, {}};
  if (budget > 0) stats.extra.push_back({"budget", static_cast<double>(budget)});
  return stats;
}

Checkpoint MicroTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.set_int("step", s.step);
  save_module_state(c, "residual", *s.residual);
  save_module_state(c, "step_size", *s.step_size);
  s.ema_residual->save(c, "ema_residual");
  s.ema_step_size->save(c, "ema_step_size");
  s.optimizer->save(c, "optimizer");
  s.rng.save(c, "rng");
  save_data_position(c, *s.order);
  return c;
}

void MicroTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  const int64_t step = c.integer("step");
  FEWSTEP_CHECK_VALUE(step >= 0, "MicroTrainer.load_checkpoint: checkpoint '", c.source(), "' has step ", step);
  load_module_state(c, "residual", *s.residual);
  load_module_state(c, "step_size", *s.step_size);
  s.ema_residual->load(c, "ema_residual");
  s.ema_step_size->load(c, "ema_step_size");
  s.optimizer->load(c, "optimizer");
  s.rng.load(c, "rng");
  load_data_position(c, *s.order);
  s.step = step;
}

std::string MicroTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  j["teacher"] = s.teacher_id;
  j["trajectories"] = s.data.settings;
  return j.dump();
}

std::string MicroTrainer::options_added_later() const {
  return nlohmann::json{{"residual_kind", "network"}, {"history_depth", 1}, {"loss", "mse"}}.dump();
}

int64_t MicroTrainer::step_count() const { return impl_->step; }
int64_t MicroTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
const ScriptNet& MicroTrainer::export_net() const {
  return impl_->options.mode == MicroMode::StepSize ? impl_->ema_step_size->module() : impl_->ema_residual->module();
}

MicroSampler MicroTrainer::sampler() const {
  const Impl& s = *impl_;
  // Copies: the sampler stays as it is while training goes on.
  auto copy = [](const ScriptNet& net) { return std::make_shared<torch::jit::Module>(net->clone()); };
  return MicroSampler(copy(s.ema_residual->module()), copy(s.ema_step_size->module()), s.info(), s.probe);
}

const ScriptNet& MicroTrainer::residual_head() const { return impl_->residual; }
const ScriptNet& MicroTrainer::step_size_head() const { return impl_->step_size; }
const MicroTrainerOptions& MicroTrainer::options() const { return impl_->options; }

}  // namespace fewstep
