// Bindings of sample/sample.h: the sampling driver and its Solution.
//
// The driver loop runs with the GIL released; the per-step callback (and any Python network
// inside the Denoiser) retakes it for the duration of each call.
#include <torch/python.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/sample/reference.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/sample.h"
#include "fewstep/core/noise.h"

#include "options.h"

namespace py = pybind11;

namespace {

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}


std::vector<double> grid_from_object(const py::object& obj) {
  at::Tensor t;
  if (THPVariable_Check(obj.ptr())) {
    t = THPVariable_Unpack(obj.ptr());
  } else {
    py::object torch = py::module_::import("torch");
    try {
      t = THPVariable_Unpack(torch.attr("as_tensor")(obj, py::arg("dtype") = torch.attr("float64")).ptr());
    } catch (py::error_already_set&) {
      FEWSTEP_CHECK_TYPE(false, "timesteps should be a tensor or a sequence of floats, got ", type_name(obj));
    }
  }
  FEWSTEP_CHECK_TYPE(!t.is_complex(), "timesteps should be real, got ", t.scalar_type());
  t = t.detach().to(at::kCPU, at::kDouble).contiguous();
  FEWSTEP_CHECK_VALUE(t.dim() == 1, "timesteps should be one-dimensional, got shape ", t.sizes());
  const double* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

fewstep::StepCallback python_callback(py::object callback) {
  FEWSTEP_CHECK_TYPE(PyCallable_Check(callback.ptr()), "callback should be callable, got ", type_name(callback));
  auto fn = hold(std::move(callback));
  return [fn](const fewstep::StepInfo& info) {
    py::gil_scoped_acquire gil;
    py::dict d;
    d["index"] = info.index;
    d["num_steps"] = info.num_steps;
    d["t"] = info.t;
    d["t_next"] = info.t_next;
    d["x"] = info.x;
    d["x0"] = info.x0;
    d["nfe"] = info.nfe;
    (*fn)(d);
  };
}


}  // namespace

/// Python keyword options → fewstep::Options: bool → bool, int → int64, float → double,
/// str → string; anything else is a TypeError naming the key.
std::shared_ptr<py::object> hold(py::object obj) {
  return std::shared_ptr<py::object>(new py::object(std::move(obj)), [](py::object* p) {
    if (!Py_IsInitialized()) {
      p->release();
      delete p;
      return;
    }
    py::gil_scoped_acquire gil;
    delete p;
  });
}

at::Tensor double_tensor(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v), at::TensorOptions().dtype(at::kDouble));
}

fewstep::Options options_from_dict(const py::dict& dict) {
  fewstep::Options options;
  for (const auto& item : dict) {
    const std::string key = py::str(item.first);
    const py::handle value = item.second;
    if (py::isinstance<py::bool_>(value)) {
      options.set(key, value.cast<bool>());
    } else if (py::isinstance<py::int_>(value)) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
      FEWSTEP_CHECK_VALUE(overflow == 0, "option '", key, "' must fit in a 64-bit integer, got ",
                          std::string(py::str(value)));
      options.set(key, static_cast<int64_t>(v));
    } else if (py::isinstance<py::float_>(value)) {
      options.set(key, value.cast<double>());
    } else if (py::isinstance<py::str>(value)) {
      options.set(key, value.cast<std::string>());
    } else {
      FEWSTEP_CHECK_TYPE(false, "solver option '", key, "' should be a bool, int, float or str, got ",
                         type_name(value));
    }
  }
  return options;
}

void bind_sample(py::module_& m) {
  py::class_<fewstep::Solution, std::shared_ptr<fewstep::Solution>>(m, "Solution",
                                                                     "Result of fewstep.sample.")
      .def_readonly("x", &fewstep::Solution::x, "The final sample.")
      .def_readonly("nfe", &fewstep::Solution::nfe, "Exact number of model evaluations.")
      .def_readonly("steps", &fewstep::Solution::steps, "Number of steps taken.")
      .def_readonly("accepted", &fewstep::Solution::accepted, "Accepted steps (adaptive sampling; 0 on a fixed grid).")
      .def_readonly("rejected", &fewstep::Solution::rejected, "Rejected step attempts (adaptive sampling).")
      .def_readonly("tuned_grid", &fewstep::Solution::tuned_grid,
                    "True when the grid was the model file's tuned grid for this solver and NFE (docs/grids.md).")
      .def_property_readonly(
          "timesteps", [](const fewstep::Solution& s) { return double_tensor(s.timesteps); },
          "The grid used (float64 tensor).")
      .def_readonly("trajectory", &fewstep::Solution::trajectory,
                    "x at every grid point (only with keep_trajectory=True).")
      .def_property_readonly(
          "stats",
          [](const fewstep::Solution& s) {
            py::list out;
            for (const auto& st : s.stats) {
              py::dict d;
              d["index"] = st.index;
              d["t"] = st.t;
              d["t_next"] = st.t_next;
              d["nfe"] = st.nfe;
              d["rejected"] = st.rejected;
              out.append(d);
            }
            return out;
          },
          "Per-step statistics: dicts {index, t, t_next, nfe (evaluations of that step, with its rejected "
          "attempts), rejected (attempts rejected before it; adaptive sampling)}.")
      .def("__repr__", [](const fewstep::Solution& s) {
        return "Solution(x=" + std::string(py::str(py::cast(s.x.sizes().vec()))) + ", nfe=" + std::to_string(s.nfe) +
               ", steps=" + std::to_string(s.steps) + ")";
      });

  m.def(
      "_sample",
      [](const std::shared_ptr<fewstep::Denoiser>& model, const at::Tensor& x_T, const std::string& solver,
         const py::dict& solver_options, std::optional<int64_t> steps, std::optional<int64_t> nfe,
         const py::object& timesteps, const std::string& spacing, std::optional<double> t_start,
         std::optional<double> t_end, std::optional<int64_t> steps_offset, const std::string& final_sigma,
         std::optional<double> rtol, std::optional<double> atol,
         const std::shared_ptr<fewstep::StepController>& controller, const std::string& model_solver,
         const py::object& model_timesteps, const py::object& model_tuned_grids,
         const std::vector<int64_t>& model_sample_shape, bool use_tuned_grid,
         bool denoise_to_zero, bool check_finite, bool keep_trajectory,
         const py::object& callback, std::optional<at::Generator> generator, const std::vector<uint64_t>& seeds) {
        FEWSTEP_CHECK_TYPE(model != nullptr, "model should be a fewstep.Denoiser, got None");
        fewstep::SampleRequest request;
        request.model = model;
        request.x_T = x_T;
        request.solver = solver;
        request.solver_options = options_from_dict(solver_options);
        request.steps = steps;
        request.nfe = nfe;
        if (!timesteps.is_none()) request.timesteps = grid_from_object(timesteps);
        request.spacing = fewstep::parse_spacing(spacing);
        request.t_start = t_start;
        request.t_end = t_end;
        request.steps_offset = steps_offset;
        request.final_sigma = fewstep::parse_final_sigma(final_sigma);
        request.rtol = rtol;
        request.atol = atol;
        request.controller = controller;
        request.model_defaults.solver = model_solver;
        if (!model_timesteps.is_none()) request.model_defaults.timesteps = grid_from_object(model_timesteps);
        request.model_defaults.tuned_grids = tuned_grids_from_python(model_tuned_grids);
        request.model_defaults.sample_shape = model_sample_shape;
        request.use_tuned_grid = use_tuned_grid;
        request.options.denoise_to_zero = denoise_to_zero;
        request.options.check_finite = check_finite;
        request.options.keep_trajectory = keep_trajectory;
        request.options.generator = std::move(generator);
        request.options.seeds = seeds;
        if (!callback.is_none()) request.options.callback = python_callback(callback);
        auto solution = std::make_shared<fewstep::Solution>();
        {
          py::gil_scoped_release release;
          *solution = fewstep::sample(request);
        }
        return solution;
      },
      py::arg("model"), py::arg("x_T"), py::kw_only(), py::arg("solver") = "", py::arg("solver_options") = py::dict(),
      py::arg("steps") = py::none(), py::arg("nfe") = py::none(), py::arg("timesteps") = py::none(),
      py::arg("spacing") = "logsnr", py::arg("t_start") = py::none(), py::arg("t_end") = py::none(),
      py::arg("steps_offset") = py::none(), py::arg("final_sigma") = "min", py::arg("rtol") = py::none(), py::arg("atol") = py::none(), py::arg("controller") = nullptr,
      py::arg("model_solver") = "", py::arg("model_timesteps") = py::none(), py::arg("model_tuned_grids") = py::none(),
      py::arg("model_sample_shape") = std::vector<int64_t>{},
      py::arg("use_tuned_grid") = true, py::arg("denoise_to_zero") = false,
      py::arg("check_finite") = false, py::arg("keep_trajectory") = false, py::arg("callback") = py::none(),
      py::arg("generator") = py::none(), py::arg("seeds") = std::vector<uint64_t>{},
      "One sampling request (sample/request.h), interpreted and run in C++. Use fewstep.sample.");

  m.def(
      "_randn_per_sample",
      [](const std::vector<int64_t>& sample_shape, const std::vector<uint64_t>& seeds) {
        return fewstep::randn_per_sample(sample_shape, seeds, at::TensorOptions().dtype(at::kDouble));
      },
      py::arg("sample_shape"), py::arg("seeds"),
      "Float64 CPU noise of shape [len(seeds), *sample_shape] whose row i depends only on seeds[i]. "
      "Use fewstep.randn instead.");

  m.def("step_noise_seed", &fewstep::step_noise_seed, py::arg("seed"),
        "The seed of the step-noise stream of a sample with per-sample seed `seed` (docs/sampling.md): "
        "SplitMix64 of (seed, stream 1), never equal to the x_T stream of the same seed.");

  m.def(
      "_prior_scale",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, double t_start) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return fewstep::prior_scale(*schedule, t_start);
      },
      py::arg("schedule"), py::arg("t_start"),
      "The scale of standard-normal noise that makes it the prior at t_start: sigma(t_start) for VE, else 1 "
      "(sample/request.h).");

  py::class_<fewstep::ReferenceResult, std::shared_ptr<fewstep::ReferenceResult>>(
      m, "ReferenceResult", "Result of fewstep.reference_solve.")
      .def_readonly("x", &fewstep::ReferenceResult::x, "Solution at t_end (float64).")
      .def_readonly("nfe", &fewstep::ReferenceResult::nfe, "Model evaluations.")
      .def_readonly("accepted", &fewstep::ReferenceResult::accepted, "Accepted steps.")
      .def_readonly("rejected", &fewstep::ReferenceResult::rejected, "Rejected steps.")
      .def("__repr__", [](const fewstep::ReferenceResult& r) {
        return "ReferenceResult(nfe=" + std::to_string(r.nfe) + ", accepted=" + std::to_string(r.accepted) +
               ", rejected=" + std::to_string(r.rejected) + ")";
      });

  m.def(
      "reference_solve",
      [](const std::shared_ptr<fewstep::Denoiser>& model, const at::Tensor& x_T, double t_start, double t_end,
         double rtol, double atol, int64_t max_steps, double first_step) {
        FEWSTEP_CHECK_TYPE(model != nullptr, "model should be a fewstep.Denoiser, got None");
        fewstep::ReferenceOptions options;
        options.rtol = rtol;
        options.atol = atol;
        options.max_steps = max_steps;
        options.first_step = first_step;
        auto result = std::make_shared<fewstep::ReferenceResult>();
        {
          py::gil_scoped_release release;
          *result = fewstep::reference_solve(*model, x_T, t_start, t_end, options);
        }
        return result;
      },
      py::arg("model"), py::arg("x_T"), py::arg("t_start"), py::arg("t_end"), py::kw_only(),
      py::arg("rtol") = 1e-10, py::arg("atol") = 1e-10, py::arg("max_steps") = 100000, py::arg("first_step") = 0.0,
      "Float64 adaptive Dormand-Prince 5(4) solve of the probability-flow ODE from t_start to t_end.");
}
