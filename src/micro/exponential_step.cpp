#include "fewstep/micro/exponential_step.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// [B] → [B, 1, ..., 1] to scale a [B, ...] tensor.
at::Tensor per_sample(const at::Tensor& v, const at::Tensor& like) {
  if (v.dim() == 0) return v;
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = v.size(0);
  return v.reshape(shape);
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

at::Tensor micro_nonlinear_term(const torch::jit::Module* residual_head, ScheduleFamily family, const at::Tensor& x,
                                const at::Tensor& eps, const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  const ExponentialStep step = exponential_step(family, lambda_s, lambda_t);
  const at::Tensor ddim = per_sample(step.ddim.to(x.scalar_type()), x);
  if (residual_head == nullptr) return ddim * eps;
  // The head runs in its parameters' dtype; the step's arithmetic stays in x's.
  const auto head_dtype = (*residual_head->parameters().begin()).scalar_type();
  const int64_t n = x.size(0);
  const at::Tensor h = step.h.to(x.scalar_type());
  const c10::IValue out = const_cast<torch::jit::Module*>(residual_head)
                              ->forward({x.to(head_dtype), eps.to(head_dtype),
                                         lambda_s.reshape({-1}).expand({n}).to(head_dtype),
                                         h.reshape({-1}).expand({n}).to(head_dtype)});
  FEWSTEP_CHECK_TYPE(out.isTensor(), "micro residual head: forward must return a tensor, got ", out.tagKind());
  const at::Tensor correction = out.toTensor();
  FEWSTEP_CHECK_VALUE(correction.sizes() == x.sizes(), "micro residual head: output shape ", correction.sizes(),
                      " differs from x's ", x.sizes());
  return ddim * (eps + per_sample(h, x) * correction.to(x.scalar_type()));
}

at::Tensor micro_update(const torch::jit::Module* residual_head, ScheduleFamily family, const at::Tensor& x,
                        const at::Tensor& eps, const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  const at::Tensor linear = (alpha_of_lambda(family, lambda_t) / alpha_of_lambda(family, lambda_s)).to(x.scalar_type());
  return per_sample(linear, x) * x + micro_nonlinear_term(residual_head, family, x, eps, lambda_s, lambda_t);
}

at::Tensor exact_residual(ScheduleFamily family, const at::Tensor& x_s, const at::Tensor& x_t,
                          const at::Tensor& lambda_s, const at::Tensor& lambda_t) {
  const at::Tensor linear = (alpha_of_lambda(family, lambda_t) / alpha_of_lambda(family, lambda_s)).to(x_s.scalar_type());
  return x_t - per_sample(linear, x_s) * x_s;
}

at::Tensor deis2_lambda_update(ScheduleFamily family, const at::Tensor& x, const at::Tensor& eps,
                               const at::Tensor& eps_prev, const at::Tensor& lambda_prev, const at::Tensor& lambda_s,
                               const at::Tensor& lambda_t) {
  const auto dtype = x.scalar_type();
  const at::Tensor alpha_s = alpha_of_lambda(family, lambda_s), alpha_t = alpha_of_lambda(family, lambda_t);
  const at::Tensor h = lambda_t - lambda_s;
  // α_t e^{−λ_s} = α_t σ_s/α_s; −expm1(−h) = 1 − e^{−h}.
  const at::Tensor scale = (alpha_t * sigma_of_lambda(family, lambda_s) / alpha_s).to(dtype);
  at::Tensor integral = per_sample((-at::expm1(-h)).to(dtype), x) * eps;
  if (eps_prev.defined()) {
    const at::Tensor weight = ((-at::expm1(-h) - h * at::exp(-h)) / (lambda_s - lambda_prev)).to(dtype);
    integral = integral + per_sample(weight, x) * (eps - eps_prev);
  }
  return per_sample((alpha_t / alpha_s).to(dtype), x) * x - per_sample(scale, x) * integral;
}

}  // namespace fewstep
