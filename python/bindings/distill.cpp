// Bindings of the distillation arithmetic: the progressive-distillation target (train/
// progressive_target.h). The cached teacher rollouts of knowledge distillation are one teacher
// solve (sample/teacher_cache.h, bound in teacher_cache.cpp).
//
// As for the DSM loss (train.cpp), only what the teacher computes is bound: the student's forward,
// the backward pass and the optimiser stay in Python (python/fewstep/distill.py), so autograd and
// DistributedDataParallel see an ordinary PyTorch forward. The teacher runs without autograd and
// with the GIL released; a Python teacher network retakes it per call.
#include <torch/python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/train/progressive_target.h"

namespace py = pybind11;
using fewstep::Denoiser;

namespace {

const Denoiser& require_teacher(const std::shared_ptr<Denoiser>& teacher) {
  FEWSTEP_CHECK_TYPE(teacher != nullptr, "teacher should be a fewstep.Denoiser, got None");
  return *teacher;
}

}  // namespace

void bind_distill(py::module_& m) {
  m.def(
      "ddim_update",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, const at::Tensor& x, const at::Tensor& x0, double s,
         double t) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return fewstep::ddim_update(*schedule, x, x0, s, t);
      },
      py::arg("schedule"), py::arg("x"), py::arg("x0"), py::arg("s"), py::arg("t"),
      "The deterministic DDIM step from (x_s, x0_hat) at time s to t: (sigma_t/sigma_s) x_s - alpha_t "
      "(exp(-h) - 1) x0_hat, h = lambda_t - lambda_s (ATen ops: differentiable in x and x0).");
  m.def("progressive_grid_time", &fewstep::progressive_grid_time, py::arg("i"), py::arg("steps"), py::arg("t_lo"),
        py::arg("t_hi"),
        "tau(i) = t_lo + (i / steps)(t_hi - t_lo): time of (possibly half-integer) index i on the steps-step "
        "student grid of progressive distillation.");
  m.def(
      "_progressive_target",
      [](const std::shared_ptr<Denoiser>& teacher, const at::Tensor& z_t, const at::Tensor& index, int64_t steps,
         double t_lo, double t_hi) {
        const Denoiser& d = require_teacher(teacher);
        fewstep::ProgressiveTarget out;
        {
          py::gil_scoped_release release;
          out = fewstep::progressive_target(d, z_t, index, steps, t_lo, t_hi);
        }
        return py::make_tuple(out.target, out.t, out.z_mid, out.z_end);
      },
      py::arg("teacher"), py::arg("z_t"), py::arg("index"), py::arg("steps"), py::arg("t_lo"), py::arg("t_hi"),
      "fewstep::progressive_target: (target x~, t [B] float64, teacher z_mid, teacher z_end).");
}
