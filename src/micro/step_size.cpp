#include "fewstep/micro/step_size.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <sstream>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// The 1e-12 keeps the square root differentiable at 0.
at::Tensor rms_per_sample(const at::Tensor& v) { return (v.reshape({v.size(0), -1}).pow(2).mean(1) + 1e-12).sqrt(); }

}  // namespace

at::Tensor step_size_features(const at::Tensor& x, const at::Tensor& e, const at::Tensor& lambda, double lambda_start,
                              double lambda_end, int64_t index, int64_t budget) {
  const int64_t n = x.size(0);
  const auto opts = x.options();
  const at::Tensor change = e.defined() ? rms_per_sample(e) : at::zeros({n}, opts);
  const at::Tensor progress = ((lambda - lambda_start) / (lambda_end - lambda_start)).to(x.scalar_type());
  const double k = static_cast<double>(budget - index);
  return at::stack({progress.reshape({1}).expand({n}), at::full({n}, static_cast<double>(index) / budget, opts),
                    at::full({n}, 1.0 / k, opts), at::log(change + 1e-6) / 10.0, rms_per_sample(x)},
                   1);
}

at::Tensor propose_step(const torch::jit::Module* head, const at::Tensor& features, const at::Tensor& remaining,
                        int64_t index, int64_t budget, double spread,
                        const std::function<at::Tensor(const at::Tensor&)>& batch_mean) {
  const int64_t k = budget - index;
  FEWSTEP_CHECK_VALUE(k >= 1, "propose_step: step index ", index, " is past the budget of ", budget, " steps");
  const at::Tensor share = remaining / static_cast<double>(k);
  if (k == 1 || head == nullptr) return share;
  const at::Tensor first = *head->parameters().begin();
  const c10::IValue out = const_cast<torch::jit::Module*>(head)->forward({features.to(first.scalar_type())});
  FEWSTEP_CHECK_TYPE(out.isTensor(), "micro step-size head: forward must return a tensor, got ", out.tagKind());
  const at::Tensor logits = out.toTensor();
  const at::Tensor u = at::sigmoid(batch_mean ? batch_mean(logits) : logits.mean()).to(remaining.scalar_type());
  return share * (1.0 + spread * (2.0 * u - 1.0));
}

LearnedStepController::LearnedStepController(ScriptNet head, int64_t budget, double spread)
    : head_(std::move(head)), budget_(budget), spread_(spread) {
  FEWSTEP_CHECK_VALUE(budget >= 1, "LearnedStepController: budget (steps = teacher evaluations) must be >= 1, got ",
                      budget);
  FEWSTEP_CHECK_VALUE(spread >= 0.0 && spread < 1.0, "LearnedStepController: spread must be in [0, 1), got ", spread);
}

std::string LearnedStepController::describe() const {
  std::ostringstream out;
  out << "LearnedStepController(budget=" << budget_ << ", spread=" << spread_
      << (head_ ? ", learned head" : ", no head: uniform log-SNR") << ")";
  return out.str();
}

double LearnedStepController::next_time(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& e,
                                        double t, double t_start, double t_end, int64_t index) const {
  if (index >= budget_ - 1) return t_end;  // the last step lands exactly
  const double lambda_start = schedule.lambda(t_start), lambda_end = schedule.lambda(t_end);
  at::NoGradGuard no_grad;
  const at::Tensor lambda = at::scalar_tensor(schedule.lambda(t), at::TensorOptions().dtype(at::kDouble));
  const at::Tensor features = step_size_features(x, e, lambda.to(x.device()), lambda_start, lambda_end, index, budget_);
  const double step = propose_step(head_.get(), features, (lambda_end - lambda).to(x.device()), index, budget_, spread_)
                          .item<double>();
  return schedule.t_of_lambda(lambda.item<double>() + step);
}

ControlProposal LearnedStepController::start(const ControlStart& s) const {
  return {next_time(s.schedule, s.x, at::Tensor(), s.t_start, s.t_start, s.t_end, 0), {}};
}

ControlDecision LearnedStepController::decide(const ControlInput& in, ControllerState state) const {
  const at::Tensor e = in.x0_prev != nullptr ? in.x0 - *in.x0_prev : at::Tensor();
  ControlDecision d;
  d.accept = true;
  d.t_next = next_time(in.schedule, in.x_next, e, in.t_next, in.t_start, in.t_end, in.accepted + 1);
  d.state = std::move(state);
  return d;
}

}  // namespace fewstep
