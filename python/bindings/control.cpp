// Bindings of control/: the step-size controller slot and the PID controller.
//
// Python defaults for everything but the tolerances mirror PIDOptions; rtol and atol are
// required keywords here too (fewstep.sample supplies DPM-Solver's values for solver="dpm_adaptive").
#include <torch/python.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "fewstep/control/controller.h"
#include "fewstep/control/pid.h"

namespace py = pybind11;

void bind_control(py::module_& m) {
  py::class_<fewstep::StepController, std::shared_ptr<fewstep::StepController>>(
      m, "StepController",
      "Base of the step-size controllers of fewstep.sample's adaptive mode (C++ fewstep::StepController).")
      .def("describe", &fewstep::StepController::describe, "One line with the settings.")
      .def_property_readonly("requires_error_estimate", &fewstep::StepController::requires_error_estimate,
                             "Whether the solver must give an embedded error estimate.")
      .def_property_readonly("max_steps", &fewstep::StepController::max_steps,
                             "Maximum number of attempted steps (accepted + rejected) per run.")
      .def("__repr__", &fewstep::StepController::describe);

  py::class_<fewstep::PIDController, fewstep::StepController, std::shared_ptr<fewstep::PIDController>>(
      m, "PIDController",
      "I/PI/PID step-size control of an embedded error estimate (Soderlind 2003, in diffrax's form).\n\n"
      "Accepts a step when E = max over samples of RMS(err / (atol + rtol*max(|x|, |x_next|))) <= 1 and\n"
      "scales the step (in log-SNR by default) by safety * E^(-(p+i+d)/k) * E_prev^((p+2d)/k) * E_prev2^(-d/k),\n"
      "clipped to [factor_min, factor_max] (to [factor_min, safety] after a rejection). pcoeff=dcoeff=0,\n"
      "icoeff=1 (default) is the I controller of DPM-Solver's adaptive solver; first_step=0 means its\n"
      "h_init = 0.05 in log-SNR. Exceeding max_steps attempts is an error naming what to change.")
      .def(py::init([](double rtol, double atol, double pcoeff, double icoeff, double dcoeff, double safety,
                       double factor_min, double factor_max, double first_step, double dt_min, double dt_max,
                       int64_t max_steps, const std::string& step_variable, std::optional<int> error_order) {
             fewstep::PIDOptions o;
             o.pcoeff = pcoeff;
             o.icoeff = icoeff;
             o.dcoeff = dcoeff;
             o.safety = safety;
             o.factor_min = factor_min;
             o.factor_max = factor_max;
             o.first_step = first_step;
             o.dt_min = dt_min;
             o.dt_max = dt_max;
             o.max_steps = max_steps;
             o.step_variable = fewstep::parse_step_variable(step_variable);
             o.error_order = error_order.value_or(0);
             return std::make_shared<fewstep::PIDController>(rtol, atol, o);
           }),
           py::kw_only(), py::arg("rtol"), py::arg("atol"), py::arg("pcoeff") = 0.0, py::arg("icoeff") = 1.0,
           py::arg("dcoeff") = 0.0, py::arg("safety") = 0.9, py::arg("factor_min") = 0.2,
           py::arg("factor_max") = 10.0, py::arg("first_step") = 0.0, py::arg("dt_min") = 0.0,
           py::arg("dt_max") = std::numeric_limits<double>::infinity(), py::arg("max_steps") = 4096,
           py::arg("step_variable") = "logsnr", py::arg("error_order") = py::none())
      .def_property_readonly("rtol", &fewstep::PIDController::rtol)
      .def_property_readonly("atol", &fewstep::PIDController::atol)
      .def_property_readonly("pcoeff", [](const fewstep::PIDController& c) { return c.options().pcoeff; })
      .def_property_readonly("icoeff", [](const fewstep::PIDController& c) { return c.options().icoeff; })
      .def_property_readonly("dcoeff", [](const fewstep::PIDController& c) { return c.options().dcoeff; })
      .def_property_readonly("safety", [](const fewstep::PIDController& c) { return c.options().safety; })
      .def_property_readonly("factor_min", [](const fewstep::PIDController& c) { return c.options().factor_min; })
      .def_property_readonly("factor_max", [](const fewstep::PIDController& c) { return c.options().factor_max; })
      .def_property_readonly("first_step", [](const fewstep::PIDController& c) { return c.options().first_step; })
      .def_property_readonly("dt_min", [](const fewstep::PIDController& c) { return c.options().dt_min; })
      .def_property_readonly("dt_max", [](const fewstep::PIDController& c) { return c.options().dt_max; })
      .def_property_readonly("step_variable",
                             [](const fewstep::PIDController& c) { return to_string(c.options().step_variable); })
      .def_property_readonly("error_order", [](const fewstep::PIDController& c) -> std::optional<int> {
        if (c.options().error_order == 0) return std::nullopt;
        return c.options().error_order;
      });

  m.def("scaled_error_norm", &fewstep::scaled_error_norm, py::arg("error"), py::arg("x"), py::arg("x_next"),
        py::kw_only(), py::arg("rtol"), py::arg("atol"),
        "max over the batch of the per-sample RMS of error / (atol + rtol * max(|x|, |x_next|)).");
}
