#include "fewstep/train/progressive_target.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

double progressive_grid_time(double i, int64_t steps, double t_lo, double t_hi) {
  FEWSTEP_CHECK_VALUE(steps >= 1, "progressive_grid_time: steps must be >= 1, got ", steps);
  // i = steps must give t_hi exactly, i = 0 t_lo exactly.
  if (i >= static_cast<double>(steps)) return t_hi;
  if (i <= 0.0) return t_lo;
  return t_lo + (i / static_cast<double>(steps)) * (t_hi - t_lo);
}

at::Tensor progressive_x0_from_two_steps(const NoiseSchedule& schedule, const at::Tensor& z_t,
                                         const at::Tensor& z_end, double t, double t_end) {
  const double ratio = std::exp(schedule.log_sigma(t_end) - schedule.log_sigma(t));  // σ_{t''}/σ_t
  // α_{t''} − (σ_{t''}/σ_t) α_t = σ_{t''} e^{λ_t} expm1(λ_{t''} − λ_t), positive for t'' < t.
  const double denom = std::exp(schedule.log_sigma(t_end) + schedule.lambda(t)) *
                       std::expm1(schedule.lambda(t_end) - schedule.lambda(t));
  FEWSTEP_CHECK_VALUE(denom > 0.0 && std::isfinite(denom), "progressive_x0_from_two_steps: need t_end < t, got t = ",
                      t, ", t_end = ", t_end);
  return (z_end - z_t * ratio) * (1.0 / denom);
}

ProgressiveTarget progressive_target(const Denoiser& teacher, const at::Tensor& z_t, const at::Tensor& index,
                                     int64_t steps, double t_lo, double t_hi, int64_t substeps) {
  FEWSTEP_CHECK_VALUE(steps >= 1, "progressive_target: steps must be >= 1, got ", steps);
  FEWSTEP_CHECK_VALUE(substeps >= 2 && substeps % 2 == 0 && substeps <= 1024,
                      "progressive_target: substeps must be an even number in [2, 1024], got ", substeps);
  FEWSTEP_CHECK_VALUE(t_lo < t_hi, "progressive_target: need t_lo < t_hi, got t_lo = ", t_lo, ", t_hi = ", t_hi);
  const NoiseSchedule& schedule = teacher.schedule_ref();
  schedule.check_time(t_lo, "progressive_target t_lo");
  schedule.check_time(t_hi, "progressive_target t_hi");
  FEWSTEP_CHECK_VALUE(z_t.defined() && z_t.dim() >= 1, "progressive_target: z_t must be a [B, ...] tensor");
  FEWSTEP_CHECK_VALUE(index.defined() && index.dim() == 1 && index.size(0) == z_t.size(0),
                      "progressive_target: index must be a [B] tensor with B = ", z_t.size(0), ", got shape ",
                      index.defined() ? index.sizes() : at::IntArrayRef{});
  FEWSTEP_CHECK_TYPE(!at::isFloatingType(index.scalar_type()),
                     "progressive_target: index must be an integer tensor of grid indices, got ",
                     index.scalar_type());
  const at::Tensor idx_cpu = index.to(at::kCPU, at::kLong).contiguous();
  const int64_t n = idx_cpu.size(0);
  const int64_t* ip = idx_cpu.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> groups;  // sorted: a fixed evaluation order
  for (int64_t b = 0; b < n; ++b) {
    FEWSTEP_CHECK_VALUE(ip[b] >= 1 && ip[b] <= steps, "progressive_target: index[", b, "] = ", ip[b],
                        " is outside 1..", steps);
    groups[ip[b]].push_back(b);
  }

  const auto ddim = solver("ddim");
  ProgressiveTarget out;
  out.target = at::empty_like(z_t);
  out.z_mid = at::empty_like(z_t);
  out.z_end = at::empty_like(z_t);
  out.t = at::empty({n}, at::kDouble);
  double* tp = out.t.data_ptr<double>();
  at::NoGradGuard no_grad;
  const int64_t teacher_steps = substeps * steps;
  const double k = static_cast<double>(substeps);
  for (const auto& [i, members] : groups) {
    const double t = progressive_grid_time(static_cast<double>(i), steps, t_lo, t_hi);
    const double t_end = progressive_grid_time(static_cast<double>(i - 1), steps, t_lo, t_hi);
    for (int64_t b : members) tp[b] = t;
    const at::Tensor rows =
        at::tensor(members, at::TensorOptions().dtype(at::kLong)).to(z_t.device());
    const at::Tensor z = z_t.index_select(0, rows);

    // `substeps` teacher DDIM calls on the uniform subdivision τ(i − j/K), j = 1..K.
    ModelEvaluator model(teacher);
    SolverState state = ddim->init(z);
    StepContext ctx;
    ctx.num_steps = teacher_steps;
    ctx.index = teacher_steps - substeps * i;  // step number on the teacher's K·N-step grid
    at::Tensor x = z, z_mid, last_x0;
    for (int64_t j = 1; j <= substeps; ++j) {
      const double from = progressive_grid_time(static_cast<double>(i) - static_cast<double>(j - 1) / k, steps,
                                                t_lo, t_hi);
      const double to = progressive_grid_time(static_cast<double>(i) - static_cast<double>(j) / k, steps, t_lo, t_hi);
      StepResult r = ddim->step(model, x, from, to, std::move(state), ctx);
      ctx.index += 1;
      x = r.x;
      last_x0 = r.x0;
      state = std::move(r.state);
      if (2 * j == substeps) z_mid = x;
    }
    at::Tensor z_end, target;
    if (i == 1) {
      // Last step of the grid: σ_{t''} = 0, so z_{t''} is the teacher's x̂ and x̃ = z_{t''}.
      z_end = last_x0;
      target = last_x0;
    } else {
      z_end = x;
      target = progressive_x0_from_two_steps(schedule, z, z_end, t, t_end);
    }
    out.z_mid.index_copy_(0, rows, z_mid);
    out.z_end.index_copy_(0, rows, z_end);
    out.target.index_copy_(0, rows, target);
  }
  return out;
}

}  // namespace fewstep
