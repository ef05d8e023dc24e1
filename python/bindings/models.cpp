// Bindings of models/: Denoiser (Python callables, TorchScript, exact, guided), GaussianMixture.
//
// A Python network is held through a shared_ptr whose deleter takes the GIL, so the C++ side
// may copy and drop Denoisers freely while the GIL is released. Each network call retakes the
// GIL; a Python exception raised by the network leaves as pybind11::error_already_set and is
// restored, with its original type, when it reaches the Python caller.
#include <torch/python.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/model_file.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/guidance.h"
#include "fewstep/schedules/schedule.h"

namespace py = pybind11;
using fewstep::Denoiser;
using fewstep::GaussianMixture;
using fewstep::NoiseSchedule;

namespace {

using SharedObject = std::shared_ptr<py::object>;

/// Owns a Python object from C++ code that may run without the GIL.
SharedObject hold(py::object obj) {
  return SharedObject(new py::object(std::move(obj)), [](py::object* p) {
    if (!Py_IsInitialized()) {  // interpreter already gone: leak the reference
      p->release();
      delete p;
      return;
    }
    py::gil_scoped_acquire gil;
    delete p;
  });
}

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}

at::Tensor unpack_result(const py::object& out, const char* what) {
  FEWSTEP_CHECK_TYPE(THPVariable_Check(out.ptr()), what, " should return a torch.Tensor, got ", type_name(out));
  return THPVariable_Unpack(out.ptr());
}

/// A tensor from a tensor (as is) or an array-like (torch.as_tensor, float64 for floats).
at::Tensor as_tensor(const py::object& obj, const char* arg) {
  if (THPVariable_Check(obj.ptr())) return THPVariable_Unpack(obj.ptr());
  py::object torch = py::module_::import("torch");
  try {
    at::Tensor t = THPVariable_Unpack(torch.attr("as_tensor")(obj).ptr());
    return t.is_floating_point() ? t : t.to(at::kDouble);
  } catch (py::error_already_set&) {
    FEWSTEP_CHECK_TYPE(false, arg, " should be a tensor or array-like, got ", type_name(obj));
  }
  return {};
}

void check_callable(const py::object& net) {
  FEWSTEP_CHECK_TYPE(PyCallable_Check(net.ptr()), "net should be a callable or torch.nn.Module taking (x, t), got ",
                     type_name(net));
}

fewstep::SchedulePtr require_schedule(const std::shared_ptr<NoiseSchedule>& schedule) {
  FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule (e.g. fewstep.VPLinear()), got None");
  return schedule;
}

Denoiser::Network python_network(py::object net) {
  check_callable(net);
  SharedObject fn = hold(std::move(net));
  return [fn](const at::Tensor& x, const at::Tensor& t) -> at::Tensor {
    py::gil_scoped_acquire gil;
    py::object out = (*fn)(x, t);
    return unpack_result(out, "net(x, t)");
  };
}

fewstep::ConditionalNetwork python_conditional_network(py::object net) {
  check_callable(net);
  SharedObject fn = hold(std::move(net));
  return [fn](const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond) -> at::Tensor {
    py::gil_scoped_acquire gil;
    py::object out = (*fn)(x, t, cond);
    return unpack_result(out, "net(x, t, cond)");
  };
}

py::tuple output_tuple(const fewstep::DenoiserOutput& out) { return py::make_tuple(out.x0, out.eps); }

std::shared_ptr<NoiseSchedule> mutable_schedule(const fewstep::SchedulePtr& s) {
  return std::const_pointer_cast<NoiseSchedule>(s);
}

}  // namespace

void bind_models(py::module_& m) {
  py::class_<GaussianMixture, std::shared_ptr<GaussianMixture>>(
      m, "GaussianMixture",
      "Gaussian mixture sum_k w_k N(mu_k, C_k) with exact denoisers under every linear forward process.")
      .def(py::init([](const py::object& weights, const py::object& means, const py::object& covariances) {
             return std::make_shared<GaussianMixture>(as_tensor(weights, "weights"), as_tensor(means, "means"),
                                                      as_tensor(covariances, "covariances"));
           }),
           py::arg("weights"), py::arg("means"), py::arg("covariances"))
      .def_static("random", &GaussianMixture::random, py::arg("dim"), py::arg("components"), py::arg("seed") = 0,
                  py::arg("diagonal") = false, py::arg("spread") = 1.0, py::arg("min_var") = 0.01,
                  py::arg("max_var") = 0.1)
      .def_property_readonly("dim", &GaussianMixture::dim)
      .def_property_readonly("components", &GaussianMixture::components)
      .def_property_readonly("diagonal", &GaussianMixture::diagonal)
      .def_property_readonly("weights", &GaussianMixture::weights)
      .def_property_readonly("means", &GaussianMixture::means)
      .def_property_readonly("covariances", &GaussianMixture::covariances)
      .def("sample", &GaussianMixture::sample, py::arg("n"), py::arg("generator") = py::none(),
           py::call_guard<py::gil_scoped_release>())
      .def("sample_with_labels", &GaussianMixture::sample_with_labels, py::arg("n"),
           py::arg("generator") = py::none(), py::call_guard<py::gil_scoped_release>())
      .def("denoise",
           [](const GaussianMixture& g, const at::Tensor& x, double alpha, double sigma) {
             fewstep::DenoiserOutput out;
             {
               py::gil_scoped_release release;
               out = g.denoise(x, alpha, sigma);
             }
             return output_tuple(out);
           },
           py::arg("x"), py::arg("alpha"), py::arg("sigma"))
      .def("log_prob", &GaussianMixture::log_prob, py::arg("x"), py::arg("alpha") = 1.0, py::arg("sigma") = 0.0,
           py::call_guard<py::gil_scoped_release>())
      .def("responsibilities", &GaussianMixture::responsibilities, py::arg("x"), py::arg("alpha") = 1.0,
           py::arg("sigma") = 0.0, py::call_guard<py::gil_scoped_release>())
      .def("mean", &GaussianMixture::mean)
      .def("covariance", &GaussianMixture::covariance)
      .def("__repr__", [](const GaussianMixture& g) {
        return "GaussianMixture(dim=" + std::to_string(g.dim()) + ", components=" + std::to_string(g.components()) +
               (g.diagonal() ? ", diagonal=True)" : ")");
      });

  py::class_<Denoiser, std::shared_ptr<Denoiser>>(
      m, "Denoiser", "The model object solvers see: (x, t) -> (x0_hat, eps_hat).")
      .def(py::init([](py::object net, const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction,
                       const std::string& time_input, double time_scale) {
             auto sched = require_schedule(schedule);
             return std::make_shared<Denoiser>(python_network(std::move(net)), sched,
                                               fewstep::parse_prediction(prediction),
                                               fewstep::parse_time_input(time_input), time_scale);
           }),
           py::arg("net"), py::arg("schedule"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
           py::arg("time_scale") = 1.0)
      .def_static(
          "torchscript",
          [](const std::string& path, const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction,
             const std::string& time_input, double time_scale) {
            auto sched = require_schedule(schedule);
            auto pred = fewstep::parse_prediction(prediction);
            auto tin = fewstep::parse_time_input(time_input);
            py::gil_scoped_release release;
            return Denoiser::torchscript(path, sched, pred, tin, time_scale);
          },
          py::arg("path"), py::arg("schedule"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
          py::arg("time_scale") = 1.0)
      .def_static(
          "exact",
          [](const std::shared_ptr<GaussianMixture>& mixture, const std::shared_ptr<NoiseSchedule>& schedule) {
            FEWSTEP_CHECK_TYPE(mixture != nullptr, "mixture should be a fewstep.GaussianMixture, got None");
            return Denoiser::exact(mixture, require_schedule(schedule));
          },
          py::arg("mixture"), py::arg("schedule"))
      .def_static(
          "guided",
          [](py::object net, const std::shared_ptr<NoiseSchedule>& schedule, const py::object& cond,
             const py::object& uncond, double guidance_scale, const std::string& prediction,
             const std::string& time_input, double time_scale) {
            auto sched = require_schedule(schedule);
            return fewstep::classifier_free_guidance(
                python_conditional_network(std::move(net)), sched, fewstep::parse_prediction(prediction),
                as_tensor(cond, "cond"), as_tensor(uncond, "uncond"), guidance_scale,
                fewstep::parse_time_input(time_input), time_scale);
          },
          py::arg("net"), py::kw_only(), py::arg("schedule"), py::arg("cond"), py::arg("uncond"),
          py::arg("guidance_scale"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
          py::arg("time_scale") = 1.0)
      .def(
          "__call__",
          [](const Denoiser& d, const at::Tensor& x, double t) {
            fewstep::DenoiserOutput out;
            {
              py::gil_scoped_release release;
              out = d(x, t);
            }
            return output_tuple(out);
          },
          py::arg("x"), py::arg("t"), "Returns (x0_hat, eps_hat) at host time t.")
      .def_property_readonly("schedule", [](const Denoiser& d) { return mutable_schedule(d.schedule()); })
      .def_property_readonly("description", &Denoiser::description)
      .def("__repr__", [](const Denoiser& d) { return "<fewstep.Denoiser " + d.description() + ">"; });

  m.def(
      "convert_prediction",
      [](const at::Tensor& x, const at::Tensor& out, const std::string& prediction,
         const std::shared_ptr<NoiseSchedule>& schedule, double t) {
        return output_tuple(fewstep::convert_prediction(x, out, fewstep::parse_prediction(prediction),
                                                        *require_schedule(schedule), t));
      },
      py::arg("x"), py::arg("output"), py::arg("prediction"), py::arg("schedule"), py::arg("t"),
      "Converts a network's native output at time t to (x0_hat, eps_hat).");
  m.def(
      "native_from_x0_eps",
      [](const at::Tensor& x0, const at::Tensor& eps, const std::string& prediction,
         const std::shared_ptr<NoiseSchedule>& schedule, double t) {
        return fewstep::native_from_x0_eps(x0, eps, fewstep::parse_prediction(prediction),
                                           *require_schedule(schedule), t);
      },
      py::arg("x0"), py::arg("eps"), py::arg("prediction"), py::arg("schedule"), py::arg("t"),
      "The native target a network predicting `prediction` should output at time t.");
  m.def(
      "network_time",
      [](const std::shared_ptr<NoiseSchedule>& schedule, double t, const std::string& time_input, double time_scale) {
        return fewstep::network_time(*require_schedule(schedule), t, fewstep::parse_time_input(time_input),
                                     time_scale);
      },
      py::arg("schedule"), py::arg("t"), py::arg("time_input") = "t", py::arg("time_scale") = 1.0,
      "The network's time input for host time t.");

  m.def(
      "load_model_file",
      [](const std::string& path, const py::object& label, std::optional<double> guidance) {
        fewstep::ModelConditioning conditioning;
        if (!label.is_none()) {
          if (py::isinstance<py::int_>(label) && !py::isinstance<py::bool_>(label)) {
            conditioning.labels = at::full({1}, label.cast<int64_t>(), at::kLong);
          } else {
            conditioning.labels = as_tensor(label, "label");
            FEWSTEP_CHECK_TYPE(!at::isFloatingType(conditioning.labels.scalar_type()),
                               "label should be an int or an integer tensor of class indices, got ",
                               conditioning.labels.scalar_type());
          }
        }
        conditioning.guidance = guidance;
        fewstep::ModelFile file = [&] {
          py::gil_scoped_release release;
          return fewstep::load_model_file(path, conditioning);
        }();
        py::dict out;
        out["denoiser"] = std::make_shared<Denoiser>(std::move(file.denoiser));
        out["schedule"] = std::const_pointer_cast<NoiseSchedule>(file.schedule);
        out["prediction"] = fewstep::to_string(file.prediction);
        out["sample_shape"] = file.sample_shape;
        out["name"] = file.name;
        out["path"] = file.path;
        out["sidecar_json"] = file.sidecar_json;
        out["num_classes"] = file.num_classes;
        out["guidance_input"] = file.guidance_input;
        out["solver"] = file.solver.empty() ? py::object(py::none()) : py::object(py::str(file.solver));
        out["timesteps"] = file.timesteps.empty()
                               ? py::object(py::none())
                               : py::cast(at::tensor(file.timesteps, at::TensorOptions().dtype(at::kDouble)));
        return out;
      },
      py::arg("path"), py::arg("label") = py::none(), py::arg("guidance") = py::none(),
      "Loads a model written by `fewstep train` or `fewstep distill` (TorchScript + sidecar .json) into a dict: "
      "denoiser, schedule, prediction, sample_shape, name, path, sidecar_json, num_classes, guidance_input, "
      "solver and timesteps (a distilled student's own grid; None otherwise). label (int or [batch] integer "
      "tensor; None = no class) and guidance (scale s) condition a class-conditional model. ValueError naming "
      "the file when either file is missing, or naming label/guidance when the network cannot take them.");
}
