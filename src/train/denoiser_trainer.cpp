#include "fewstep/train/denoiser_trainer.h"

#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/progress_bar.h"
#include "fewstep/train/rng_bundle.h"

namespace fewstep {

namespace {

constexpr const char* kFormat = "fewstep.denoiser_trainer.v1";

// The profiling graph executor re-plans a method after warm-up runs; unoptimised, every call
// runs the same eager kernels, so step k is the same computation in a fresh (resumed) process.
struct UnoptimizedExecutor {
  bool previous = torch::jit::getGraphExecutorOptimize();
  UnoptimizedExecutor() { torch::jit::setGraphExecutorOptimize(false); }
  ~UnoptimizedExecutor() { torch::jit::setGraphExecutorOptimize(previous); }
};

std::vector<at::Tensor> trainable(const torch::jit::Module& m) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : m.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

}  // namespace

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
};

DenoiserTrainer::DenoiserTrainer(ScriptNet net, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                                 DenoiserTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "DenoiserTrainer: net must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "DenoiserTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "DenoiserTrainer: data must not be null");
  FEWSTEP_CHECK_VALUE(net->find_method("forward").has_value(),
                      "DenoiserTrainer: net has no forward method; expected forward(x, t) -> Tensor");
  options.loss.validate();
  FEWSTEP_CHECK_VALUE(options.checkpoint_every >= 0, "DenoiserTrainerOptions.checkpoint_every must be >= 0, got ",
                      options.checkpoint_every);
  impl_ = std::make_unique<Impl>(std::move(net), std::move(schedule), std::move(data), std::move(options));
  Impl& s = *impl_;
  s.t_min = s.options.t_min.value_or(s.schedule->t_min());
  s.t_max = s.options.t_max.value_or(s.schedule->t_max());
  s.schedule->check_time(s.t_min, "DenoiserTrainerOptions.t_min");
  s.schedule->check_time(s.t_max, "DenoiserTrainerOptions.t_max");
  FEWSTEP_CHECK_VALUE(s.t_min < s.t_max, "DenoiserTrainerOptions: need t_min < t_max, got t_min = ", s.t_min,
                      ", t_max = ", s.t_max);
  std::vector<at::Tensor> params = trainable(*s.net);
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

  at::Tensor loss;
  {
    UnoptimizedExecutor guard;
    const c10::IValue out = s.net->forward({in.x_t, in.t_input});
    FEWSTEP_CHECK_TYPE(out.isTensor(), "DenoiserTrainer: net.forward(x, t) returned ", out.tagKind(),
                       ", expected a Tensor");
    loss = dsm_loss(out.toTensor(), in);
    loss.backward();
  }
  const double loss_value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(loss_value), "DenoiserTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ") or check the data");
  const Optimizer::Stats o = s.optimizer->step(s.step);
  s.ema->update(*s.net);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm};
}

TrainSummary DenoiserTrainer::train(int64_t steps) {
  FEWSTEP_CHECK_VALUE(steps >= 0, "DenoiserTrainer.train: steps must be >= 0, got ", steps);
  Impl& s = *impl_;
  TrainSummary summary;
  summary.first_step = s.step;
  summary.losses.reserve(static_cast<size_t>(steps));
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(steps, "train", s.options.progress);
  double smoothed = NAN;
  bool saved_last = false;
  for (int64_t i = 0; i < steps; ++i) {
    const TrainStepStats st = step();
    summary.losses.push_back(st.loss);
    // The bar shows a smoothed loss: single-batch DSM losses are noisy.
    smoothed = std::isnan(smoothed) ? st.loss : 0.95 * smoothed + 0.05 * st.loss;
    bar.update(i + 1, {{"loss", smoothed}, {"lr", st.lr}});
    saved_last = false;
    if (!s.options.checkpoint_path.empty() && s.options.checkpoint_every > 0 &&
        st.step % s.options.checkpoint_every == 0) {
      save_checkpoint(s.options.checkpoint_path);
      saved_last = true;
    }
  }
  bar.close();
  if (!s.options.checkpoint_path.empty() && !saved_last && steps > 0) save_checkpoint(s.options.checkpoint_path);
  summary.last_step = s.step;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

void DenoiserTrainer::save_checkpoint(const std::string& path) const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.set_string("format", kFormat);
  c.set_int("step", s.step);
  c.set_string("config/prediction", to_string(s.options.loss.prediction));
  c.set_string("config/weighting", to_string(s.options.loss.weighting));
  c.set_string("config/data", s.data->describe());
  save_module_state(c, "model", *s.net);
  s.ema->save(c, "ema");
  s.optimizer->save(c, "optimizer");
  s.rng.save(c, "rng");
  for (const auto& [key, value] : s.data->state()) c.set_tensor("data/" + key, value);
  c.save(path);
}

void DenoiserTrainer::load_checkpoint(const std::string& path) {
  Impl& s = *impl_;
  const Checkpoint c = Checkpoint::load(path);
  FEWSTEP_CHECK_VALUE(c.contains("format") && c.string("format") == kFormat, "DenoiserTrainer.load_checkpoint: path '",
                      path, "' is not a denoiser-trainer checkpoint (format '",
                      c.contains("format") ? c.string("format") : std::string("none"), "', expected '", kFormat, "')");
  for (const auto& [key, mine] :
       {std::pair<std::string, std::string>{"prediction", to_string(s.options.loss.prediction)},
        {"weighting", to_string(s.options.loss.weighting)}}) {
    const std::string& theirs = c.string("config/" + key);
    FEWSTEP_CHECK_VALUE(theirs == mine, "DenoiserTrainer.load_checkpoint: path '", path, "' was trained with ", key,
                        " '", theirs, "', this trainer uses '", mine, "'");
  }
  const int64_t step = c.integer("step");
  FEWSTEP_CHECK_VALUE(step >= 0, "DenoiserTrainer.load_checkpoint: path '", path, "' has step ", step);
  load_module_state(c, "model", *s.net);
  s.ema->load(c, "ema");
  s.optimizer->load(c, "optimizer");
  s.rng.load(c, "rng");
  BatchSource::State data;
  for (const std::string& key : c.tensor_keys("data/")) data[key.substr(5)] = c.tensor(key);
  s.data->load_state(data);
  s.step = step;
}

bool DenoiserTrainer::resume(const std::string& path) {
  if (!std::ifstream(path).good()) return false;
  load_checkpoint(path);
  return true;
}

int64_t DenoiserTrainer::step_count() const { return impl_->step; }
const ScriptNet& DenoiserTrainer::net() const { return impl_->net; }
const ScriptNet& DenoiserTrainer::ema_net() const { return impl_->ema->module(); }
const DenoiserTrainerOptions& DenoiserTrainer::options() const { return impl_->options; }

}  // namespace fewstep
