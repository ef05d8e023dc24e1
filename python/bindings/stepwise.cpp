// Bindings of the stepper contract (solvers/stepper.h) step by step: a registered stepper, its
// explicit state and one step at a time, for loops that drive the model themselves (a diffusers
// pipeline through fewstep.adapters.FewstepScheduler, or any user loop).
#include <torch/python.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/core/noise.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/solvers/stepper.h"
#include "options.h"

namespace py = pybind11;

namespace {

/// A stepper by name with its options, and what one step returned.
struct PyStepper {
  std::string name;
  std::shared_ptr<const fewstep::Stepper> stepper;
};

struct PyStepResult {
  at::Tensor x;
  at::Tensor x0;
  std::shared_ptr<fewstep::SolverState> state;
  int64_t nfe = 0;
};

}  // namespace

void bind_stepwise(py::module_& m) {
  py::class_<fewstep::SolverState, std::shared_ptr<fewstep::SolverState>>(
      m, "SolverState",
      "What a stepper carries from one step to the next (opaque). Pass the state a step returned to the next "
      "step; a state is a value: stepping from it twice gives the same result twice.");

  py::class_<PyStepResult>(m, "StepResult", "One step: x at t, the step's x0 prediction, the next state, its NFE.")
      .def_readonly("x", &PyStepResult::x)
      .def_readonly("x0", &PyStepResult::x0)
      .def_readonly("state", &PyStepResult::state)
      .def_readonly("nfe", &PyStepResult::nfe)
      .def("__iter__", [](const PyStepResult& r) {
        return py::iter(py::make_tuple(r.x, r.x0, r.state));
      });

  py::class_<PyStepper>(m, "Stepper", "A registered solver, stepped explicitly: init(x) then step(...) per step.")
      .def(py::init([](const std::string& name, const py::dict& options) {
             return PyStepper{name, fewstep::solver(name, options_from_dict(options))};
           }),
           py::arg("name"), py::arg("options") = py::dict())
      .def_property_readonly("name", [](const PyStepper& s) { return s.name; })
      .def_property_readonly("traits", [](const PyStepper& s) {
        const auto& t = s.stepper->traits();
        py::dict d;
        d["name"] = t.name;
        d["order"] = t.order;
        d["nfe_per_step"] = t.nfe_per_step;
        d["stochastic"] = t.stochastic;
        d["multistep"] = t.multistep;
        return d;
      })
      .def(
          "init",
          [](const PyStepper& s, const at::Tensor& x) {
            return std::make_shared<fewstep::SolverState>(s.stepper->init(x));
          },
          py::arg("x"), "The state before the first step from x.")
      .def(
          "step",
          [](const PyStepper& s, const fewstep::Denoiser& model, const at::Tensor& x, double t_from, double t_to,
             const std::shared_ptr<fewstep::SolverState>& state, int64_t index, int64_t num_steps,
             std::optional<at::Generator> generator) {
            FEWSTEP_CHECK_TYPE(state != nullptr, "state should be a SolverState (from init or a previous step), got None");
            FEWSTEP_CHECK_VALUE(num_steps == -1 || (index >= 0 && index < num_steps), "step: index must be in [0, ",
                                "num_steps), got index=", index, ", num_steps=", num_steps);
            model.schedule_ref().check_time(t_from, "s");
            const bool to_zero = t_to == 0.0;  // the σ = 0 marker of a final_sigma="zero" grid
            if (!to_zero) model.schedule_ref().check_time(t_to, "t");
            FEWSTEP_CHECK_VALUE(t_to < t_from, "step: t must be < s, got s=", t_from, ", t=", t_to);
            fewstep::NoiseSampler noise = generator ? fewstep::NoiseSampler(*generator) : fewstep::NoiseSampler();
            fewstep::StepContext ctx;
            ctx.index = index;
            ctx.num_steps = num_steps;
            ctx.noise = &noise;
            fewstep::ModelEvaluator evaluator(model);
            fewstep::StepResult r = [&] {
              py::gil_scoped_release release;
              return to_zero ? fewstep::step_to_zero(evaluator, x, t_from, *state)
                             : s.stepper->step(evaluator, x, t_from, t_to, *state, ctx);
            }();
            return PyStepResult{r.x, r.x0, std::make_shared<fewstep::SolverState>(std::move(r.state)), evaluator.nfe()};
          },
          py::arg("model"), py::arg("x"), py::arg("s"), py::arg("t"), py::arg("state"), py::kw_only(),
          py::arg("index"), py::arg("num_steps"), py::arg("generator") = py::none(),
          "Advances x from s to t (t < s) with the model; index/num_steps place the step in its run (num_steps = -1 "
          "when the steps are not fixed in advance). t = 0 is the final step to sigma = 0 (final_sigma='zero'): "
          "one evaluation, returning its x0. Returns a StepResult; the state given is left unchanged.");
}
