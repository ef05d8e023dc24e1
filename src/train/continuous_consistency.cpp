#include "fewstep/train/continuous_consistency.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"

namespace fewstep {

void ScmOptions::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(tangent_c) && tangent_c > 0.0, "ScmOptions.tangent_c must be positive, got ",
                      tangent_c);
  FEWSTEP_CHECK_VALUE(warmup_steps >= -1, "ScmOptions.warmup_steps must be >= 0 (or -1: a tenth of the run), got ",
                      warmup_steps);
}

double ScmOptions::warmup(int64_t k, int64_t total_steps) const {
  const int64_t h = warmup_steps >= 0 ? warmup_steps : total_steps / 10;
  return h <= 0 ? 1.0 : std::min(1.0, static_cast<double>(k) / static_cast<double>(h));
}

namespace {

// d fn/dt at t inside [lo, hi] by a second-order difference (central, one-sided at the ends).
double derivative(const std::function<double(double)>& fn, double t, double lo, double hi) {
  const double h = 1e-5 * std::max(std::abs(t), 1e-3 * (hi - lo));
  if (t - h >= lo && t + h <= hi) return (fn(t + h) - fn(t - h)) / (2.0 * h);
  if (t - h < lo) return (-3.0 * fn(t) + 4.0 * fn(t + h) - fn(t + 2.0 * h)) / (2.0 * h);
  return (3.0 * fn(t) - 4.0 * fn(t - h) + fn(t - 2.0 * h)) / (2.0 * h);
}

std::vector<int64_t> column_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  return shape;
}

// Exits the forward-AD level it entered, also on an exception from the network.
class DualLevel {
 public:
  DualLevel() : level_(torch::autograd::forward_ad::enter_dual_level()) {}
  ~DualLevel() { torch::autograd::forward_ad::exit_dual_level(level_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  int64_t level() const { return static_cast<int64_t>(level_); }

 private:
  uint64_t level_;
};

}  // namespace

ScmCoefficients scm_coefficients(const NoiseSchedule& schedule, const ConsistencyParameterization& p,
                                 const at::Tensor& t) {
  FEWSTEP_CHECK_VALUE(t.defined() && t.dim() == 1, "scm_coefficients: t must be a [B] tensor of host times");
  const at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
  const double* tp = host.data_ptr<double>();
  const int64_t n = host.numel();
  const double lo = p.t_min > 0.0 ? p.t_min : schedule.t_min(), hi = schedule.t_max();
  const double sd = p.sigma_data, sd2 = sd * sd;
  const auto a_of = [&](double s) {
    const ConsistencyScalings c = consistency_scalings(schedule, p, s);
    return c.c_skip / (sd * c.c_in);
  };
  const auto c_out_of = [&](double s) { return consistency_scalings(schedule, p, s).c_out; };
  const auto c_in_of = [&](double s) { return consistency_scalings(schedule, p, s).c_in; };
  const auto noise_of = [&](double s) { return network_time(schedule, s, p.time_input, p.time_scale); };
  std::vector<double> a(n), da(n), co(n), dco(n), ci(n), dci(n), cn(n), dcn(n), kappa(n);
  for (int64_t b = 0; b < n; ++b) {
    const double s = tp[b];
    FEWSTEP_CHECK_VALUE(s >= lo && s <= hi, "scm_coefficients: t = ", s, " is outside [t_min, t_max] = [", lo, ", ",
                        hi, "]");
    a[b] = a_of(s), da[b] = derivative(a_of, s, lo, hi);
    co[b] = c_out_of(s), dco[b] = derivative(c_out_of, s, lo, hi);
    ci[b] = c_in_of(s), dci[b] = derivative(c_in_of, s, lo, hi);
    cn[b] = noise_of(s), dcn[b] = derivative(noise_of, s, lo, hi);
    // κ = √(σ̃² + σ_d²)/(dσ̃/dt) with σ̃ = e^{−λ}: dσ̃/dt = −σ̃ dλ/dt.
    const double st = schedule.sigma_tilde(s);
    kappa[b] = std::sqrt(st * st + sd2) / (-st * schedule.dlambda_dt(s));
  }
  const auto tensor = [](const std::vector<double>& v) { return at::tensor(v, at::kDouble); };
  return {tensor(a), tensor(da), tensor(co), tensor(dco), tensor(ci), tensor(dci), tensor(cn), tensor(dcn), tensor(kappa)};
}

ScmTangent scm_tangent(const ConsistencyNetwork& net, const NoiseSchedule& schedule,
                       const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t,
                       const at::Tensor& dx_dt, double r, double tangent_c) {
  FEWSTEP_CHECK_VALUE(net != nullptr, "scm_tangent: net must not be null");
  FEWSTEP_CHECK_VALUE(x.defined() && x.dim() >= 2, "scm_tangent: x must be a [B, ...] tensor");
  FEWSTEP_CHECK_VALUE(t.defined() && t.dim() == 1 && t.size(0) == x.size(0),
                      "scm_tangent: t must be a [B] tensor of host times with B = ", x.size(0));
  FEWSTEP_CHECK_VALUE(dx_dt.defined() && dx_dt.sizes() == x.sizes(), "scm_tangent: dx_dt must have x's shape ",
                      x.sizes());
  const ScmCoefficients c = scm_coefficients(schedule, p, t);
  const std::vector<int64_t> shape = column_shape(x);
  const auto column = [&](const at::Tensor& v) { return v.to(x.options()).view(shape); };
  const double sd = p.sigma_data;
  at::NoGradGuard no_grad;  // θ⁻ = θ without gradient; forward-mode AD is unaffected
  const at::Tensor kappa = column(c.kappa);
  const at::Tensor input = x * column(c.c_in);                              // y/σ_d
  const at::Tensor time_input = c.c_noise.to(x.options());
  const at::Tensor y_dot = kappa * sd * (x * column(c.dc_in) + dx_dt * column(c.c_in));  // κ dy/dt
  at::Tensor F, F_dot;
  {
    DualLevel level;
    const at::Tensor out = net(at::_make_dual(input, y_dot / sd, level.level()),
                               at::_make_dual(time_input, (c.kappa * c.dc_noise).to(x.options()), level.level()));
    FEWSTEP_CHECK_VALUE(out.sizes() == x.sizes(), "consistency network returned shape ", out.sizes(), " for input ",
                        x.sizes());
    auto [primal, tangent] = at::_unpack_dual(out, level.level());
    FEWSTEP_CHECK(tangent.defined(), "scm_tangent: the network's output carries no forward-mode tangent (an "
                  "operation without a forward derivative?)");
    F = primal.clone(), F_dot = tangent.clone();
  }
  const at::Tensor y = input * sd;
  // u = −κ df⁻/dt, the warm-up factor r on a' y + c_out dF/dt.
  const at::Tensor u = -(column(c.a) * y_dot + kappa * column(c.dc_out) * F +
                         r * (kappa * column(c.da) * y + column(c.c_out) * F_dot));
  const at::Tensor norm = u.flatten(1).norm(2, {1}).view(shape);
  return {F, u / (norm + tangent_c), input, time_input};
}

at::Tensor ode_velocity_from_eps(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps,
                                 const at::Tensor& t) {
  FEWSTEP_CHECK_VALUE(eps.sizes() == x.sizes(), "ode_velocity_from_eps: eps has shape ", eps.sizes(), ", x ",
                      x.sizes());
  const at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
  const int64_t n = host.numel();
  FEWSTEP_CHECK_VALUE(n == x.size(0), "ode_velocity_from_eps: t must have B = ", x.size(0), " times, got ", n);
  std::vector<double> drift(n), noise(n);
  for (int64_t b = 0; b < n; ++b) {
    const double s = host.data_ptr<double>()[b];
    drift[b] = schedule.dlog_alpha_dt(s);
    noise[b] = -schedule.sigma(s) * schedule.dlambda_dt(s);
  }
  const std::vector<int64_t> shape = column_shape(x);
  const auto column = [&](const std::vector<double>& v) {
    return at::tensor(v, at::kDouble).to(x.options()).view(shape);
  };
  return x * column(drift) + eps * column(noise);
}

at::Tensor scm_log_weight(const at::Tensor& knots, const at::Tensor& sigma_tilde, double lo, double hi) {
  FEWSTEP_CHECK_VALUE(knots.defined() && knots.dim() == 1 && knots.size(0) >= 2,
                      "scm_log_weight: knots must be a [K] tensor with K >= 2");
  FEWSTEP_CHECK_VALUE(lo > 0.0 && hi > lo, "scm_log_weight: the range [", lo, ", ", hi, "] must be positive and increasing");
  const int64_t k = knots.size(0);
  const at::Tensor pos = ((sigma_tilde.to(knots.options()).log() - std::log(lo)) / (std::log(hi) - std::log(lo)) *
                          static_cast<double>(k - 1))
                             .clamp(0.0, static_cast<double>(k - 1));
  const at::Tensor left = pos.floor().clamp_max(static_cast<double>(k - 2)).to(at::kLong);
  const at::Tensor frac = pos - left.to(pos.scalar_type());
  return knots.index_select(0, left) * (1.0 - frac) + knots.index_select(0, left + 1) * frac;
}

at::Tensor scm_loss(const at::Tensor& F_theta, const ScmTangent& tangent, const at::Tensor& log_weight,
                    const at::Tensor& mask) {
  FEWSTEP_CHECK_VALUE(F_theta.sizes() == tangent.F_minus.sizes(), "scm_loss: F_theta has shape ", F_theta.sizes(),
                      ", the tangent pass ", tangent.F_minus.sizes());
  const at::Tensor d = (F_theta - tangent.F_minus - tangent.target).flatten(1).pow(2).mean(1);
  at::Tensor per_row = d;
  if (log_weight.defined()) {
    const at::Tensor w = log_weight.to(d.options());
    per_row = w.exp() * d - w;
  }
  if (mask.defined()) {
    FEWSTEP_CHECK_VALUE(mask.dim() == 1 && mask.size(0) == d.size(0), "scm_loss: mask must be a [B] tensor, B = ",
                        d.size(0));
    per_row = per_row * mask.to(d.options());
  }
  return per_row.mean();
}

}  // namespace fewstep
