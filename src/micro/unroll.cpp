#include "fewstep/micro/unroll.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/micro/exponential_step.h"
#include "fewstep/micro/step_size.h"

namespace fewstep {

UnrollResult unroll_micro(const Denoiser& teacher, const at::Tensor& x_T, const UnrollSpec& spec) {
  FEWSTEP_CHECK_VALUE(spec.budget >= 1, "unroll_micro: budget must be >= 1, got ", spec.budget);
  FEWSTEP_CHECK_VALUE(spec.spread >= 0.0 && spec.spread < 1.0, "unroll_micro: spread must be in [0, 1), got ",
                      spec.spread);
  FEWSTEP_CHECK_VALUE(spec.t_start > spec.t_end, "unroll_micro: t_start (", spec.t_start, ") must exceed t_end (",
                      spec.t_end, ")");
  const NoiseSchedule& schedule = teacher.schedule_ref();
  const ScheduleFamily family = schedule.family();
  const double lambda_start = schedule.lambda(spec.t_start), lambda_end = schedule.lambda(spec.t_end);
  const auto lopts = at::TensorOptions().dtype(at::kDouble).device(x_T.device());
  const at::Tensor lambda_end_t = at::scalar_tensor(lambda_end, lopts);

  UnrollResult out;
  out.lambdas.push_back(at::scalar_tensor(lambda_start, lopts));
  out.times.push_back(spec.t_start);
  at::Tensor x = x_T;
  at::Tensor x0_prev, x0_prev2, eps_prev;  // the last two evaluations' x̂_0, the last ε̂ (DEIS-2)
  for (int64_t i = 0; i < spec.budget; ++i) {
    const at::Tensor& lambda = out.lambdas.back();
    const double t = out.times.back();
    // The step size is decided before the evaluation at t_i (LearnedStepController's timing).
    const at::Tensor e = x0_prev2.defined() ? x0_prev - x0_prev2 : at::Tensor();
    at::Tensor lambda_next;
    double t_next;
    if (i == spec.budget - 1) {
      lambda_next = lambda_end_t;
      t_next = spec.t_end;
    } else {
      const at::Tensor features = step_size_features(x, e, lambda, lambda_start, lambda_end, i, spec.budget);
      lambda_next = lambda + propose_step(spec.step_size, features, lambda_end_t - lambda, i, spec.budget, spec.spread);
      t_next = schedule.t_of_lambda(lambda_next.item<double>());
    }
    const DenoiserOutput eval = teacher(spec.teacher_grad ? x : x.detach(), t);
    at::Tensor x_next;
    if (spec.mode == MicroMode::StepSize) {
      const at::Tensor lambda_prev = out.lambdas.size() >= 2 ? out.lambdas[out.lambdas.size() - 2] : at::Tensor();
      x_next = deis2_lambda_update(family, x, eval.eps, eps_prev, lambda_prev, lambda, lambda_next);
    } else {
      x_next = micro_update(spec.residual, family, x, eval.eps, lambda, lambda_next);
    }
    x0_prev2 = x0_prev;
    x0_prev = eval.x0;
    eps_prev = eval.eps;
    x = x_next;
    out.lambdas.push_back(lambda_next);
    out.times.push_back(t_next);
    ++out.nfe;
  }
  out.x = x;
  return out;
}

}  // namespace fewstep
