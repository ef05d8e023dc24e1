// The extension module fewstep._fewstep: exception translation and the per-layer bindings.
//
// The bindings are thin: they convert arguments and hand over to the C++ library. The
// user-facing niceties (progress bars, callback objects, keyword checks) live in the pure
// Python package python/fewstep/.
#include <torch/python.h>

#include <c10/util/Exception.h>

#include "fewstep/version.h"

namespace py = pybind11;

void bind_schedules(py::module_& m);
void bind_models(py::module_& m);
void bind_solvers(py::module_& m);
void bind_sample(py::module_& m);
void bind_control(py::module_& m);
void bind_metrics(py::module_& m);
void bind_train(py::module_& m);
void bind_distill(py::module_& m);
void bind_psld(py::module_& m);
void bind_micro(py::module_& m);
void bind_teacher_cache(py::module_& m);
void bind_transforms(py::module_& m);
void bind_stepwise(py::module_& m);
void bind_io(py::module_& m);
void bind_grids(py::module_& m);

namespace {

/// Maps the c10 exception family to Python exceptions, carrying the C++ message without the
/// C++ backtrace. The most derived types are tried first.
void translate_c10_exceptions(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
  } catch (const c10::IndexError& e) {
    PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
  } catch (const c10::NotImplementedError& e) {
    PyErr_SetString(PyExc_NotImplementedError, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
  }
}

}  // namespace

PYBIND11_MODULE(_fewstep, m) {
  m.doc() = "fewstep C++ core (schedules, denoisers, steppers, sampling driver).";
  // Local translators run before pybind11's defaults (and before any global translator that
  // another extension may have registered) for exceptions leaving this module's functions.
  py::register_local_exception_translator(&translate_c10_exceptions);

  m.def("version", &fewstep::version, "fewstep's version.");
  m.def("torch_version", &fewstep::torch_version, "The LibTorch version fewstep was compiled against.");

  bind_schedules(m);
  bind_models(m);
  bind_solvers(m);
  bind_control(m);
  bind_sample(m);
  bind_teacher_cache(m);
  bind_metrics(m);
  bind_train(m);
  bind_distill(m);
  bind_psld(m);
  bind_micro(m);
  bind_transforms(m);
  bind_stepwise(m);
  bind_io(m);
  bind_grids(m);
}
