// Bindings of models/: Denoiser (Python callables, TorchScript, exact, guided), GaussianMixture, and
// model files (save_model_file, read_model_file_info, load_model_file, upgrade_model_file).
//
// A Python network is held through a shared_ptr whose deleter takes the GIL, so the C++ side
// may copy and drop Denoisers freely while the GIL is released. Each network call retakes the
// GIL; a Python exception raised by the network leaves as pybind11::error_already_set and is
// restored, with its original type, when it reaches the Python caller.
#include <torch/python.h>
#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/model_file.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/guidance.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "options.h"
#include "trainer.h"  // path_arg

namespace py = pybind11;
using fewstep::Denoiser;
using fewstep::GaussianMixture;
using fewstep::NoiseSchedule;

namespace {

using SharedObject = std::shared_ptr<py::object>;

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

Denoiser::Network python_network(py::object net, std::vector<SharedObject>& held) {
  check_callable(net);
  SharedObject fn = hold(std::move(net));
  held.push_back(fn);
  return [fn](const at::Tensor& x, const at::Tensor& t) -> at::Tensor {
    py::gil_scoped_acquire gil;
    py::object out = (*fn)(x, t);
    return unpack_result(out, "net(x, t)");
  };
}

fewstep::ConditionalNetwork python_conditional_network(py::object net, std::vector<SharedObject>& held_out) {
  check_callable(net);
  SharedObject fn = hold(std::move(net));
  held_out.push_back(fn);
  return [fn](const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond) -> at::Tensor {
    py::gil_scoped_acquire gil;
    py::object out = (*fn)(x, t, cond);
    return unpack_result(out, "net(x, t, cond)");
  };
}

/// The content fingerprint of an nn.Module: its class and its current state_dict (names, dtypes,
/// shapes and bytes), hashed when asked, so it follows training.
std::string module_fingerprint(const py::object& module) {
  fewstep::Sha256 h;
  const py::handle type = py::type::handle_of(module);
  h.field("fewstep.python_module").field(std::string(py::str(type.attr("__module__")))).field(
      std::string(py::str(type.attr("__qualname__"))));
  const py::dict state = module.attr("state_dict")();
  for (const auto& [key, value] : state) {
    h.field(std::string(py::str(key)));
    FEWSTEP_CHECK_TYPE(THPVariable_Check(value.ptr()), "state_dict entry '", std::string(py::str(key)),
                       "' is not a tensor; pass fingerprint= to fewstep.Denoiser");
    fewstep::sha256_update(h, THPVariable_Unpack(value.ptr()));
  }
  return h.hex_digest();
}

/// fingerprint= of fewstep.Denoiser: None (an nn.Module's weights, else none), a str, or a callable
/// returning a str (called whenever the fingerprint is needed).
Denoiser::Fingerprint fingerprint_arg(const py::object& fingerprint, const py::object& net,
                                      std::vector<SharedObject>& held_out) {
  if (fingerprint.is_none()) {
    const py::object nn_module = py::module_::import("torch").attr("nn").attr("Module");
    if (!py::isinstance(net, nn_module)) return {};
    SharedObject held = hold(net);
    held_out.push_back(held);
    return [held] {
      py::gil_scoped_acquire gil;
      return module_fingerprint(*held);
    };
  }
  if (py::isinstance<py::str>(fingerprint)) {
    const std::string text = fingerprint.cast<std::string>();
    FEWSTEP_CHECK_VALUE(!text.empty(), "fingerprint should be a non-empty str, got ''");
    return [text] { return text; };
  }
  FEWSTEP_CHECK_TYPE(PyCallable_Check(fingerprint.ptr()), "fingerprint should be None, a str or a callable returning a "
                     "str, got ", type_name(fingerprint));
  SharedObject held = hold(fingerprint);
  held_out.push_back(held);
  return [held] {
    py::gil_scoped_acquire gil;
    const py::object out = (*held)();
    FEWSTEP_CHECK_TYPE(py::isinstance<py::str>(out), "fingerprint() should return a str, got ", type_name(out));
    return out.cast<std::string>();
  };
}

/// JSON text of a dict (json.dumps) or a str as given; "" for None.
std::string json_arg(const py::object& obj, const char* arg) {
  if (obj.is_none()) return "";
  if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
  FEWSTEP_CHECK_TYPE(py::isinstance<py::dict>(obj), arg, " should be a dict (or its JSON text), got ", type_name(obj));
  try {
    return py::module_::import("json").attr("dumps")(obj, py::arg("allow_nan") = false).cast<std::string>();
  } catch (py::error_already_set& e) {
    FEWSTEP_CHECK_VALUE(false, arg, " cannot be written as JSON: ", e.what());
  }
  return "";
}

py::object json_loads(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

/// A torch.jit.ScriptModule (or an nn.Module, scripted here) as a C++ module: handed over as the
/// bytes torch.jit.save writes (torch's own module type is not shared with this extension).
torch::jit::Module script_module_arg(const py::object& net, const std::string& path) {
  const py::object torch = py::module_::import("torch");
  py::object scripted = net;
  if (!py::isinstance(net, torch.attr("jit").attr("ScriptModule"))) {
    FEWSTEP_CHECK_TYPE(py::isinstance(net, torch.attr("nn").attr("Module")),
                       "net should be a torch.nn.Module or torch.jit.ScriptModule, got ", type_name(net));
    try {
      scripted = torch.attr("jit").attr("script")(net);
    } catch (py::error_already_set& e) {
      FEWSTEP_CHECK_VALUE(false, "net could not be scripted with torch.jit.script (", e.what(),
                          "); script or trace it yourself and pass the ScriptModule");
    }
  }
  const py::object buffer = py::module_::import("io").attr("BytesIO")();
  torch.attr("jit").attr("save")(scripted, buffer);
  const std::string bytes = buffer.attr("getvalue")().cast<std::string>();
  return *fewstep::load_network_bytes(bytes, path, "save_model_file").module;
}

/// device=/dtype= as the library's names (core/device.h parses them): None → "", a str as given, a
/// torch.device / torch.dtype as str() prints it ("cuda:0", "torch.float64").
fewstep::Placement placement_arg(const py::object& device, const py::object& dtype) {
  const auto text = [](const py::object& obj) { return obj.is_none() ? std::string() : std::string(py::str(obj)); };
  return fewstep::parse_placement(text(device), text(dtype));
}

py::tuple output_tuple(const fewstep::DenoiserOutput& out) { return py::make_tuple(out.x0, out.eps); }

/// ModelFileInfo as a dict (see fewstep.read_model_file_info).
py::dict info_dict(const fewstep::ModelFileInfo& info) {
  py::dict d;
  d["schedule"] = std::const_pointer_cast<NoiseSchedule>(info.schedule);
  d["prediction"] = fewstep::to_string(info.prediction);
  d["time_input"] = fewstep::to_string(info.time_input);
  d["time_scale"] = info.time_scale;
  d["sample_shape"] = info.sample_shape;
  d["name"] = info.name;
  d["network"] = info.network.empty() ? py::object(py::none()) : json_loads(info.network);
  d["solver"] = info.solver.empty() ? py::object(py::none()) : py::object(py::str(info.solver));
  d["timesteps"] = info.timesteps.empty() ? py::object(py::none()) : py::cast(double_tensor(info.timesteps));
  d["tuned_grids"] = tuned_grids_to_python(info.tuned_grids);
  d["default_guidance"] = info.default_guidance ? py::object(py::float_(*info.default_guidance)) : py::object(py::none());
  if (info.consistency) {
    py::dict c;
    c["sigma_data"] = info.consistency->sigma_data;
    c["t_min"] = info.consistency->t_min;
    d["consistency"] = c;
  } else {
    d["consistency"] = py::none();
  }
  d["metadata"] = json_loads(info.metadata);
  d["schema"] = info.schema;
  d["model_sha256"] = info.model_sha256.empty() ? py::object(py::none()) : py::object(py::str(info.model_sha256));
  d["parameters"] = info.parameters;
  d["num_classes"] = info.num_classes;
  d["guidance_input"] = info.guidance_input;
  d["sidecar"] = json_loads(info.sidecar_json);
  return d;
}

std::shared_ptr<NoiseSchedule> mutable_schedule(const fewstep::SchedulePtr& s) {
  return std::const_pointer_cast<NoiseSchedule>(s);
}

// ---- Python's cyclic GC through a Denoiser (a net that keeps a reference to its own Denoiser) ----
// The Python objects a Denoiser built here holds (its net, its fingerprint callable) are recorded
// with the Denoiser; the Python type fewstep.Denoiser gets tp_traverse/tp_clear that show them to
// the collector. A reference is shown only while the wrapper is the Denoiser's sole owner and the
// Denoiser the object's sole C++ holder (the use counts recorded at construction): a Denoiser also
// held by C++ (a trainer, a sampler) keeps its net alive, as it must. Touched only under the GIL.
struct HeldObjects {
  std::weak_ptr<const Denoiser> owner;
  std::vector<std::pair<std::weak_ptr<py::object>, long>> objects;  // with the use count of sole ownership
};

std::unordered_map<const Denoiser*, HeldObjects>& held_table() {
  static auto* table = new std::unordered_map<const Denoiser*, HeldObjects>();  // never destroyed (exit order)
  return *table;
}

std::shared_ptr<Denoiser> with_held(std::shared_ptr<Denoiser> d, std::vector<SharedObject> held) {
  auto& table = held_table();
  for (auto it = table.begin(); it != table.end();) it = it->second.owner.expired() ? table.erase(it) : std::next(it);
  HeldObjects entry{d, {}};
  for (const SharedObject& h : held) entry.objects.emplace_back(h, 0);
  held.clear();  // drop the local copies: what remains is the Denoiser's
  for (auto& [weak, count] : entry.objects) count = weak.use_count();
  table[d.get()] = std::move(entry);
  return d;
}

/// The entry of the Denoiser held by `self`, if the wrapper is its sole owner; else nullptr.
HeldObjects* solely_held(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  py::detail::value_and_holder vh = inst->get_value_and_holder();
  if (!vh.holder_constructed()) return nullptr;
  const auto& holder = vh.holder<std::shared_ptr<Denoiser>>();
  if (!holder || holder.use_count() != 1) return nullptr;
  auto it = held_table().find(holder.get());
  if (it == held_table().end()) return nullptr;
  const auto owner = it->second.owner.lock();
  return owner == holder ? &it->second : nullptr;
}

int denoiser_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
  Py_VISIT(Py_TYPE(self));
#endif
  if (HeldObjects* held = solely_held(self)) {
    for (const auto& [weak, count] : held->objects) {
      if (weak.use_count() != count) continue;
      if (const SharedObject obj = weak.lock()) Py_VISIT(obj->ptr());
    }
  }
  return 0;
}

int denoiser_clear(PyObject* self) {
  if (HeldObjects* held = solely_held(self)) {
    for (const auto& [weak, count] : held->objects) {
      if (weak.use_count() != count) continue;
      if (const SharedObject obj = weak.lock()) {
        py::object dropped = std::move(*obj);  // the slot is empty before the object may be freed
        *obj = py::none();
      }
    }
  }
  return 0;
}

void denoiser_gc_setup(PyHeapTypeObject* heap_type) {
  PyTypeObject& type = heap_type->ht_type;
  type.tp_flags |= Py_TPFLAGS_HAVE_GC;
  type.tp_traverse = denoiser_traverse;
  type.tp_clear = denoiser_clear;
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
      m, "Denoiser", "The model object solvers see: (x, t) -> (x0_hat, eps_hat).",
      py::custom_type_setup(denoiser_gc_setup))
      .def(py::init([](py::object net, const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction,
                       const std::string& time_input, double time_scale, const py::object& fingerprint) {
             auto sched = require_schedule(schedule);
             std::vector<SharedObject> held;
             Denoiser::Fingerprint identity = fingerprint_arg(fingerprint, net, held);
             Denoiser::Network network = python_network(std::move(net), held);
             return with_held(std::make_shared<Denoiser>(std::move(network), sched,
                                                         fewstep::parse_prediction(prediction),
                                                         fewstep::parse_time_input(time_input), time_scale,
                                                         std::move(identity)),
                              std::move(held));
           }),
           py::arg("net"), py::arg("schedule"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
           py::arg("time_scale") = 1.0, py::kw_only(), py::arg("fingerprint") = py::none(),
           "Wraps net(x, t). fingerprint: the network's content identity for caches of its solves (a str, or a "
           "callable returning one); None = an nn.Module's class and current state_dict, hashed at each use; a "
           "plain function then has none (fewstep refuses to cache its solves).")
      .def_static(
          "torchscript",
          [](const std::string& path, const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction,
             const std::string& time_input, double time_scale, const py::object& device, const py::object& dtype) {
            auto sched = require_schedule(schedule);
            auto pred = fewstep::parse_prediction(prediction);
            auto tin = fewstep::parse_time_input(time_input);
            const fewstep::Placement placement = placement_arg(device, dtype);
            py::gil_scoped_release release;
            return Denoiser::torchscript(path, sched, pred, tin, time_scale, placement);
          },
          py::arg("path"), py::arg("schedule"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
          py::arg("time_scale") = 1.0, py::kw_only(), py::arg("device") = py::none(), py::arg("dtype") = py::none(),
          "Loads a TorchScript network forward(x, t) -> prediction. device ('cpu', 'cuda', 'cuda:N' or a "
          "torch.device) maps it there as it is read (map_location); dtype (float32/float64, str or torch.dtype) "
          "converts its parameters; None keeps what the file holds. Pass x on that device and in that dtype.")
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
            std::vector<SharedObject> held;
            auto network = python_conditional_network(std::move(net), held);
            auto guided = std::make_shared<Denoiser>(fewstep::classifier_free_guidance(
                std::move(network), sched, fewstep::parse_prediction(prediction), as_tensor(cond, "cond"),
                as_tensor(uncond, "uncond"), guidance_scale, fewstep::parse_time_input(time_input), time_scale));
            return with_held(std::move(guided), std::move(held));
          },
          py::arg("net"), py::kw_only(), py::arg("schedule"), py::arg("cond"), py::arg("uncond"),
          py::arg("guidance_scale"), py::arg("prediction") = "eps", py::arg("time_input") = "t",
          py::arg("time_scale") = 1.0)
      .def(
          "__call__",
          [](const Denoiser& d, const at::Tensor& x, double t) {
            d.schedule_ref().check_time(t, "t");  // [t_min, t_max] up to a relative 1e-12
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
      .def_property_readonly(
          "fingerprint",
          [](const Denoiser& d) -> py::object {
            std::optional<std::string> f;
            {
              py::gil_scoped_release release;
              f = d.fingerprint();
            }
            return f ? py::object(py::str(*f)) : py::object(py::none());
          },
          "The content fingerprint (64 hex digits) that caches of this model's solves are keyed by, or None.")
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
      [](const py::object& path_obj, const py::object& label, std::optional<double> guidance,
         const py::object& device, const py::object& dtype) {
        const std::string path = path_arg(path_obj, "path", false);
        const fewstep::Placement placement = placement_arg(device, dtype);
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
          return fewstep::load_model_file(path, conditioning, placement);
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
        out["tuned_grids"] = tuned_grids_to_python(file.info.tuned_grids);
        out["sha256"] = file.sha256;
        out["schema"] = file.info.schema;
        return out;
      },
      py::arg("path"), py::arg("label") = py::none(), py::arg("guidance") = py::none(), py::kw_only(),
      py::arg("device") = py::none(), py::arg("dtype") = py::none(),
      "Loads a model written by `fewstep train` or `fewstep distill` (TorchScript + sidecar .json) into a dict: "
      "denoiser, schedule, prediction, sample_shape, name, path, sidecar_json, num_classes, guidance_input, "
      "solver and timesteps (a distilled student's own grid; None otherwise), tuned_grids (optimised grids, "
      "docs/grids.md). label (int or [batch] integer "
      "tensor; None = no class) and guidance (scale s) condition a class-conditional model. device ('cpu', 'cuda', "
      "'cuda:N' or a torch.device; map_location) and dtype (float32/float64) place the network; None keeps the "
      "file's. ValueError naming "
      "the file when either file is missing or the .pt does not match its sidecar's SHA-256, or naming "
      "label/guidance when the network cannot take them.");

  m.def("model_sidecar_path", &fewstep::model_sidecar_path, py::arg("model_path"),
        "'dir/name.pt' -> 'dir/name.json': where a model file's sidecar lives.");
  m.def(
      "read_model_file_info",
      [](const py::object& path_obj) {
        const std::string path = path_arg(path_obj, "path", false);
        fewstep::ModelFileInfo info;
        {
          py::gil_scoped_release release;
          info = fewstep::read_model_file_info(path);
        }
        return info_dict(info);
      },
      py::arg("path"),
      "The validated sidecar of the model file `path` (the .pt is not read), field by field: schedule (object), "
      "prediction, time_input, time_scale, sample_shape, name, network, solver, timesteps, default_guidance, "
      "consistency, metadata (every other field), schema, model_sha256, parameters, num_classes, guidance_input, "
      "sidecar (the whole JSON). ValueError naming the sidecar when it is missing, not JSON, nested absurdly "
      "deep, not a fewstep model sidecar, or invalid.");
  m.def(
      "_parse_model_sidecar",
      [](const py::object& sidecar) { return info_dict(fewstep::parse_model_sidecar(json_arg(sidecar, "sidecar"))); },
      py::arg("sidecar"), "read_model_file_info of a sidecar given as a dict (or its JSON text).");
  m.def(
      "_student_metadata",
      [](const py::object& teacher_metadata, const py::object& distillation) {
        return json_loads(fewstep::student_metadata(json_arg(teacher_metadata, "teacher_metadata"),
                                                    json_arg(distillation, "distillation")));
      },
      py::arg("teacher_metadata"), py::arg("distillation"),
      "student_metadata (models/model_file.h): the teacher's metadata dict as a student inherits it, with "
      "`distillation` as its record.");
  m.def(
      "save_model_file",
      [](const py::object& path_obj, const py::object& net, const std::shared_ptr<NoiseSchedule>& schedule,
         const std::string& prediction, const std::vector<int64_t>& sample_shape, const std::string& time_input,
         double time_scale, const std::optional<std::string>& name, const py::object& network,
         const std::optional<std::string>& solver, const py::object& timesteps,
         const std::optional<double>& default_guidance, const py::object& consistency, const py::object& metadata) {
        const std::string path = path_arg(path_obj, "path", false);
        fewstep::ModelFileInfo info;
        info.schedule = require_schedule(schedule);
        info.prediction = fewstep::parse_prediction(prediction);
        info.time_input = fewstep::parse_time_input(time_input);
        info.time_scale = time_scale;
        info.sample_shape = sample_shape;
        info.name = name.value_or("");
        info.network = json_arg(network, "network");
        info.solver = solver.value_or("");
        if (!timesteps.is_none()) {
          const at::Tensor grid = as_tensor(timesteps, "timesteps").to(at::kDouble).contiguous();
          FEWSTEP_CHECK_VALUE(grid.dim() == 1, "timesteps should be 1-D, got shape ", grid.sizes());
          info.timesteps.assign(grid.data_ptr<double>(), grid.data_ptr<double>() + grid.numel());
        }
        info.default_guidance = default_guidance;
        if (!consistency.is_none()) {
          FEWSTEP_CHECK_TYPE(py::isinstance<py::dict>(consistency), "consistency should be a dict {'sigma_data', "
                             "'t_min'}, got ", type_name(consistency));
          const py::dict c = consistency;
          fewstep::ModelConsistency mc;
          for (const auto& [key, value] : c) {
            const std::string k = py::str(key);
            FEWSTEP_CHECK_VALUE(k == "sigma_data" || k == "t_min", "consistency has no field '", k,
                                "' (expected sigma_data, t_min)");
            (k == "sigma_data" ? mc.sigma_data : mc.t_min) = value.cast<double>();
          }
          info.consistency = mc;
        }
        const std::string meta = json_arg(metadata, "metadata");
        if (!meta.empty()) info.metadata = meta;
        const torch::jit::Module module = script_module_arg(net, path);
        std::string written;
        {
          py::gil_scoped_release release;
          written = fewstep::save_model_file(path, module, info);
        }
        return json_loads(written);
      },
      py::arg("path"), py::arg("net"), py::kw_only(), py::arg("schedule"), py::arg("prediction"),
      py::arg("sample_shape"), py::arg("time_input") = "t", py::arg("time_scale") = 1.0,
      py::arg("name") = py::none(), py::arg("network") = py::none(), py::arg("solver") = py::none(),
      py::arg("timesteps") = py::none(), py::arg("default_guidance") = py::none(),
      py::arg("consistency") = py::none(), py::arg("metadata") = py::none(),
      "Writes `net` (a torch.jit.ScriptModule, or an nn.Module scripted here) as the model file `path` plus its "
      "sidecar, so fs.load_model_file(path), fs.sample(path, x_T) and `fewstep sample --model path` read it. "
      "schedule/prediction/sample_shape/time_input/time_scale say how to read the network; timesteps (and "
      "solver, default 'ddim') a student's own grid; network a {'kind', 'config'} dict (config.num_classes, "
      "config.guidance_input for conditional networks); default_guidance; consistency {'sigma_data', 't_min'}; "
      "metadata any other JSON-able fields. Everything is validated (the grid inside the schedule's range, one "
      "forward pass on a sample of sample_shape) before a byte is written; the .pt and then the sidecar, which "
      "records the .pt's SHA-256, are replaced atomically. Returns the sidecar as a dict.");
  m.def(
      "upgrade_model_file",
      [](const py::object& path_obj) {
        const std::string path = path_arg(path_obj, "path", false);
        std::string written;
        {
          py::gil_scoped_release release;
          written = fewstep::upgrade_model_file(path);
        }
        return json_loads(written);
      },
      py::arg("path"),
      "Rewrites the sidecar of `path` in the current schema, recording the SHA-256 of the .pt as it is now "
      "(for schema-1 files whose .pt is known to be good). Returns the new sidecar as a dict.");
}
