// The extension module fewstep._fewstep: exception translation and the per-layer bindings.
//
// The bindings are thin: they convert arguments and hand over to the C++ library. The
// user-facing niceties (progress bars, callback objects, keyword checks) live in the pure
// Python package python/fewstep/.
#include <torch/python.h>

#include <c10/util/Exception.h>

#include <chrono>

#include "fewstep/core/interrupt.h"
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

// ---- Ctrl-C inside C++ loops (core/interrupt.h) ----
// Python runs signal handlers only in its main thread, and only when asked: the library's loops call
// python_interrupt_check between steps; in the main thread it takes the GIL (at most every
// kInterruptPollMs) and runs the pending handlers with PyErr_CheckSignals. An exception they raise
// (KeyboardInterrupt for Ctrl-C) is kept here and set again when fewstep::Interrupted reaches the
// Python caller, so it arrives with its own type.
constexpr int kInterruptPollMs = 5;
unsigned long g_main_thread = 0;
thread_local PyObject* t_pending_type = nullptr;
thread_local PyObject* t_pending_value = nullptr;
thread_local PyObject* t_pending_traceback = nullptr;
thread_local std::chrono::steady_clock::time_point t_last_poll{};

int python_interrupt_check() {
  if (PyThread_get_thread_ident() != g_main_thread) return 0;
  const auto now = std::chrono::steady_clock::now();
  if (now - t_last_poll < std::chrono::milliseconds(kInterruptPollMs)) return 0;
  t_last_poll = now;
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return 0;
  Py_XDECREF(t_pending_type);
  Py_XDECREF(t_pending_value);
  Py_XDECREF(t_pending_traceback);
  PyErr_Fetch(&t_pending_type, &t_pending_value, &t_pending_traceback);
  return 1;
}

/// Maps the c10 exception family to Python exceptions, carrying the C++ message without the
/// C++ backtrace. The most derived types are tried first.
void translate_c10_exceptions(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const fewstep::Interrupted&) {
    if (t_pending_type != nullptr) {
      PyErr_Restore(t_pending_type, t_pending_value, t_pending_traceback);  // steals the references
      t_pending_type = t_pending_value = t_pending_traceback = nullptr;
    } else {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
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
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  fewstep::set_interrupt_check(&python_interrupt_check);

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
