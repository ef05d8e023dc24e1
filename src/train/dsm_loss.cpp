#include "fewstep/train/dsm_loss.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// (a, b) with native target = a x_0 + b ε, read off native_from_x0_eps by linearity:
// x_0 = [1, 0], ε = [0, 1] gives [a, b]. Keeps one definition of every prediction type.
std::pair<double, double> target_coefficients(Prediction prediction, const NoiseSchedule& schedule, double t) {
  const at::Tensor x0 = at::tensor({1.0, 0.0}, at::kDouble);
  const at::Tensor eps = at::tensor({0.0, 1.0}, at::kDouble);
  const at::Tensor ab = native_from_x0_eps(x0, eps, prediction, schedule, t).contiguous();
  const double* p = ab.data_ptr<double>();
  return {p[0], p[1]};
}

double scale_from(double a, double b, double alpha, double sigma) {
  const double k = a - b * alpha / sigma;
  return k * k;
}

double weight_from(LossWeighting weighting, double snr, double c, double gamma) {
  switch (weighting) {
    case LossWeighting::Uniform: return c;
    case LossWeighting::TruncatedSNR: return std::max(snr, 1.0);
    case LossWeighting::MinSNR: return std::min(snr, gamma);
  }
  FEWSTEP_CHECK_VALUE(false, "loss weighting: unknown enum value ", static_cast<int>(weighting));
  return 0.0;
}

}  // namespace

LossWeighting parse_loss_weighting(const std::string& name) {
  if (name == "uniform") return LossWeighting::Uniform;
  if (name == "truncated_snr") return LossWeighting::TruncatedSNR;
  if (name == "min_snr") return LossWeighting::MinSNR;
  FEWSTEP_CHECK_VALUE(false, "weighting must be one of 'uniform', 'truncated_snr', 'min_snr', got '", name, "'");
  return LossWeighting::Uniform;
}

std::string to_string(LossWeighting weighting) {
  switch (weighting) {
    case LossWeighting::Uniform: return "uniform";
    case LossWeighting::TruncatedSNR: return "truncated_snr";
    case LossWeighting::MinSNR: return "min_snr";
  }
  FEWSTEP_CHECK_VALUE(false, "weighting: unknown enum value ", static_cast<int>(weighting));
  return "";
}

double native_error_scale(Prediction prediction, const NoiseSchedule& schedule, double t) {
  const auto [a, b] = target_coefficients(prediction, schedule, t);
  return scale_from(a, b, schedule.alpha(t), schedule.sigma(t));
}

double x0_loss_weight(LossWeighting weighting, Prediction prediction, const NoiseSchedule& schedule, double t,
                      double min_snr_gamma) {
  const double alpha = schedule.alpha(t), sigma = schedule.sigma(t);
  return weight_from(weighting, (alpha * alpha) / (sigma * sigma), native_error_scale(prediction, schedule, t),
                     min_snr_gamma);
}

void DsmOptions::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale != 0.0,
                      "DsmOptions.time_scale must be finite and non-zero, got ", time_scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(min_snr_gamma) && min_snr_gamma > 0.0,
                      "DsmOptions.min_snr_gamma must be finite and positive, got ", min_snr_gamma);
}

DsmInputs dsm_inputs(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t, const NoiseSchedule& schedule,
                     const DsmOptions& options) {
  options.validate();
  FEWSTEP_CHECK_VALUE(x0.defined() && x0.dim() >= 2 && x0.size(0) >= 1,
                      "dsm_inputs: x0 must be a tensor [B, D, ...] (at least 2-D) with B >= 1, got ",
                      x0.defined() ? x0.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_TYPE(x0.is_floating_point(), "dsm_inputs: x0 must be floating point, got ", x0.scalar_type());
  FEWSTEP_CHECK_VALUE(eps.defined() && eps.sizes() == x0.sizes(), "dsm_inputs: eps must have x0's shape ", x0.sizes(),
                      ", got ", eps.defined() ? eps.sizes() : at::IntArrayRef{});
  const int64_t n = x0.size(0);
  FEWSTEP_CHECK_VALUE(t.defined() && t.dim() == 1 && t.size(0) == n, "dsm_inputs: t must have shape [", n, "], got ",
                      t.defined() ? t.sizes() : at::IntArrayRef{});
  const at::Tensor th = t.to(at::kCPU, at::kDouble).contiguous();
  const double* tp = th.data_ptr<double>();

  std::vector<double> alpha(n), sigma(n), a(n), b(n), w(n), tin(n);
  for (int64_t i = 0; i < n; ++i) {
    schedule.check_time(tp[i], "t");
    alpha[i] = schedule.alpha(tp[i]);
    sigma[i] = schedule.sigma(tp[i]);
    FEWSTEP_CHECK_VALUE(alpha[i] > 0.0 && sigma[i] > 0.0, "dsm_inputs: t = ", tp[i], " gives alpha = ", alpha[i],
                        ", sigma = ", sigma[i], "; DSM needs both positive");
    std::tie(a[i], b[i]) = target_coefficients(options.prediction, schedule, tp[i]);
    const double c = scale_from(a[i], b[i], alpha[i], sigma[i]);
    const double snr = (alpha[i] * alpha[i]) / (sigma[i] * sigma[i]);
    w[i] = weight_from(options.weighting, snr, c, options.min_snr_gamma) / c;
    tin[i] = network_time(schedule, tp[i], options.time_input, options.time_scale);
  }
  std::vector<int64_t> shape(static_cast<size_t>(x0.dim()), 1);
  shape[0] = n;
  // Coefficients in float64 on the host, cast once to x0's dtype/device.
  auto column = [&](const std::vector<double>& v) { return at::tensor(v, at::kDouble).to(x0.options()).view(shape); };
  DsmInputs out;
  out.x_t = column(alpha) * x0 + column(sigma) * eps;
  out.target = options.prediction == Prediction::Eps  ? eps
               : options.prediction == Prediction::X0 ? x0
                                                      : column(a) * x0 + column(b) * eps;
  out.t_input = at::tensor(tin, at::kDouble).to(x0.options());
  out.weight = at::tensor(w, at::kDouble).to(x0.options());
  return out;
}

at::Tensor dsm_loss(const at::Tensor& output, const DsmInputs& inputs) {
  FEWSTEP_CHECK_VALUE(output.defined() && output.sizes() == inputs.target.sizes(), "dsm_loss: output has shape ",
                      output.defined() ? output.sizes() : at::IntArrayRef{}, ", expected the target's shape ",
                      inputs.target.sizes());
  const at::Tensor per_sample = (output - inputs.target).pow(2).flatten(1).mean(1);
  return (per_sample * inputs.weight).mean();
}

}  // namespace fewstep
