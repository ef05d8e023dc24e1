#include "fewstep/train/classifier_trainer.h"

#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

namespace {

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

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  json_options::optimizer_fields(v, o.optimizer);
  v("flip", o.flip);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const ClassifierTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, ClassifierTrainerOptions& o) {
  json_options::read(json, o, "ClassifierTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
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
  // What the checkpoint stores besides the settings (train/trainer.h).
  TrainingParts parts() const { return {"model", net.get(), nullptr, optimizer.get(), const_cast<RngBundle*>(&rng), data.get()}; }
};

ClassifierTrainer::ClassifierTrainer(ScriptNet net, std::shared_ptr<BatchSource> data,
                                     ClassifierTrainerOptions options) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "ClassifierTrainer: net must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "ClassifierTrainer: data must not be null");
  FEWSTEP_CHECK_VALUE(net->find_method("forward").has_value(),
                      "ClassifierTrainer: net has no forward method; expected forward(x) -> logits");
  std::vector<at::Tensor> params = trainable_parameters(*net);
  FEWSTEP_CHECK_VALUE(!params.empty(), "ClassifierTrainer: net has no parameters that require grad");
  impl_ = std::make_unique<Impl>(std::move(net), std::move(data), std::move(options));
  impl_->optimizer = std::make_unique<Optimizer>(std::move(params), impl_->options.optimizer);
  impl_->net->train();
}

ClassifierTrainer::~ClassifierTrainer() = default;

TrainStepStats ClassifierTrainer::step() {
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
    ScopedUnoptimizedExecutor guard;
    const at::Tensor logits = logits_of(*s.net, x);
    loss = at::nll_loss(at::log_softmax(logits, 1), y);
    loss.backward();
    accuracy = logits.detach().argmax(1).eq(y).to(at::kDouble).mean().item<double>();
  }
  const double loss_value = loss.item<double>();
  FEWSTEP_CHECK(std::isfinite(loss_value), "ClassifierTrainer: loss is ", loss_value, " at step ", s.step,
                "; lower the learning rate (", s.options.optimizer.schedule.lr, ") or check the data");
  const Optimizer::Stats o = update(*s.optimizer, s.step);
  ++s.step;
  return {s.step, loss_value, o.lr, o.grad_norm, {{"accuracy", accuracy}}};
}

Checkpoint ClassifierTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  save_training_parts(c, s.step, s.parts());
  return c;
}

void ClassifierTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  s.step = load_training_parts(c, s.parts(), "ClassifierTrainer.load_checkpoint");
}

std::string ClassifierTrainer::options_json() const {
  auto j = json_options::json::parse(options_to_json(impl_->options));
  j["data"] = impl_->data->describe();
  return j.dump();
}

int64_t ClassifierTrainer::planned_steps() const { return impl_->options.optimizer.schedule.total_steps; }
int64_t ClassifierTrainer::step_count() const { return impl_->step; }
const ScriptNet& ClassifierTrainer::net() const { return impl_->net; }
const ClassifierTrainerOptions& ClassifierTrainer::options() const { return impl_->options; }

}  // namespace fewstep
