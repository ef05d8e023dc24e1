#include "fewstep/train/optimizer.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"
#include "options_json.h"

namespace fewstep {

namespace {

torch::optim::AdamWParamState* state_of(torch::optim::AdamW& opt, const at::Tensor& p) {
  auto& states = opt.state();
  const auto it = states.find(p.unsafeGetTensorImpl());
  return it == states.end() ? nullptr : static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

}  // namespace

std::string options_to_json(const OptimizerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { json_options::optimizer_fields(v, x); });
}

void options_from_json(const std::string& json, OptimizerOptions& o) {
  json_options::read(json, o, "OptimizerOptions", [](auto& v, auto& x) { json_options::optimizer_fields(v, x); });
}

Optimizer::Optimizer(std::vector<at::Tensor> parameters, OptimizerOptions options)
    : parameters_(std::move(parameters)), options_(options) {
  options_.schedule.validate();
  FEWSTEP_CHECK_VALUE(!parameters_.empty(), "Optimizer: parameters must not be empty");
  for (size_t i = 0; i < parameters_.size(); ++i) {
    FEWSTEP_CHECK_VALUE(parameters_[i].requires_grad(), "Optimizer: parameters[", i, "] does not require grad");
  }
  FEWSTEP_CHECK_VALUE(options_.beta1 >= 0.0 && options_.beta1 < 1.0, "OptimizerOptions.beta1 must be in [0, 1), got ",
                      options_.beta1);
  FEWSTEP_CHECK_VALUE(options_.beta2 >= 0.0 && options_.beta2 < 1.0, "OptimizerOptions.beta2 must be in [0, 1), got ",
                      options_.beta2);
  FEWSTEP_CHECK_VALUE(std::isfinite(options_.eps) && options_.eps > 0.0,
                      "OptimizerOptions.eps must be finite and positive, got ", options_.eps);
  FEWSTEP_CHECK_VALUE(std::isfinite(options_.weight_decay) && options_.weight_decay >= 0.0,
                      "OptimizerOptions.weight_decay must be finite and >= 0, got ", options_.weight_decay);
  FEWSTEP_CHECK_VALUE(!std::isnan(options_.grad_clip), "OptimizerOptions.grad_clip must not be NaN");
  torch::optim::AdamWOptions o(options_.schedule.at(0));
  o.betas({options_.beta1, options_.beta2}).eps(options_.eps).weight_decay(options_.weight_decay);
  adamw_ = std::make_unique<torch::optim::AdamW>(parameters_, o);
}

Optimizer::~Optimizer() = default;

Optimizer::Stats Optimizer::step(int64_t step) {
  Stats stats{options_.schedule.at(step), 0.0};
  for (auto& group : adamw_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(stats.lr);
  if (options_.grad_clip > 0.0) {
    stats.grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, options_.grad_clip);
  } else {
    double sq = 0.0;
    for (const at::Tensor& p : parameters_) {
      if (p.grad().defined()) sq += p.grad().detach().pow(2).sum().item<double>();
    }
    stats.grad_norm = std::sqrt(sq);
  }
  adamw_->step();
  zero_grad();
  return stats;
}

void Optimizer::zero_grad() { adamw_->zero_grad(/*set_to_none=*/true); }

void Optimizer::save(Checkpoint& checkpoint, const std::string& prefix) const {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const auto* s = state_of(*adamw_, parameters_[i]);
    if (s == nullptr) continue;  // no step taken yet for this parameter
    const std::string key = prefix + "/" + std::to_string(i);
    checkpoint.set_int(key + "/step", s->step());
    checkpoint.set_tensor(key + "/exp_avg", s->exp_avg());
    checkpoint.set_tensor(key + "/exp_avg_sq", s->exp_avg_sq());
  }
  checkpoint.set_int(prefix + "/count", static_cast<int64_t>(parameters_.size()));
}

void Optimizer::load(const Checkpoint& checkpoint, const std::string& prefix) {
  const int64_t count = checkpoint.integer(prefix + "/count");
  FEWSTEP_CHECK_VALUE(count == static_cast<int64_t>(parameters_.size()), "Optimizer.load: checkpoint '",
                      checkpoint.source(), "' has state for ", count, " parameters, this optimiser has ",
                      parameters_.size());
  auto& states = adamw_->state();
  states.clear();
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string key = prefix + "/" + std::to_string(i);
    if (!checkpoint.contains(key + "/step")) continue;
    const at::Tensor& p = parameters_[i];
    const at::Tensor& m = checkpoint.tensor(key + "/exp_avg");
    const at::Tensor& v = checkpoint.tensor(key + "/exp_avg_sq");
    FEWSTEP_CHECK_VALUE(m.sizes() == p.sizes() && v.sizes() == p.sizes(), "Optimizer.load: checkpoint '",
                        checkpoint.source(), "' state of parameter #", i, " has shape ", m.sizes(),
                        ", the parameter has ", p.sizes());
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(checkpoint.integer(key + "/step"));
    s->exp_avg(m.to(p.options(), /*non_blocking=*/false, /*copy=*/true));
    s->exp_avg_sq(v.to(p.options(), /*non_blocking=*/false, /*copy=*/true));
    states[p.unsafeGetTensorImpl()] = std::move(s);
  }
}

}  // namespace fewstep
