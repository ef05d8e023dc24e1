#include "fewstep/micro/unroll.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/micro/exponential_step.h"
#include "fewstep/micro/step_size.h"

namespace fewstep {

UnrollResult unroll_micro(const Denoiser& teacher, const at::Tensor& x_T, const UnrollSpec& spec) {
  FEWSTEP_CHECK_VALUE(spec.budget >= 1, "unroll_micro: budget must be >= 1, got ", spec.budget);
  FEWSTEP_CHECK_VALUE(spec.spread >= 0.0 && spec.spread < 1.0, "unroll_micro: spread must be in [0, 1), got ",
                      spec.spread);
  FEWSTEP_CHECK_VALUE(spec.time_delta > 0.0, "unroll_micro: time_delta must be positive, got ", spec.time_delta);
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
  at::Tensor x0_prev, x0_prev2;  // the last two evaluations' x̂_0
  std::vector<at::Tensor> eps_before;  // the last evaluations' ε̂ a head can read, most recent last
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
      lambda_next = lambda + propose_step(spec.step_size, features, lambda_end_t - lambda, i, spec.budget, spec.spread,
                                           spec.batch_mean);
      t_next = schedule.t_of_lambda(lambda_next.item<double>());
    }
    DenoiserOutput eval = teacher(spec.teacher_grad ? x : x.detach(), t);
    if (spec.time_gradient && lambda.requires_grad()) {
      // ∂ε̂/∂λ at fixed x by a forward difference (backward near the end of the range).
      const double lam = lambda.item<double>();
      const double delta = lam + spec.time_delta <= lambda_end ? spec.time_delta : -spec.time_delta;
      at::Tensor slope;
      {
        at::NoGradGuard no_grad;
        slope = (teacher(x.detach(), schedule.t_of_lambda(lam + delta)).eps - eval.eps.detach()) / delta;
      }
      eval.eps = eval.eps + (lambda - lambda.detach()).to(eval.eps.scalar_type()) * slope;
      ++out.extra_evaluations;
    }
    at::Tensor x_next;
    if (spec.mode == MicroMode::StepSize) {
      const at::Tensor lambda_prev = out.lambdas.size() >= 2 ? out.lambdas[out.lambdas.size() - 2] : at::Tensor();
      const at::Tensor eps_prev = eps_before.empty() ? at::Tensor() : eps_before.back();
      x_next = deis2_lambda_update(family, x, eval.eps, eps_prev, lambda_prev, lambda, lambda_next);
    } else {
      // The evaluations before this one that a head can read, most recent last (ε̂ of out.lambdas[i − k]).
      std::vector<PreviousEvaluation> before;
      const size_t kept = eps_before.size(), known = out.lambdas.size() - 1;
      for (size_t j = 0; j < kept; ++j)
        before.push_back(PreviousEvaluation{eps_before[j], out.lambdas[known - kept + j]});
      x_next = micro_update(spec.residual, spec.history, family, x, eval.eps, lambda, lambda_next, before);
    }
    // x̂_0 from the (time-differentiable) ε̂: the same value as eval.x0, with its dependence on λ_i.
    const at::Tensor alpha = alpha_of_lambda(family, lambda).to(x.scalar_type());
    const at::Tensor sigma = sigma_of_lambda(family, lambda).to(x.scalar_type());
    x0_prev2 = x0_prev;
    x0_prev = (x - sigma * eval.eps) / alpha;
    eps_before.push_back(eval.eps);
    if (eps_before.size() > static_cast<size_t>(std::max<int64_t>(spec.history, 1)))
      eps_before.erase(eps_before.begin());
    x = x_next;
    out.lambdas.push_back(lambda_next);
    out.times.push_back(t_next);
    ++out.nfe;
  }
  out.x = x;
  return out;
}

}  // namespace fewstep
