#include "fewstep/train/denoiser_trainer.h"

#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

static void parse_enum(const std::string& name, LossWeighting& out) { out = parse_loss_weighting(name); }

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("prediction", o.loss.prediction);
  v("time_input", o.loss.time_input);
  v("time_scale", o.loss.time_scale);
  v("weighting", o.loss.weighting);
  v("min_snr_gamma", o.loss.min_snr_gamma);
  v("t_min", o.t_min);
  v("t_max", o.t_max);
  json_options::conditioning_fields(v, o.conditioning);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const DenoiserTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, DenoiserTrainerOptions& o) {
  json_options::read(json, o, "DenoiserTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

struct DenoiserTrainer::Impl {
  ScriptNet net;
  SchedulePtr schedule;
  std::shared_ptr<BatchSource> data;
  DenoiserTrainerOptions options;
  double t_min = 0.0, t_max = 0.0;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  RngBundle rng;
  int64_t step = 0;

  Impl(ScriptNet n, SchedulePtr s, std::shared_ptr<BatchSource> d, DenoiserTrainerOptions o)
      : net(std::move(n)), schedule(std::move(s)), data(std::move(d)), options(std::move(o)), rng(options.seed) {}
  // What the checkpoint stores besides the settings (train/trainer.h).
  TrainingParts parts() const { return {"model", net.get(), ema.get(), optimizer.get(), const_cast<RngBundle*>(&rng), data.get()}; }
};

DenoiserTrainer::DenoiserTrainer(ScriptNet net, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                                 DenoiserTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "DenoiserTrainer: net must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "DenoiserTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "DenoiserTrainer: data must not be null");
  FEWSTEP_CHECK_VALUE(net->find_method("forward").has_value(),
                      "DenoiserTrainer: net has no forward method; expected forward(x, t) -> Tensor");
  options.loss.validate();
  options.conditioning.validate();
  impl_ = std::make_unique<Impl>(std::move(net), std::move(schedule), std::move(data), std::move(options));
  Impl& s = *impl_;
  s.t_min = s.options.t_min.value_or(s.schedule->t_min());
  s.t_max = s.options.t_max.value_or(s.schedule->t_max());
  s.schedule->check_time(s.t_min, "DenoiserTrainerOptions.t_min");
  s.schedule->check_time(s.t_max, "DenoiserTrainerOptions.t_max");
  FEWSTEP_CHECK_VALUE(s.t_min < s.t_max, "DenoiserTrainerOptions: need t_min < t_max, got t_min = ", s.t_min,
                      ", t_max = ", s.t_max);
  std::vector<at::Tensor> params = trainable_parameters(*s.net);
  FEWSTEP_CHECK_VALUE(!params.empty(), "DenoiserTrainer: net has no parameters that require grad");
  s.optimizer = std::make_unique<Optimizer>(std::move(params), s.options.optimizer);
  s.ema = std::make_unique<Ema>(*s.net, s.options.ema_decay);
  s.net->train();
}

DenoiserTrainer::~DenoiserTrainer() = default;

TrainStepStats DenoiserTrainer::step() {
  Impl& s = *impl_;
  const at::Tensor& first = s.optimizer->parameters().front();
  Batch batch = s.data->next();
  FEWSTEP_CHECK_VALUE(batch.x.defined() && batch.x.dim() >= 2, "DenoiserTrainer: data source ", s.data->describe(),
                      " returned a batch that is not a [B, ...] tensor");
  const at::Tensor x0 = batch.x.to(first.device(), first.scalar_type());

  // All draws on the host from the run's own generator: the same numbers on any device.
  at::Generator& gen = s.rng.get("noise");
  const int64_t n = x0.size(0);
  const at::Tensor t = s.t_min + (s.t_max - s.t_min) * at::rand({n}, gen, at::kDouble);
  const at::Tensor eps = at::randn(x0.sizes(), gen, at::TensorOptions().dtype(x0.scalar_type())).to(x0.device());
  at::Tensor y = draw_labels(batch, s.options.conditioning, s.rng.get("labels"), x0.device(), "DenoiserTrainer");
  // Drawn for the whole batch; with data parallelism this process trains on its rows.
  const DsmInputs in = dsm_inputs(shard(x0), shard(eps), shard(t), *s.schedule, s.options.loss);
  if (y.defined()) y = shard(y);

  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    loss = dsm_loss(forward_network(*s.net, in.x_t, in.t_input, y, {}, "DenoiserTrainer"), in);
    loss.backward();
  }
  const double loss_value = average_loss(loss.item<double>());
  FEWSTEP_CHECK(std::isfinite(loss_value), "DenoiserTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ") or check the data");
  const Optimizer::Stats o = update(*s.optimizer, s.step);
  s.ema->update(*s.net);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm, /*extra=*/{}};
}

Checkpoint DenoiserTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  save_training_parts(c, s.step, s.parts());
  return c;
}

void DenoiserTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  s.step = load_training_parts(c, s.parts(), "DenoiserTrainer.load_checkpoint");
}

std::string DenoiserTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  j["t_min"] = s.t_min;
  j["t_max"] = s.t_max;
  j["schedule"] = s.schedule->repr();
  j["data"] = s.data->describe();
  return j.dump();
}

int64_t DenoiserTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
int64_t DenoiserTrainer::step_count() const { return impl_->step; }
const ScriptNet& DenoiserTrainer::net() const { return impl_->net; }
const ScriptNet& DenoiserTrainer::ema_net() const { return impl_->ema->module(); }
const DenoiserTrainerOptions& DenoiserTrainer::options() const { return impl_->options; }

}  // namespace fewstep
