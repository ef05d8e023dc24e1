// The entry points of sample/sample.h, each a SampleRequest (sample/request.h).
#include "fewstep/sample/sample.h"

#include "fewstep/core/check.h"
#include "fewstep/sample/request.h"

namespace fewstep {

namespace {

SampleRequest request_for(const Denoiser& model, const at::Tensor& x_T, const SampleOptions& options) {
  SampleRequest r;
  r.model = borrowed(model);
  r.x_T = x_T;
  r.options = options;
  return r;
}

}  // namespace

Solution sample(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper, const std::vector<double>& grid,
                const SampleOptions& options) {
  FEWSTEP_CHECK_VALUE(!grid.empty(), "sample: the grid is empty; it needs at least two times");
  SampleRequest r = request_for(model, x_T, options);
  r.stepper = borrowed(stepper);
  r.timesteps = grid;
  return sample(r);
}

Solution sample(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name, int64_t steps,
                Spacing spacing, const Options& solver_options, const SampleOptions& options,
                std::optional<double> t_start, std::optional<double> t_end) {
  SampleRequest r = request_for(model, x_T, options);
  r.solver = solver_name;
  r.solver_options = solver_options;
  r.steps = steps;
  r.spacing = spacing;
  r.t_start = t_start;
  r.t_end = t_end;
  return sample(r);
}

Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const Stepper& stepper,
                         const StepController& controller, double t_start, double t_end,
                         const SampleOptions& options) {
  SampleRequest r = request_for(model, x_T, options);
  r.stepper = borrowed(stepper);
  r.controller = borrowed(controller);
  r.t_start = t_start;
  r.t_end = t_end;
  return sample(r);
}

Solution sample_adaptive(const Denoiser& model, const at::Tensor& x_T, const std::string& solver_name,
                         const StepController& controller, const Options& solver_options,
                         const SampleOptions& options, std::optional<double> t_start, std::optional<double> t_end) {
  SampleRequest r = request_for(model, x_T, options);
  r.solver = solver_name;
  r.solver_options = solver_options;
  r.controller = borrowed(controller);
  r.t_start = t_start;
  r.t_end = t_end;
  return sample(r);
}

}  // namespace fewstep
