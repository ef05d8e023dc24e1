#include "fewstep/micro/exponential_step.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/nets/micro_heads.h"

namespace fewstep {

namespace {

// [B] → [B, 1, ..., 1] to scale a [B, ...] tensor.
at::Tensor per_sample(const at::Tensor& v, const at::Tensor& like) {
  if (v.dim() == 0) return v;
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = v.size(0);
  return v.reshape(shape);
}

// α_t/α_s in x's dtype, shaped to scale x.
at::Tensor linear_factor(ScheduleFamily family, const at::Tensor& lambda_s, const at::Tensor& lambda_t,
                         const at::Tensor& x) {
  return per_sample((alpha_of_lambda(family, lambda_t) / alpha_of_lambda(family, lambda_s)).to(x.scalar_type()), x);
}

}  // namespace

at::Tensor alpha_of_lambda(ScheduleFamily family, const at::Tensor& lambda) {
  switch (family) {
    case ScheduleFamily::VP: return at::sigmoid(2.0 * lambda).sqrt();
    case ScheduleFamily::VE: return at::ones_like(lambda);
    case ScheduleFamily::Flow: return at::sigmoid(lambda);
  }
  throw std::logic_error("unknown schedule family");
}

at::Tensor sigma_of_lambda(ScheduleFamily family, const at::Tensor& lambda) {
  switch (family) {
    case ScheduleFamily::VP: return at::sigmoid(-2.0 * lambda).sqrt();
    case ScheduleFamily::VE: return at::exp(-lambda);
    case ScheduleFamily::Flow: return at::sigmoid(-lambda);
  }
  throw std::logic_error("unknown schedule family");
}

ExponentialStep exponential_step(ScheduleFamily family, const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  const at::Tensor alpha_s = alpha_of_lambda(family, lambda_s), alpha_t = alpha_of_lambda(family, lambda_t);
  const at::Tensor linear = alpha_t / alpha_s;
  const at::Tensor ddim = sigma_of_lambda(family, lambda_t) - linear * sigma_of_lambda(family, lambda_s);
  return {linear, ddim, lambda_t - lambda_s};
}

at::Tensor micro_nonlinear_term(const torch::jit::Module* residual_head, int64_t previous_evaluations,
                                ScheduleFamily family, const at::Tensor& x, const at::Tensor& eps,
                                const at::Tensor& lambda_s, const at::Tensor& lambda_t,
                                const std::vector<PreviousEvaluation>& before) {
  FEWSTEP_CHECK_VALUE(previous_evaluations >= 0 && previous_evaluations <= MicroHeadConfig::max_history_depth,
                      "micro_nonlinear_term: previous_evaluations must be between 0 and ",
                      MicroHeadConfig::max_history_depth, ", got ", previous_evaluations);
  for (size_t i = 0; i < before.size(); ++i) {
    FEWSTEP_CHECK_VALUE(before[i].eps.defined() && before[i].lambda.defined(),
                        "micro_nonlinear_term: before[", i, "] needs both eps and lambda");
  }
  // The k-th evaluation back; where the run has fewer, the oldest there is, else the current one.
  auto back = [&](size_t k) {
    if (before.empty()) return PreviousEvaluation{eps, lambda_s};
    return before[before.size() - std::min(k, before.size())];
  };
  const PreviousEvaluation previous = back(1);
  const bool history = previous_evaluations >= 1;
  const ExponentialStep step = exponential_step(family, lambda_s, lambda_t);
  const at::Tensor ddim = per_sample(step.ddim.to(x.scalar_type()), x);
  const at::Tensor base =
      history ? deis2_nonlinear_term(family, eps, previous.eps, previous.lambda, lambda_s, lambda_t) : ddim * eps;
  if (residual_head == nullptr) return base;
  // The head runs in its parameters' dtype; the step's arithmetic stays in x's.
  const auto head_dtype = (*residual_head->parameters().begin()).scalar_type();
  const int64_t n = x.size(0);
  const at::Tensor h = step.h.to(x.scalar_type());
  auto scalar = [&](const at::Tensor& v) { return v.reshape({-1}).expand({n}).to(head_dtype); };
  // Inputs in the head's order (nets/micro_heads.h): x, eps, d, d2, …, then λ_s, h, h_prev, h_prev2, …,
  // the differences of successive evaluations (the current one first).
  std::vector<PreviousEvaluation> chain{PreviousEvaluation{eps, lambda_s}};
  for (int64_t k = 1; k <= previous_evaluations; ++k) chain.push_back(back(static_cast<size_t>(k)));
  std::vector<c10::IValue> inputs{x.to(head_dtype), eps.to(head_dtype)};
  for (size_t k = 1; k < chain.size(); ++k) inputs.push_back((chain[k - 1].eps - chain[k].eps).to(head_dtype));
  inputs.push_back(scalar(lambda_s));
  inputs.push_back(scalar(h));
  for (size_t k = 1; k < chain.size(); ++k)
    inputs.push_back(scalar((chain[k - 1].lambda - chain[k].lambda).to(x.scalar_type())));
  const c10::IValue out = const_cast<torch::jit::Module*>(residual_head)->forward(inputs);
  FEWSTEP_CHECK_TYPE(out.isTensor(), "micro residual head: forward must return a tensor, got ", out.tagKind());
  const at::Tensor correction = out.toTensor();
  FEWSTEP_CHECK_VALUE(correction.sizes() == x.sizes(), "micro residual head: output shape ", correction.sizes(),
                      " differs from x's ", x.sizes());
  return base + ddim * per_sample(h, x) * correction.to(x.scalar_type());
}

at::Tensor micro_update(const torch::jit::Module* residual_head, int64_t previous_evaluations, ScheduleFamily family,
                        const at::Tensor& x, const at::Tensor& eps, const at::Tensor& lambda_s,
                        const at::Tensor& lambda_t, const std::vector<PreviousEvaluation>& before) {
  return linear_factor(family, lambda_s, lambda_t, x) * x +
         micro_nonlinear_term(residual_head, previous_evaluations, family, x, eps, lambda_s, lambda_t, before);
}

at::Tensor exact_residual(ScheduleFamily family, const at::Tensor& x_s, const at::Tensor& x_t,
                          const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  return x_t - linear_factor(family, lambda_s, lambda_t, x_s) * x_s;
}

at::Tensor deis2_nonlinear_term(ScheduleFamily family, const at::Tensor& eps, const at::Tensor& eps_prev,
                                const at::Tensor& lambda_prev, const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  const auto dtype = eps.scalar_type();
  const at::Tensor alpha_s = alpha_of_lambda(family, lambda_s), alpha_t = alpha_of_lambda(family, lambda_t);
  const at::Tensor h = lambda_t - lambda_s;
  // α_t e^{−λ_s} = α_t σ_s/α_s; −expm1(−h) = 1 − e^{−h}.
  const at::Tensor scale = (alpha_t * sigma_of_lambda(family, lambda_s) / alpha_s).to(dtype);
  at::Tensor integral = per_sample((-at::expm1(-h)).to(dtype), eps) * eps;
  if (eps_prev.defined()) {
    // λ_prev = λ_s stands for "no previous evaluation": no slope term (and no 0/0).
    const at::Tensor h_prev = lambda_s - lambda_prev;
    const at::Tensor present = h_prev > 0;
    const at::Tensor weight =
        at::where(present, (-at::expm1(-h) - h * at::exp(-h)) / at::where(present, h_prev, at::ones_like(h_prev)),
                  at::zeros_like(h_prev));
    integral = integral + per_sample(weight.to(dtype), eps) * (eps - eps_prev);
  }
  return -per_sample(scale, eps) * integral;
}

at::Tensor deis2_lambda_update(ScheduleFamily family, const at::Tensor& x, const at::Tensor& eps,
                               const at::Tensor& eps_prev, const at::Tensor& lambda_prev, const at::Tensor& lambda_s,
                               const at::Tensor& lambda_t) {
  return linear_factor(family, lambda_s, lambda_t, x) * x +
         deis2_nonlinear_term(family, eps, eps_prev, lambda_prev, lambda_s, lambda_t);
}

}  // namespace fewstep
