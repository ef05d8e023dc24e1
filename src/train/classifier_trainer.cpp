#include "fewstep/train/classifier_trainer.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/progress_bar.h"
#include "fewstep/train/rng_bundle.h"

namespace fewstep {

namespace {

constexpr const char* kFormat = "fewstep.classifier_trainer.v1";

// As in DenoiserTrainer: unoptimised, every call runs the same kernels, so a resumed process
// computes step k exactly as an uninterrupted one.
struct UnoptimizedExecutor {
  bool previous = torch::jit::getGraphExecutorOptimize();
  UnoptimizedExecutor() { torch::jit::setGraphExecutorOptimize(false); }
  ~UnoptimizedExecutor() { torch::jit::setGraphExecutorOptimize(previous); }
};

at::Tensor logits_of(const torch::jit::Module& net, const at::Tensor& x) {
  const c10::IValue out = net.get_method("forward")({x});
  FEWSTEP_CHECK_TYPE(out.isTensor(), "classifier forward(x) returned ", out.tagKind(), ", expected a Tensor");
  at::Tensor logits = out.toTensor();
  FEWSTEP_CHECK_VALUE(logits.dim() == 2 && logits.size(0) == x.size(0),
                      "classifier forward(x) should return logits [B, classes] with B = ", x.size(0), ", got ",
                      logits.sizes());
  return logits;
}

}  // namespace

ClassifierScore score_classifier(const torch::jit::Module& net, const at::Tensor& images, const at::Tensor& labels,
                                 int64_t batch) {
  FEWSTEP_CHECK_VALUE(images.defined() && images.dim() >= 2 && images.size(0) >= 1,
                      "score_classifier: images should be a non-empty [N, ...] tensor, got ",
                      images.defined() ? images.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(labels.defined() && labels.dim() == 1 && labels.size(0) == images.size(0),
                      "score_classifier: labels should have shape [", images.size(0), "], got ",
                      labels.defined() ? labels.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_VALUE(batch >= 1, "score_classifier: batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(net.find_method("forward").has_value(), "score_classifier: net has no forward method");
  c10::InferenceMode guard;
  const int64_t n = images.size(0);
  int64_t correct = 0;
  double loss_sum = 0.0;
  const at::Tensor targets = labels.to(at::kLong);
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t m = std::min(batch, n - start);
    const at::Tensor logits = logits_of(net, images.narrow(0, start, m).to(at::kFloat)).to(at::kDouble);
    const at::Tensor y = targets.narrow(0, start, m).to(logits.device());
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    loss_sum += at::nll_loss(at::log_softmax(logits, 1), y, {}, at::Reduction::Sum).item<double>();
  }
  return {n, static_cast<double>(correct) / static_cast<double>(n), loss_sum / static_cast<double>(n)};
}

struct ClassifierTrainer::Impl {
  ScriptNet net;
  std::shared_ptr<BatchSource> data;
  ClassifierTrainerOptions options;
  std::unique_ptr<Optimizer> optimizer;
  RngBundle rng;
  int64_t step = 0;

  Impl(ScriptNet n, std::shared_ptr<BatchSource> d, ClassifierTrainerOptions o)
      : net(std::move(n)), data(std::move(d)), options(std::move(o)), rng(options.seed) {}
};

ClassifierTrainer::ClassifierTrainer(ScriptNet net, std::shared_ptr<BatchSource> data,
                                     ClassifierTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "ClassifierTrainer: net must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "ClassifierTrainer: data must not be null");
  FEWSTEP_CHECK_VALUE(net->find_method("forward").has_value(),
                      "ClassifierTrainer: net has no forward method; expected forward(x) -> logits");
  FEWSTEP_CHECK_VALUE(options.checkpoint_every >= 0, "ClassifierTrainerOptions.checkpoint_every must be >= 0, got ",
                      options.checkpoint_every);
  std::vector<at::Tensor> params;
  for (const at::Tensor& p : net->parameters(/*recurse=*/true)) {
    if (p.requires_grad()) params.push_back(p);
  }
  FEWSTEP_CHECK_VALUE(!params.empty(), "ClassifierTrainer: net has no parameters that require grad");
  impl_ = std::make_unique<Impl>(std::move(net), std::move(data), std::move(options));
  impl_->optimizer = std::make_unique<Optimizer>(std::move(params), impl_->options.optimizer);
  impl_->net->train();
}

ClassifierTrainer::~ClassifierTrainer() = default;

ClassifierStepStats ClassifierTrainer::step() {
  Impl& s = *impl_;
  const at::Tensor& first = s.optimizer->parameters().front();
  const Batch batch = s.data->next();
  FEWSTEP_CHECK_VALUE(batch.x.defined() && batch.x.dim() == 4, "ClassifierTrainer: data source ",
                      s.data->describe(), " returned a batch that is not a [B, C, H, W] tensor");
  FEWSTEP_CHECK_VALUE(batch.labels.defined() && batch.labels.dim() == 1 && batch.labels.size(0) == batch.x.size(0),
                      "ClassifierTrainer: data source ", s.data->describe(), " returned no labels [B]");
  at::Tensor x = batch.x.to(first.device(), first.scalar_type());
  const at::Tensor y = batch.labels.to(first.device(), at::kLong);
  if (s.options.flip) {
    // One host draw per image, from the run's own generator: the same flips on any device.
    const at::Tensor flip = (at::rand({x.size(0)}, s.rng.get("augment"), at::kDouble) < 0.5).to(x.device());
    x = at::where(flip.view({-1, 1, 1, 1}), x.flip({3}), x);
  }

  at::Tensor loss;
  double accuracy = 0.0;
  {
    UnoptimizedExecutor guard;
    const at::Tensor logits = logits_of(*s.net, x);
    loss = at::nll_loss(at::log_softmax(logits, 1), y);
    loss.backward();
    accuracy = logits.detach().argmax(1).eq(y).to(at::kDouble).mean().item<double>();
  }
  const double loss_value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(loss_value), "ClassifierTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ") or check the data");
  const Optimizer::Stats o = s.optimizer->step(s.step);
  ++s.step;
  return {s.step, loss_value, accuracy, o.lr, o.grad_norm};
}

TrainSummary ClassifierTrainer::train(int64_t steps) {
  FEWSTEP_CHECK_VALUE(steps >= 0, "ClassifierTrainer.train: steps must be >= 0, got ", steps);
  Impl& s = *impl_;
  TrainSummary summary;
  summary.first_step = s.step;
  summary.losses.reserve(static_cast<size_t>(steps));
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(steps, "train", s.options.progress);
  double loss = NAN, acc = NAN;
  bool saved_last = false;
  for (int64_t i = 0; i < steps; ++i) {
    const ClassifierStepStats st = step();
    summary.losses.push_back(st.loss);
    loss = std::isnan(loss) ? st.loss : 0.98 * loss + 0.02 * st.loss;
    acc = std::isnan(acc) ? st.accuracy : 0.98 * acc + 0.02 * st.accuracy;
    bar.update(i + 1, {{"loss", loss}, {"acc", acc}, {"lr", st.lr}});
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

void ClassifierTrainer::save_checkpoint(const std::string& path) const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.set_string("format", kFormat);
  c.set_int("step", s.step);
  c.set_int("config/flip", s.options.flip ? 1 : 0);
  c.set_string("config/data", s.data->describe());
  save_module_state(c, "model", *s.net);
  s.optimizer->save(c, "optimizer");
  s.rng.save(c, "rng");
  for (const auto& [key, value] : s.data->state()) c.set_tensor("data/" + key, value);
  c.save(path);
}

void ClassifierTrainer::load_checkpoint(const std::string& path) {
  Impl& s = *impl_;
  const Checkpoint c = Checkpoint::load(path);
  FEWSTEP_CHECK_VALUE(c.contains("format") && c.string("format") == kFormat,
                      "ClassifierTrainer.load_checkpoint: path '", path,
                      "' is not a classifier-trainer checkpoint (format '",
                      c.contains("format") ? c.string("format") : std::string("none"), "', expected '", kFormat,
                      "')");
  const int64_t step = c.integer("step");
  FEWSTEP_CHECK_VALUE(step >= 0, "ClassifierTrainer.load_checkpoint: path '", path, "' has step ", step);
  load_module_state(c, "model", *s.net);
  s.optimizer->load(c, "optimizer");
  s.rng.load(c, "rng");
  BatchSource::State data;
  for (const std::string& key : c.tensor_keys("data/")) data[key.substr(5)] = c.tensor(key);
  s.data->load_state(data);
  s.step = step;
}

bool ClassifierTrainer::resume(const std::string& path) {
  if (!std::ifstream(path).good()) return false;
  load_checkpoint(path);
  return true;
}

int64_t ClassifierTrainer::step_count() const { return impl_->step; }
const ScriptNet& ClassifierTrainer::net() const { return impl_->net; }
const ClassifierTrainerOptions& ClassifierTrainer::options() const { return impl_->options; }

}  // namespace fewstep
