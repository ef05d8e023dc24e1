// Bindings of sample/teacher_cache.h (one cached teacher solve) and core/cache_dir.h (where caches
// live). fewstep.teacher_rollouts and fewstep.dense_trajectories are built on them.
#include <torch/python.h>

#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/cache_dir.h"
#include "fewstep/core/check.h"
#include "fewstep/sample/teacher_cache.h"
#include "options.h"

namespace py = pybind11;

std::string cache_root_arg(const py::object& cache, const char* arg) {
  if (cache.is_none()) return "";
  if (py::isinstance<py::bool_>(cache)) return cache.cast<bool>() ? fewstep::cache_directory() : "";
  const bool path_like = py::isinstance<py::str>(cache) || py::hasattr(cache, "__fspath__");
  FEWSTEP_CHECK_TYPE(path_like, arg, " should be None, True (the default cache directory) or a directory (str or "
                     "os.PathLike), got ", std::string(py::str(py::type::handle_of(cache).attr("__name__"))));
  const py::object path = py::module_::import("os").attr("fspath")(cache);
  FEWSTEP_CHECK_TYPE(py::isinstance<py::str>(path), arg, " should be a text path");
  const std::string root = path.cast<std::string>();
  FEWSTEP_CHECK_VALUE(!root.empty(), arg, " should be a directory, got ''");
  return root;
}

at::ScalarType dtype_of(const py::object& dtype) {
  FEWSTEP_CHECK_TYPE(THPDtype_Check(dtype.ptr()), "dtype should be torch.float32 or torch.float64, got ",
                     std::string(py::repr(dtype)));
  return reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
}

void bind_teacher_cache(py::module_& m) {
  m.def("cache_directory", &fewstep::cache_directory, py::arg("sub") = "",
        "The cache root: $FEWSTEP_CACHE_DIR, else $XDG_CACHE_HOME/fewstep, else ~/.cache/fewstep (with `sub` "
        "appended). Not created.");
  m.def(
      "_teacher_solve",
      [](const std::shared_ptr<fewstep::Denoiser>& teacher, const std::vector<int64_t>& sample_shape, int64_t n,
         uint64_t seed, const std::string& solver, const py::dict& solver_options, const std::vector<double>& grid,
         int64_t keep_every, bool keep_eps, const py::object& dtype, int64_t batch, const py::object& cache,
         bool progress, const std::string& label) {
        FEWSTEP_CHECK_TYPE(teacher != nullptr, "teacher should be a fewstep.Denoiser, got None");
        fewstep::TeacherSolveSpec spec;
        spec.sample_shape = sample_shape;
        spec.n = n;
        spec.seed = seed;
        spec.solver = solver;
        spec.solver_options = options_from_dict(solver_options);
        spec.grid = grid;
        spec.keep_every = keep_every;
        spec.keep_eps = keep_eps;
        spec.dtype = dtype_of(dtype);
        spec.batch = batch;
        spec.progress = progress;
        spec.label = label;
        const std::string root = cache_root_arg(cache);
        const fewstep::Denoiser d = *teacher;
        fewstep::TeacherSolve out;
        {
          py::gil_scoped_release release;
          out = fewstep::teacher_solve(d, spec, root);
        }
        py::dict r;
        r["x"] = out.x;
        r["eps"] = out.eps.defined() ? py::cast(out.eps) : py::object(py::none());
        r["times"] = double_tensor(out.times);
        r["nfe"] = out.nfe;
        r["key"] = out.key;
        r["cache_file"] = out.cache_file.empty() ? py::object(py::none()) : py::object(py::str(out.cache_file));
        r["from_cache"] = out.from_cache;
        r["note"] = out.note;
        return r;
      },
      py::arg("teacher"), py::arg("sample_shape"), py::arg("n"), py::kw_only(), py::arg("seed"), py::arg("solver"),
      py::arg("solver_options"), py::arg("grid"), py::arg("keep_every") = 0, py::arg("keep_eps") = false,
      py::arg("dtype") = py::module_::import("torch").attr("float32"), py::arg("batch") = 256,
      py::arg("cache") = py::none(), py::arg("progress") = false, py::arg("label") = "teacher solves",
      "fewstep::teacher_solve: a dict with x [n, K+1, ...], eps, times, nfe, key, cache_file, from_cache, note.");
}
