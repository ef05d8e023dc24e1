#include "fewstep/models/guidance.h"

#include <cmath>
#include <sstream>
#include <utility>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

// A condition of batch 1 is repeated to the batch of x; it follows x's device (not its dtype: labels may be integers).
at::Tensor batch_condition(const at::Tensor& c, int64_t batch, const char* name) {
  FEWSTEP_CHECK_VALUE(c.size(0) == 1 || c.size(0) == batch, "classifier_free_guidance: ", name,
                      " must have batch size 1 or x's batch size ", batch, ", got shape ", c.sizes());
  if (c.size(0) == batch) return c;
  auto sizes = c.sizes().vec();
  sizes[0] = batch;
  return c.expand(sizes);
}

}  // namespace

Denoiser classifier_free_guidance(ConditionalNetwork network, SchedulePtr schedule, Prediction prediction,
                                  const at::Tensor& cond, const at::Tensor& uncond, double guidance_scale,
                                  TimeInput time_input, double time_scale) {
  FEWSTEP_CHECK_VALUE(static_cast<bool>(network),
                      "classifier_free_guidance: network must be a callable, got an empty function");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "classifier_free_guidance: schedule must not be null");
  FEWSTEP_CHECK_VALUE(std::isfinite(guidance_scale), "classifier_free_guidance: guidance_scale must be finite, got ",
                      guidance_scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale != 0.0,
                      "classifier_free_guidance: time_scale must be finite and non-zero, got ", time_scale);
  FEWSTEP_CHECK_VALUE(time_input != TimeInput::Index || schedule->num_train_steps().has_value(),
                      "classifier_free_guidance: time_input 'index' needs a discrete schedule, got ",
                      schedule->repr());
  FEWSTEP_CHECK_VALUE(cond.defined() && cond.dim() >= 1,
                      "classifier_free_guidance: cond must be a tensor with a batch dimension, got ",
                      cond.defined() ? std::to_string(cond.dim()) + "-D" : std::string("an undefined tensor"));
  FEWSTEP_CHECK_VALUE(uncond.defined() && uncond.dim() >= 1,
                      "classifier_free_guidance: uncond must be a tensor with a batch dimension, got ",
                      uncond.defined() ? std::to_string(uncond.dim()) + "-D" : std::string("an undefined tensor"));
  FEWSTEP_CHECK_VALUE(cond.sizes().slice(1) == uncond.sizes().slice(1),
                      "classifier_free_guidance: cond and uncond must agree beyond the batch dimension, got shapes ",
                      cond.sizes(), " and ", uncond.sizes());
  FEWSTEP_CHECK_TYPE(cond.scalar_type() == uncond.scalar_type(),
                     "classifier_free_guidance: cond and uncond must have the same dtype, got ", cond.scalar_type(),
                     " and ", uncond.scalar_type());

  std::ostringstream desc;
  desc << "classifier_free_guidance(network, prediction='" << to_string(prediction) << "', guidance_scale="
       << guidance_scale << ", time_input='" << to_string(time_input) << "'";
  if (time_scale != 1.0) desc << ", time_scale=" << time_scale;
  desc << ", schedule=" << schedule->repr() << ")";

  Denoiser::Direct fn = [network = std::move(network), schedule, prediction, cond, uncond, guidance_scale,
                         time_input, time_scale](const at::Tensor& x, double t) -> DenoiserOutput {
    FEWSTEP_CHECK_VALUE(x.defined() && x.dim() >= 1,
                        "classifier_free_guidance: x must be a tensor with a batch dimension");
    FEWSTEP_CHECK_TYPE(x.is_floating_point(), "classifier_free_guidance: x must be floating point, got ",
                       x.scalar_type());
    const int64_t b = x.size(0);
    at::Tensor c = batch_condition(cond, b, "cond");
    at::Tensor u = batch_condition(uncond, b, "uncond");
    if (c.device() != x.device()) c = c.to(x.device());
    if (u.device() != x.device()) u = u.to(x.device());
    // One network call on [x; x] with [cond; uncond]: half the launches of two calls, one NFE.
    const at::Tensor x2 = at::cat({x, x}, 0);
    const at::Tensor t2 = at::full({2 * b}, network_time(*schedule, t, time_input, time_scale), x.options());
    at::Tensor out = network(x2, t2, at::cat({c, u}, 0));
    FEWSTEP_CHECK_VALUE(out.defined(), "classifier_free_guidance: the network returned an undefined tensor at t = ",
                        t);
    FEWSTEP_CHECK_VALUE(out.sizes() == x2.sizes(), "classifier_free_guidance: the network output has shape ",
                        out.sizes(), ", expected ", x2.sizes(), " (the batch of x doubled)");
    if (out.scalar_type() != x.scalar_type()) out = out.to(x.scalar_type());
    const at::Tensor out_c = out.narrow(0, 0, b);
    const at::Tensor out_u = out.narrow(0, b, b);
    // out_u + w (out_c − out_u); conversions are affine in out, so guiding the native output is exact.
    const at::Tensor guided = at::add(out_u, out_c - out_u, guidance_scale);
    return convert_prediction(x, guided, prediction, *schedule, t);
  };
  return Denoiser::direct(std::move(fn), std::move(schedule), desc.str());
}

}  // namespace fewstep
