#include "fewstep/train/guidance_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/conditioning.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("num_classes", o.num_classes);
  v("guidance_min", o.guidance_min);
  v("guidance_max", o.guidance_max);
  v("prediction", o.prediction);
  v("time_input", o.time_input);
  v("time_scale", o.time_scale);
  v("t_min", o.t_min);
  v("t_max", o.t_max);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const GuidanceTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, GuidanceTrainerOptions& o) {
  json_options::read(json, o, "GuidanceTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

void GuidanceTrainerOptions::validate() const {
  FEWSTEP_CHECK_VALUE(num_classes >= 1, "GuidanceTrainerOptions.num_classes must be >= 1, got ", num_classes);
  FEWSTEP_CHECK_VALUE(std::isfinite(guidance_min) && std::isfinite(guidance_max) && guidance_min <= guidance_max,
                      "GuidanceTrainerOptions: need finite guidance_min <= guidance_max, got [", guidance_min, ", ",
                      guidance_max, "]");
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale > 0.0,
                      "GuidanceTrainerOptions.time_scale must be positive, got ", time_scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(ema_decay) && ema_decay >= 0.0 && ema_decay <= 1.0,
                      "GuidanceTrainerOptions.ema_decay must be in [0, 1], got ", ema_decay);
  optimizer.schedule.validate();
}

struct GuidanceDistillationTrainer::Impl {
  ScriptNet teacher, student;
  SchedulePtr schedule;
  std::shared_ptr<BatchSource> data;
  GuidanceTrainerOptions options;
  double t_min = 0.0, t_max = 0.0;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  RngBundle rng;
  int64_t step = 0;
  explicit Impl(GuidanceTrainerOptions o) : options(std::move(o)), rng(options.seed) {}
  // What the checkpoint stores besides the settings (train/trainer.h).
  TrainingParts parts() const { return {"student", student.get(), ema.get(), optimizer.get(), const_cast<RngBundle*>(&rng), data.get()}; }
};

GuidanceDistillationTrainer::GuidanceDistillationTrainer(ScriptNet teacher, ScriptNet student, SchedulePtr schedule,
                                                         std::shared_ptr<BatchSource> data,
                                                         GuidanceTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(teacher != nullptr, "GuidanceDistillationTrainer: teacher must not be null");
  FEWSTEP_CHECK_VALUE(student != nullptr, "GuidanceDistillationTrainer: student must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "GuidanceDistillationTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "GuidanceDistillationTrainer: data must not be null");
  options.validate();
  impl_ = std::make_unique<Impl>(std::move(options));
  Impl& s = *impl_;
  s.teacher = std::move(teacher);
  s.student = std::move(student);
  s.schedule = std::move(schedule);
  s.data = std::move(data);
  s.t_min = s.options.t_min.value_or(s.schedule->t_min());
  s.t_max = s.options.t_max.value_or(s.schedule->t_max());
  s.schedule->check_time(s.t_min, "GuidanceTrainerOptions.t_min");
  s.schedule->check_time(s.t_max, "GuidanceTrainerOptions.t_max");
  FEWSTEP_CHECK_VALUE(s.t_min < s.t_max, "GuidanceTrainerOptions: need t_min < t_max, got ", s.t_min, ", ", s.t_max);
  s.teacher->eval();
  std::vector<at::Tensor> params = trainable_parameters(*s.student);
  FEWSTEP_CHECK_VALUE(!params.empty(), "GuidanceDistillationTrainer: the student has no parameters that require grad");
  s.optimizer = std::make_unique<Optimizer>(std::move(params), s.options.optimizer);
  s.ema = std::make_unique<Ema>(*s.student, s.options.ema_decay);
  s.student->train();
}

GuidanceDistillationTrainer::~GuidanceDistillationTrainer() = default;

TrainStepStats GuidanceDistillationTrainer::step() {
  Impl& s = *impl_;
  const at::Tensor& first = s.optimizer->parameters().front();
  const Batch batch = s.data->next();
  FEWSTEP_CHECK_VALUE(batch.x.defined() && batch.x.dim() >= 2, "GuidanceDistillationTrainer: data source ",
                      s.data->describe(), " returned a batch that is not a [B, ...] tensor");
  const at::Tensor x_all = batch.x.to(first.device(), first.scalar_type());
  const int64_t n_all = x_all.size(0);
  ConditioningOptions labels_only;
  labels_only.num_classes = s.options.num_classes;
  // Drawn for the whole batch; with data parallelism this process trains on its rows.
  const at::Tensor y =
      shard(draw_labels(batch, labels_only, s.rng.get("labels"), x_all.device(), "GuidanceDistillationTrainer"));
  at::Generator& gen = s.rng.get("noise");
  const at::Tensor t = shard(s.t_min + (s.t_max - s.t_min) * at::rand({n_all}, gen, at::kDouble)).contiguous();
  const at::Tensor eps = shard(
      at::randn(x_all.sizes(), gen, at::TensorOptions().dtype(x_all.scalar_type())).to(x_all.device()));
  const at::Tensor w = shard((s.options.guidance_min + (s.options.guidance_max - s.options.guidance_min) *
                                                           at::rand({n_all}, s.rng.get("guidance"), at::kDouble))
                                 .to(x_all.options()));
  const at::Tensor x0 = shard(x_all);
  const int64_t n = x0.size(0);
  std::vector<double> alpha(n), sigma(n), t_in(n);
  const double* tp = t.data_ptr<double>();
  for (int64_t b = 0; b < n; ++b) {
    alpha[b] = s.schedule->alpha(tp[b]);
    sigma[b] = s.schedule->sigma(tp[b]);
    t_in[b] = network_time(*s.schedule, tp[b], s.options.time_input, s.options.time_scale);
  }
  std::vector<int64_t> bshape(static_cast<size_t>(x0.dim()), 1);
  bshape[0] = n;
  const at::Tensor z = x0 * at::tensor(alpha, at::kDouble).to(x0.options()).view(bshape) +
                       eps * at::tensor(sigma, at::kDouble).to(x0.options()).view(bshape);
  const at::Tensor t_input = at::tensor(t_in, at::kDouble).to(x0.options());

  at::Tensor target;
  {
    ScopedUnoptimizedExecutor guard;
    at::NoGradGuard no_grad;
    const at::Tensor both = forward_network(*s.teacher, at::cat({z, z}), at::cat({t_input, t_input}),
                                            at::cat({y, at::full_like(y, s.options.num_classes)}), {},
                                            "GuidanceDistillationTrainer teacher");
    const at::Tensor cond = both.narrow(0, 0, n), uncond = both.narrow(0, n, n);
    target = uncond + w.view(bshape) * (cond - uncond);
  }
  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    loss = (forward_network(*s.student, z, t_input, y, w, "GuidanceDistillationTrainer student") - target)
               .pow(2)
               .mean();
    loss.backward();
  }
  const double loss_value = average_loss(loss.item<double>());
  FEWSTEP_CHECK(std::isfinite(loss_value), "GuidanceDistillationTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ")");
  const Optimizer::Stats o = update(*s.optimizer, s.step);
  s.ema->update(*s.student);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm, {}};
}

Checkpoint GuidanceDistillationTrainer::state() const {
  Checkpoint c;
  save_training_parts(c, impl_->step, impl_->parts());
  return c;
}

void GuidanceDistillationTrainer::load_state(const Checkpoint& c) {
  impl_->step = load_training_parts(c, impl_->parts(), "GuidanceDistillationTrainer.load_checkpoint");
}

std::string GuidanceDistillationTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  j["t_min"] = s.t_min;
  j["t_max"] = s.t_max;
  j["schedule"] = s.schedule->repr();
  j["data"] = s.data->describe();
  return j.dump();
}

int64_t GuidanceDistillationTrainer::step_count() const { return impl_->step; }
int64_t GuidanceDistillationTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
const ScriptNet& GuidanceDistillationTrainer::student() const { return impl_->student; }
const ScriptNet& GuidanceDistillationTrainer::ema_student() const { return impl_->ema->module(); }
const GuidanceTrainerOptions& GuidanceDistillationTrainer::options() const { return impl_->options; }

}  // namespace fewstep
