// Bindings of solvers/registry.h: the registered steppers and their traits.
#include <torch/python.h>

#include <string>

#include "fewstep/solvers/registry.h"
#include "fewstep/solvers/stepper.h"

namespace py = pybind11;

namespace {

py::dict traits_dict(const fewstep::StepperTraits& t) {
  py::dict d;
  d["name"] = t.name;
  d["order"] = t.order;
  d["nfe_per_step"] = t.nfe_per_step;
  d["stochastic"] = t.stochastic;
  d["has_error_estimate"] = t.has_error_estimate;
  d["multistep"] = t.multistep;
  d["revises_start"] = t.revises_start;
  d["adaptive_by_default"] = t.adaptive_by_default;
  d["needs"] = fewstep::to_string(t.needs);
  d["summary"] = t.summary;
  d["options"] = t.options;
  return d;
}

}  // namespace

void bind_solvers(py::module_& m) {
  m.def(
      "solvers",
      []() {
        py::list out;
        for (const auto& entry : fewstep::registered_steppers()) out.append(traits_dict(entry.traits));
        return out;
      },
      "The registered steppers, in registration order, as dicts of their traits.");
  m.def(
      "solver_info", [](const std::string& name) { return traits_dict(fewstep::stepper_traits(name)); },
      py::arg("name"), "Traits of one registered stepper (ValueError listing the names if unknown).");
  m.def("solver_names", &fewstep::stepper_names, "Names of the registered steppers.");
}
