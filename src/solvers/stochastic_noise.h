// Internal helper of the stochastic steppers: every Gaussian draw goes through the driver's NoiseSampler.
#pragma once

#include "fewstep/core/check.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep::detail {

/// z ~ N(0, I) shaped like x from ctx.noise (a generator, or one generator per sample).
inline at::Tensor draw_noise(const StepContext& ctx, const at::Tensor& x, const char* solver) {
  FEWSTEP_CHECK_VALUE(ctx.noise != nullptr, "solver '", solver,
                      "' is stochastic: StepContext::noise is null, the driver must provide a NoiseSampler "
                      "(fewstep::sample does; set ctx.noise when calling step() directly)");
  return ctx.noise->randn_like(x);
}

}  // namespace fewstep::detail
