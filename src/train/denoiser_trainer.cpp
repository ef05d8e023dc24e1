#include "fewstep/train/denoiser_trainer.h"

#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"

namespace fewstep {

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
  const DsmInputs in = dsm_inputs(x0, eps, t, *s.schedule, s.options.loss);
  const at::Tensor y = draw_labels(batch, s.options.conditioning, s.rng.get("labels"), x0.device(), "DenoiserTrainer");

  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    loss = dsm_loss(forward_network(*s.net, in.x_t, in.t_input, y, {}, "DenoiserTrainer"), in);
    loss.backward();
  }
  const double loss_value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(loss_value), "DenoiserTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ") or check the data");
  const Optimizer::Stats o = s.optimizer->step(s.step);
  s.ema->update(*s.net);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm, /*extra=*/{}};
}

Checkpoint DenoiserTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.set_string("config/prediction", to_string(s.options.loss.prediction));
  c.set_string("config/weighting", to_string(s.options.loss.weighting));
  c.set_string("config/data", s.data->describe());
  // Unconditional checkpoints carry no key, so those of earlier versions still load.
  if (s.options.conditioning.conditional()) c.set_int("config/num_classes", s.options.conditioning.num_classes);
  save_training_parts(c, s.step, s.parts());
  return c;
}

void DenoiserTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  constexpr const char* who = "DenoiserTrainer.load_checkpoint";
  check_setting(c, "prediction", to_string(s.options.loss.prediction), who);
  check_setting(c, "weighting", to_string(s.options.loss.weighting), who);
  const int64_t classes = c.contains("config/num_classes") ? c.integer("config/num_classes") : 0;
  FEWSTEP_CHECK_VALUE(classes == s.options.conditioning.num_classes, who, ": checkpoint '", c.source(),
                      "' was trained with num_classes = ", classes, ", this trainer uses ",
                      s.options.conditioning.num_classes);
  s.step = load_training_parts(c, s.parts(), who);
}

int64_t DenoiserTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
int64_t DenoiserTrainer::step_count() const { return impl_->step; }
const ScriptNet& DenoiserTrainer::net() const { return impl_->net; }
const ScriptNet& DenoiserTrainer::ema_net() const { return impl_->ema->module(); }
const DenoiserTrainerOptions& DenoiserTrainer::options() const { return impl_->options; }

}  // namespace fewstep
