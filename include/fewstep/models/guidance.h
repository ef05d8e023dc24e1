/// @file models/guidance.h
/// @brief Classifier-free guidance (Ho & Salimans 2022): out = out_u + w (out_c − out_u).
///
/// The conditional and unconditional passes go through the network as one batched call on
/// [x; x] with conditions [cond; uncond]; guidance is applied to the network's native output
/// (ε for ε-models), then converted to (x̂_0, ε̂) like any network. w = 1 is the conditional
/// model alone, w = 0 the unconditional one.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "fewstep/models/denoiser.h"

namespace fewstep {

/// A conditional network: (x, t_input[batch], condition[batch, ...]) ↦ native prediction.
using ConditionalNetwork = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond)>;

/// `cond` and `uncond` have batch size 1 (broadcast) or the batch size of x.
Denoiser classifier_free_guidance(ConditionalNetwork network, SchedulePtr schedule, Prediction prediction,
                                  const at::Tensor& cond, const at::Tensor& uncond, double guidance_scale,
                                  TimeInput time_input = TimeInput::T, double time_scale = 1.0);

}  // namespace fewstep
