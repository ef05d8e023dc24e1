#include "fewstep/psld/training.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"
#include "fewstep/psld/hsm_loss.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/checkpoint.h"

namespace fewstep {

void PsldTrainOptions::validate() const {
  FEWSTEP_CHECK_VALUE(steps > 0, "PsldTrainOptions.steps must be positive, got ", steps);
  FEWSTEP_CHECK_VALUE(lr > 0, "PsldTrainOptions.lr must be positive, got ", lr);
  FEWSTEP_CHECK_VALUE(warmup >= 0, "PsldTrainOptions.warmup must be >= 0, got ", warmup);
  FEWSTEP_CHECK_VALUE(ema >= 0 && ema <= 1, "PsldTrainOptions.ema must be in [0, 1], got ", ema);
}

struct PsldTrainer::Impl {
  ScriptNet network;
  std::shared_ptr<BatchSource> data;
  PsldProcess process;
  PsldTrainOptions options;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  at::Generator generator;
  int64_t step = 0;
  Impl(ScriptNet n, std::shared_ptr<BatchSource> d, PsldProcess p, PsldTrainOptions o)
      : network(std::move(n)), data(std::move(d)), process(std::move(p)), options(std::move(o)),
        generator(at::make_generator<at::CPUGeneratorImpl>(options.seed)) {}
};

PsldTrainer::PsldTrainer(ScriptNet network, std::shared_ptr<BatchSource> data, PsldProcess process,
                         PsldTrainOptions options) {
  options.validate();
  FEWSTEP_CHECK_VALUE(network != nullptr, "PsldTrainer: network must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "PsldTrainer: data must not be null");
  impl_ = std::make_unique<Impl>(std::move(network), std::move(data), std::move(process), std::move(options));
  Impl& s = *impl_;
  OptimizerOptions oo;
  oo.schedule.lr = s.options.lr;
  oo.schedule.warmup_steps = s.options.warmup;
  oo.schedule.total_steps = s.options.steps;
  oo.schedule.min_lr = s.options.min_lr;
  oo.grad_clip = s.options.grad_clip;
  s.optimizer = std::make_unique<Optimizer>(trainable_parameters(*s.network), oo);
  s.ema = std::make_unique<Ema>(*s.network, s.options.ema);
  s.network->train();
}

PsldTrainer::~PsldTrainer() = default;

TrainStepStats PsldTrainer::step() {
  Impl& s = *impl_;
  ScopedUnoptimizedExecutor unoptimized;
  const at::Tensor x0 = s.data->next().x;
  const HsmInputs in = hsm_inputs(s.process, x0, s.generator);
  const at::Tensor pred = forward_network(*s.network, in.z_t, in.t, at::Tensor(), at::Tensor(), "PsldTrainer");
  const at::Tensor loss = hsm_loss(pred, in);
  loss.backward();
  const double value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(value), "PsldTrainer: loss is ", value, " at step ", s.step, "; lower the learning rate (",
                s.options.lr, ")");
  const Optimizer::Stats o = s.optimizer->step(s.step);
  s.ema->update(*s.network);
  s.step += 1;
  return {s.step, value, o.lr, o.grad_norm, {}};
}

Checkpoint PsldTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  save_training_parts(c, s.step, {"model", s.network.get(), s.ema.get(), s.optimizer.get(), nullptr, s.data.get()});
  at::Generator gen = s.generator;
  std::lock_guard<std::mutex> lock(gen.mutex());
  c.set_tensor("rng/hsm", gen.get_state());
  return c;
}

void PsldTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  constexpr const char* who = "PsldTrainer.load_checkpoint";
  s.step = load_training_parts(c, {"model", s.network.get(), s.ema.get(), s.optimizer.get(), nullptr, s.data.get()},
                               who);
  std::lock_guard<std::mutex> lock(s.generator.mutex());
  s.generator.set_state(c.tensor("rng/hsm"));
}

std::string PsldTrainer::options_json() const {
  const Impl& s = *impl_;
  const PsldTrainOptions& o = s.options;
  return nlohmann::json{{"steps", o.steps},   {"lr", o.lr},     {"warmup", o.warmup}, {"min_lr", o.min_lr},
                        {"ema", o.ema},       {"grad_clip", o.grad_clip}, {"seed", o.seed},
                        {"data", s.data->describe()}}
      .dump();
}

int64_t PsldTrainer::step_count() const { return impl_->step; }
int64_t PsldTrainer::planned_steps() const { return impl_->options.steps; }
const ScriptNet& PsldTrainer::export_net() const { return impl_->ema->module(); }

PsldTrainResult train_psld(const ScriptNet& network, BatchSource& data, const PsldProcess& process,
                           const PsldTrainOptions& options, const std::function<void(int64_t, double)>& on_step) {
  FEWSTEP_CHECK_VALUE(network != nullptr, "train_psld: network must not be null");
  // The caller owns `data`: a non-owning pointer for the trainer.
  PsldTrainer trainer(network, std::shared_ptr<BatchSource>(&data, [](BatchSource*) {}), process, options);
  TrainLoopOptions loop;
  loop.progress = false;
  if (on_step) loop.on_step = [&](const TrainStepStats& st) { on_step(st.step - 1, st.loss); };
  const TrainSummary summary = trainer.train(options.steps, loop);
  network->eval();
  trainer.export_net()->eval();
  PsldTrainResult result;
  result.losses = summary.losses;
  result.ema = trainer.export_net();
  result.seconds = summary.seconds;
  return result;
}

}  // namespace fewstep
