#include "fewstep/models/transforms.h"

#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <utility>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

/// ε̂ consistent with a processed x̂_0: ε̂ = (x − α x̂_0)/σ.
at::Tensor eps_from_x0(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& x0, double t) {
  return (x - x0 * schedule.alpha(t)) * (1.0 / schedule.sigma(t));
}

Denoiser process_x0(Denoiser model, std::function<at::Tensor(const at::Tensor&)> process, bool update_eps,
                    const std::string& what) {
  auto inner = std::make_shared<Denoiser>(std::move(model));
  SchedulePtr schedule = inner->schedule();
  Denoiser::Direct fn = [inner, process = std::move(process), update_eps](const at::Tensor& x,
                                                                           double t) -> DenoiserOutput {
    DenoiserOutput out = (*inner)(x, t);
    at::Tensor x0 = process(out.x0);
    at::Tensor eps = update_eps ? eps_from_x0(inner->schedule_ref(), x, x0, t) : out.eps;
    return DenoiserOutput{std::move(x0), std::move(eps)};
  };
  std::ostringstream desc;
  desc << what << ", update_eps=" << (update_eps ? "true" : "false") << ") of " << inner->description();
  return Denoiser::direct(std::move(fn), std::move(schedule), desc.str());
}

}  // namespace

Denoiser clip_x0(Denoiser model, double range, bool update_eps) {
  FEWSTEP_CHECK_VALUE(std::isfinite(range) && range > 0.0, "clip_x0: range must be finite and > 0, got range=",
                      range);
  std::ostringstream what;
  what << "clip_x0(range=" << range;
  return process_x0(
      std::move(model), [range](const at::Tensor& x0) { return at::clamp(x0, -range, range); }, update_eps,
      what.str());
}

Denoiser threshold_x0(Denoiser model, double ratio, double max_value, bool update_eps) {
  FEWSTEP_CHECK_VALUE(std::isfinite(ratio) && ratio > 0.0 && ratio <= 1.0,
                      "threshold_x0: ratio must be in (0, 1], got ratio=", ratio);
  FEWSTEP_CHECK_VALUE(std::isfinite(max_value) && max_value >= 1.0,
                      "threshold_x0: max_value must be finite and >= 1, got max_value=", max_value);
  std::ostringstream what;
  what << "threshold_x0(ratio=" << ratio << ", max_value=" << max_value;
  auto process = [ratio, max_value](const at::Tensor& x0) {
    FEWSTEP_CHECK_VALUE(x0.dim() >= 1 && x0.numel() > 0, "threshold_x0: x0 must have a batch dimension");
    // quantile needs float or double; half inputs are thresholded in float32 and cast back.
    const auto dtype = x0.scalar_type();
    at::Tensor flat = x0.reshape({x0.size(0), -1});
    if (dtype != at::kFloat && dtype != at::kDouble) flat = flat.to(at::kFloat);
    at::Tensor s = at::quantile(flat.abs(), ratio, /*dim=*/1, /*keepdim=*/true).clamp(1.0, max_value);
    at::Tensor out = at::maximum(at::minimum(flat, s), -s) / s;
    return out.to(dtype).reshape(x0.sizes());
  };
  return process_x0(std::move(model), std::move(process), update_eps, what.str());
}

Denoiser ve_view(Denoiser vp) {
  const NoiseSchedule& base = vp.schedule_ref();
  FEWSTEP_CHECK_VALUE(base.family() == ScheduleFamily::VP, "ve_view: the model's schedule must be VP, got ",
                      base.repr());
  auto inner = std::make_shared<Denoiser>(std::move(vp));
  auto schedule = std::make_shared<VE>(base.sigma_tilde(base.t_min()), base.sigma_tilde(base.t_max()));
  Denoiser::Direct fn = [inner](const at::Tensor& x, double sigma_tilde) -> DenoiserOutput {
    const NoiseSchedule& s = inner->schedule_ref();
    // The ends map back to the VP range exactly, whatever the round trip through λ gives.
    const double lambda = -std::log(sigma_tilde);
    double t = s.t_of_lambda(lambda);
    if (sigma_tilde >= s.sigma_tilde(s.t_max())) t = s.t_max();
    if (sigma_tilde <= s.sigma_tilde(s.t_min())) t = s.t_min();
    // α = 1/√(1 + σ̃²), taken from σ̃ itself so that the view's input is x_ve/√(1 + σ̃²) exactly.
    const double alpha = 1.0 / std::sqrt(1.0 + sigma_tilde * sigma_tilde);
    return (*inner)(x * alpha, t);
  };
  return Denoiser::direct(std::move(fn), schedule, "ve_view(" + inner->description() + ")");
}

}  // namespace fewstep
