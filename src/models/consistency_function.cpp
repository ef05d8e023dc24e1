#include "fewstep/models/consistency_function.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <cmath>
#include <vector>

#include "fewstep/core/check.h"

namespace fewstep {

void ConsistencyParameterization::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(sigma_data) && sigma_data > 0.0,
                      "ConsistencyParameterization.sigma_data must be positive, got ", sigma_data);
  FEWSTEP_CHECK_VALUE(std::isfinite(t_min) && t_min >= 0.0, "ConsistencyParameterization.t_min must be >= 0, got ",
                      t_min);
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale != 0.0,
                      "ConsistencyParameterization.time_scale must be non-zero, got ", time_scale);
}

namespace {

double boundary_time(const NoiseSchedule& schedule, const ConsistencyParameterization& p) {
  return p.t_min > 0.0 ? p.t_min : schedule.t_min();
}

}  // namespace

ConsistencyScalings consistency_scalings(const NoiseSchedule& schedule, const ConsistencyParameterization& p,
                                         double t) {
  const double eps_t = boundary_time(schedule, p);
  FEWSTEP_CHECK_VALUE(t >= eps_t && t <= schedule.t_max(), "consistency_scalings: t = ", t,
                      " is outside [t_min, t_max] = [", eps_t, ", ", schedule.t_max(), "]");
  const double sd2 = p.sigma_data * p.sigma_data;
  // σ̃ = σ/α = e^{−λ}; the boundary's own value makes σ̃ − σ̃_min exactly 0 at t = t_min.
  const double s = schedule.sigma_tilde(t), s_min = schedule.sigma_tilde(eps_t);
  const double d = t == eps_t ? 0.0 : s - s_min;
  const double alpha = schedule.alpha(t), sigma = schedule.sigma(t);
  return {sd2 / (d * d + sd2), p.sigma_data * d / std::sqrt(s * s + sd2),
          1.0 / std::sqrt(sigma * sigma + alpha * alpha * sd2)};
}

at::Tensor consistency_function(const torch::jit::Module& net, const NoiseSchedule& schedule,
                                const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t) {
  return consistency_function(
      [&net](const at::Tensor& xin, const at::Tensor& t_in) {
        return forward_network(net, xin, t_in, {}, {}, "consistency network");
      },
      schedule, p, x, t);
}

at::Tensor consistency_function(const ConsistencyNetwork& net, const NoiseSchedule& schedule,
                                const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t) {
  FEWSTEP_CHECK_VALUE(x.defined() && x.dim() >= 1, "consistency_function: x must be a [B, ...] tensor");
  FEWSTEP_CHECK_VALUE(t.defined() && t.dim() == 1 && t.size(0) == x.size(0),
                      "consistency_function: t must be a [B] tensor of host times with B = ", x.size(0));
  const at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
  const double* tp = host.data_ptr<double>();
  const int64_t n = host.size(0);
  std::vector<double> skip(n), out(n), in(n), t_in(n);
  for (int64_t b = 0; b < n; ++b) {
    const ConsistencyScalings c = consistency_scalings(schedule, p, tp[b]);
    skip[b] = c.c_skip, out[b] = c.c_out, in[b] = c.c_in;
    t_in[b] = network_time(schedule, tp[b], p.time_input, p.time_scale);
  }
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = n;
  const auto column = [&](const std::vector<double>& v) {
    return at::tensor(v, at::kDouble).to(x.options()).view(shape);
  };
  const at::Tensor f = net(x * column(in), at::tensor(t_in, at::kDouble).to(x.options()));
  FEWSTEP_CHECK_VALUE(f.sizes() == x.sizes(), "consistency network returned shape ", f.sizes(), " for input ",
                      x.sizes());
  return x * column(skip) + f * column(out);
}

Denoiser consistency_denoiser(ScriptNet net, SchedulePtr schedule, const ConsistencyParameterization& p) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "consistency_denoiser: net must not be null");
  return consistency_denoiser(
      [net](const at::Tensor& x, const at::Tensor& t_in) {
        return forward_network(*net, x, t_in, {}, {}, "consistency network");
      },
      std::move(schedule), p);
}

Denoiser consistency_denoiser(ConsistencyNetwork net, SchedulePtr schedule, const ConsistencyParameterization& p,
                              std::string description) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "consistency_denoiser: net must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "consistency_denoiser: schedule must not be null");
  p.validate();
  const NoiseSchedule* sched = schedule.get();
  Denoiser::Direct fn = [net = std::move(net), sched, p](const at::Tensor& x, double t) {
    const at::Tensor times = at::full({x.size(0)}, t, at::kDouble);
    at::Tensor x0 = consistency_function(net, *sched, p, x, times);
    at::Tensor eps = (x - x0 * sched->alpha(t)) * (1.0 / sched->sigma(t));
    return DenoiserOutput{std::move(x0), std::move(eps)};
  };
  return Denoiser::direct(std::move(fn), std::move(schedule), std::move(description));
}

}  // namespace fewstep
