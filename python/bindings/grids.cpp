// Bindings of grids/optimize.h (optimised time grids) and the tuned grids of a model file's sidecar.
// fewstep.optimize_timesteps is built on them.
#include <torch/python.h>

#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/grids/optimize.h"
#include "options.h"

namespace py = pybind11;

namespace {

py::object json_loads(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

}  // namespace

py::list tuned_grids_to_python(const std::vector<fewstep::ModelTunedGrid>& grids) {
  py::list out;
  for (const auto& g : grids) {
    py::dict d;
    d["solver"] = g.solver;
    d["options"] = g.options;
    d["nfe"] = g.nfe;
    d["timesteps"] = double_tensor(g.timesteps);
    d["fit"] = json_loads(g.fit);
    out.append(d);
  }
  return out;
}

std::vector<fewstep::ModelTunedGrid> tuned_grids_from_python(const py::object& grids) {
  std::vector<fewstep::ModelTunedGrid> out;
  if (grids.is_none()) return out;
  const py::object dumps = py::module_::import("json").attr("dumps");
  for (const py::handle item : grids) {
    const py::dict d = py::reinterpret_borrow<py::dict>(item);
    fewstep::ModelTunedGrid g;
    g.solver = d["solver"].cast<std::string>();
    g.options = d["options"].cast<std::map<std::string, std::string>>();
    g.nfe = d["nfe"].cast<int64_t>();
    const at::Tensor t = d["timesteps"].cast<at::Tensor>().to(at::kDouble).contiguous();
    g.timesteps.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    g.fit = dumps(d["fit"]).cast<std::string>();
    out.push_back(std::move(g));
  }
  return out;
}

void bind_grids(py::module_& m) {
  using fewstep::OptimizedGrid;
  py::class_<OptimizedGrid, std::shared_ptr<OptimizedGrid>>(m, "OptimizedGrid",
                                                             "A fitted time grid (fewstep.optimize_timesteps).")
      .def_property_readonly("times", [](const OptimizedGrid& g) { return double_tensor(g.times); },
                             "The grid t_0 = t_max > ... > t_N = t_min (float64 tensor).")
      .def_readonly("solver", &OptimizedGrid::solver)
      .def_property_readonly(
          "options", [](const OptimizedGrid& g) { return fewstep::tuned_grid_options(g.solver_options); },
          "The solver options the grid is for (values as text).")
      .def_readonly("nfe", &OptimizedGrid::nfe)
      .def_readonly("method", &OptimizedGrid::method)
      .def_readonly("dp_history", &OptimizedGrid::dp_history,
                    "dp: the jump costs carried the multistep solver's history along the path.")
      .def_readonly("reference_nfe", &OptimizedGrid::reference_nfe, "Evaluations of one reference solve.")
      .def_readonly("train_error", &OptimizedGrid::train_error, "Median per-sample RMS error on the training seeds.")
      .def_readonly("heldout_error", &OptimizedGrid::heldout_error, "Median per-sample RMS error on held-out seeds.")
      .def_readonly("selected", &OptimizedGrid::selected,
                    "'fitted', or 'fixed <spacing>' when that fixed grid beat the fit on the training seeds (and "
                    "is returned instead; docs/grids.md).")
      .def_readonly("fitted_train_error", &OptimizedGrid::fitted_train_error,
                    "The fitted grid's median training error (train_error when selected == 'fitted').")
      .def_readonly("best_fixed_spacing", &OptimizedGrid::best_fixed_spacing)
      .def_readonly("best_fixed_error", &OptimizedGrid::best_fixed_error,
                    "Held-out median error of the best fixed spacing for the same solver and NFE.")
      .def_readonly("loss", &OptimizedGrid::loss, "gradient: the training loss (MSE) per iteration.")
      .def_readonly("fit_seconds", &OptimizedGrid::fit_seconds)
      .def_property_readonly("fit", [](const OptimizedGrid& g) { return json_loads(g.fit_json()); },
                             "The method and settings the grid was fitted with (what the sidecar records).")
      .def("__repr__", [](const OptimizedGrid& g) {
        return "OptimizedGrid(solver='" + g.solver + "', nfe=" + std::to_string(g.nfe) + ", method='" + g.method +
               "', heldout_error=" + std::to_string(g.heldout_error) + ")";
      });

  m.def(
      "_optimize_timesteps",
      [](const std::shared_ptr<fewstep::Denoiser>& model, const std::string& solver, const py::dict& solver_options,
         int64_t nfe, const std::string& method, const std::vector<int64_t>& sample_shape, int64_t n, uint64_t seed,
         int64_t heldout_n, uint64_t heldout_seed, int64_t candidates, int64_t substeps,
         const std::string& reference_solver, int64_t iterations, double lr, double fd_step, const py::object& dtype,
         int64_t batch, const py::object& cache, bool progress, bool dp_history, bool dp_propagate) {
        FEWSTEP_CHECK_TYPE(model != nullptr, "model should be a fewstep.Denoiser, got None");
        fewstep::GridFitSettings s;
        s.sample_shape = sample_shape;
        s.n = n;
        s.seed = seed;
        s.heldout_n = heldout_n;
        s.heldout_seed = heldout_seed;
        s.candidates = candidates;
        s.substeps = substeps;
        s.reference_solver = reference_solver;
        s.iterations = iterations;
        s.lr = lr;
        s.fd_step = fd_step;
        s.dtype = dtype_of(dtype);
        s.batch = batch;
        s.cache_root = cache_root_arg(cache);
        s.progress = progress;
        s.dp_history = dp_history;
        s.dp_propagate = dp_propagate;
        const fewstep::Options options = options_from_dict(solver_options);
        auto out = std::make_shared<OptimizedGrid>();
        {
          py::gil_scoped_release release;
          *out = fewstep::optimize_timesteps(*model, solver, options, nfe, method, s);
        }
        return out;
      },
      py::arg("model"), py::arg("solver"), py::arg("solver_options"), py::arg("nfe"), py::arg("method"),
      py::arg("sample_shape"), py::arg("n"), py::arg("seed"), py::arg("heldout_n"), py::arg("heldout_seed"),
      py::arg("candidates"), py::arg("substeps"), py::arg("reference_solver"), py::arg("iterations"), py::arg("lr"),
      py::arg("fd_step"), py::arg("dtype"), py::arg("batch"), py::arg("cache"), py::arg("progress"), py::arg("dp_history"),
      py::arg("dp_propagate"),
      "grids/optimize.h's optimize_timesteps. Use fewstep.optimize_timesteps.");

  m.def(
      "_save_optimized_grid",
      [](const std::string& path, const OptimizedGrid& grid) { fewstep::save_optimized_grid(path, grid); },
      py::arg("path"), py::arg("grid"), "Writes a fitted grid into the sidecar of the model file `path`.");
}
