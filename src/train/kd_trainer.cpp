#include "fewstep/train/kd_trainer.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/sample/sample.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

void KdTrainerOptions::validate() const {
  FEWSTEP_CHECK_VALUE(timesteps.size() >= 2, "KdTrainerOptions.timesteps needs >= 2 times (N + 1 for N steps), got ",
                      timesteps.size());
  for (size_t i = 1; i < timesteps.size(); ++i)
    FEWSTEP_CHECK_VALUE(timesteps[i] < timesteps[i - 1], "KdTrainerOptions.timesteps must decrease, got t[", i - 1,
                        "] = ", timesteps[i - 1], ", t[", i, "] = ", timesteps[i]);
  FEWSTEP_CHECK_VALUE(batch >= 1, "KdTrainerOptions.batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale > 0.0, "KdTrainerOptions.time_scale must be positive, got ",
                      time_scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(ema_decay) && ema_decay >= 0.0 && ema_decay <= 1.0,
                      "KdTrainerOptions.ema_decay must be in [0, 1], got ", ema_decay);
  optimizer.schedule.validate();
}

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("timesteps", o.timesteps);
  v("student_prediction", o.student_prediction);
  v("time_input", o.time_input);
  v("time_scale", o.time_scale);
  v("batch", o.batch);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const KdTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, KdTrainerOptions& o) {
  json_options::read(json, o, "KdTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

struct KnowledgeDistillationTrainer::Impl {
  ScriptNet student;
  SchedulePtr schedule;
  RolloutPairs pairs;
  KdTrainerOptions options;
  std::unique_ptr<ShuffledBatches> order;  // shuffled pair indices
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  std::shared_ptr<const Stepper> ddim = solver("ddim");
  RngBundle rng;
  int64_t step = 0;
  Impl(KdTrainerOptions o) : options(std::move(o)), rng(options.seed) {}
  // What the checkpoint stores besides the settings (train/trainer.h).
  TrainingParts parts() const { return {"student", student.get(), ema.get(), optimizer.get(), const_cast<RngBundle*>(&rng), order.get()}; }
};

KnowledgeDistillationTrainer::KnowledgeDistillationTrainer(ScriptNet student, SchedulePtr schedule, RolloutPairs pairs,
                                                           KdTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(student != nullptr, "KnowledgeDistillationTrainer: student must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "KnowledgeDistillationTrainer: schedule must not be null");
  options.validate();
  FEWSTEP_CHECK_VALUE(pairs.x_T.defined() && pairs.x_0.defined() && pairs.x_T.sizes() == pairs.x_0.sizes(),
                      "KnowledgeDistillationTrainer: pairs.x_T and pairs.x_0 must be tensors of one shape");
  const int64_t n = pairs.x_T.size(0);
  FEWSTEP_CHECK_VALUE(n >= options.batch, "KnowledgeDistillationTrainer: ", n, " pairs are fewer than batch = ",
                      options.batch);
  impl_ = std::make_unique<Impl>(std::move(options));
  Impl& s = *impl_;
  s.student = std::move(student);
  s.schedule = std::move(schedule);
  s.pairs = std::move(pairs);
  validate_grid(*s.schedule, s.options.timesteps);
  // Batches of indices: the "labels" of ShuffledBatches carry the pair index.
  s.order = std::make_unique<ShuffledBatches>(at::zeros({n, 1}), at::arange(n, at::kLong), s.options.batch,
                                              s.options.seed ^ 0x6b64ull);
  std::vector<at::Tensor> params = trainable_parameters(*s.student);
  FEWSTEP_CHECK_VALUE(!params.empty(), "KnowledgeDistillationTrainer: the student has no parameters that require grad");
  s.optimizer = std::make_unique<Optimizer>(std::move(params), s.options.optimizer);
  s.ema = std::make_unique<Ema>(*s.student, s.options.ema_decay);
  s.student->train();
}

KnowledgeDistillationTrainer::~KnowledgeDistillationTrainer() = default;

Denoiser KnowledgeDistillationTrainer::student_denoiser(const ScriptNet& net, const at::Tensor& y) const {
  const Impl& s = *impl_;
  Denoiser::Network fn = [net, y](const at::Tensor& x, const at::Tensor& t) {
    return forward_network(*net, x, t, y, {}, "KnowledgeDistillationTrainer student");
  };
  return Denoiser(std::move(fn), s.schedule, s.options.student_prediction, s.options.time_input, s.options.time_scale);
}

TrainStepStats KnowledgeDistillationTrainer::step() {
  Impl& s = *impl_;
  const at::Tensor& first = s.optimizer->parameters().front();
  // With data parallelism this process trains on its rows of the batch.
  const at::Tensor index = shard(s.order->next().labels);
  const at::Tensor x_T = s.pairs.x_T.index_select(0, index).to(first.device(), first.scalar_type());
  const at::Tensor x_0 = s.pairs.x_0.index_select(0, index).to(first.device(), first.scalar_type());
  const at::Tensor y = s.pairs.labels.defined() ? s.pairs.labels.index_select(0, index).to(first.device()) : at::Tensor();

  SampleOptions so;
  so.inference_mode = false;  // gradients flow through every student step
  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    const at::Tensor out = sample(student_denoiser(s.student, y), x_T, *s.ddim, s.options.timesteps, so).x;
    loss = (out - x_0).pow(2).mean();
    loss.backward();
  }
  const double loss_value = average_loss(loss.item<double>());
  FEWSTEP_CHECK(std::isfinite(loss_value), "KnowledgeDistillationTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ")");
  const Optimizer::Stats o = update(*s.optimizer, s.step);
  s.ema->update(*s.student);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm, {}};
}

Checkpoint KnowledgeDistillationTrainer::state() const {
  Checkpoint c;
  save_training_parts(c, impl_->step, impl_->parts());
  return c;
}

void KnowledgeDistillationTrainer::load_state(const Checkpoint& c) {
  impl_->step = load_training_parts(c, impl_->parts(), "KnowledgeDistillationTrainer.load_checkpoint");
}

std::string KnowledgeDistillationTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  j["schedule"] = s.schedule->repr();
  j["pairs"] = s.pairs.settings;
  j["pair_count"] = s.pairs.x_T.size(0);
  return j.dump();
}

int64_t KnowledgeDistillationTrainer::step_count() const { return impl_->step; }
int64_t KnowledgeDistillationTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
const ScriptNet& KnowledgeDistillationTrainer::student() const { return impl_->student; }
const ScriptNet& KnowledgeDistillationTrainer::ema_student() const { return impl_->ema->module(); }
const KdTrainerOptions& KnowledgeDistillationTrainer::options() const { return impl_->options; }

}  // namespace fewstep
