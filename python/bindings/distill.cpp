// Bindings of the distillation arithmetic: the progressive-distillation target (train/
// progressive_target.h) and the pieces of a consistency step (train/consistency_trainer.h). The
// cached teacher rollouts of knowledge distillation are one teacher solve (sample/teacher_cache.h,
// bound in teacher_cache.cpp).
//
// As for the DSM loss (train.cpp), only what the teacher computes is bound: the student's forward,
// the backward pass and the optimiser stay in Python (python/fewstep/distill.py), so autograd and
// DistributedDataParallel see an ordinary PyTorch forward. The teacher runs without autograd and
// with the GIL released; a Python teacher network retakes it per call.
#include <torch/python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/nets/network.h"
#include "fewstep/train/consistency_trainer.h"
#include "fewstep/train/progressive_target.h"
#include "options.h"
#include "trainer.h"

namespace py = pybind11;
using fewstep::Denoiser;

namespace {

const Denoiser& require_teacher(const std::shared_ptr<Denoiser>& teacher) {
  FEWSTEP_CHECK_TYPE(teacher != nullptr, "teacher should be a fewstep.Denoiser, got None");
  return *teacher;
}

fewstep::ConsistencyTrainerOptions consistency_options(const py::dict& options) {
  return fewstep::consistency_options_from_json(options_json_of(options));  // the method's distance by default
}

const fewstep::NoiseSchedule& require_schedule(const std::shared_ptr<fewstep::NoiseSchedule>& schedule) {
  FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
  return *schedule;
}

/// A Python callable net(x, t_input) -> Tensor as a consistency network (the GIL taken per call).
fewstep::ConsistencyNetwork python_consistency_network(const py::object& net) {
  FEWSTEP_CHECK_TYPE(PyCallable_Check(net.ptr()), "net should be callable as net(x, t), got ",
                     std::string(py::str(py::type::handle_of(net).attr("__name__"))));
  auto fn = hold(net);
  return [fn](const at::Tensor& x, const at::Tensor& t_in) {
    py::gil_scoped_acquire gil;
    py::object out = (*fn)(x, t_in);
    FEWSTEP_CHECK_TYPE(THPVariable_Check(out.ptr()), "net(x, t) should return a torch.Tensor, got ",
                       std::string(py::str(py::type::handle_of(out).attr("__name__"))));
    return out.cast<at::Tensor>();
  };
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
         double t_lo, double t_hi, int64_t substeps) {
        const Denoiser& d = require_teacher(teacher);
        fewstep::ProgressiveTarget out;
        {
          py::gil_scoped_release release;
          out = fewstep::progressive_target(d, z_t, index, steps, t_lo, t_hi, substeps);
        }
        return py::make_tuple(out.target, out.t, out.z_mid, out.z_end);
      },
      py::arg("teacher"), py::arg("z_t"), py::arg("index"), py::arg("steps"), py::arg("t_lo"), py::arg("t_hi"),
      py::arg("substeps") = 2,
      "fewstep::progressive_target: (target x~, t [B] float64, teacher z_mid, teacher z_end).");
  // The pieces of a consistency step (train/consistency_trainer.h), for the Python loss
  // (python/fewstep/distill.py's ConsistencyLoss): options are the trainer's flat keys.
  m.def(
      "_consistency_options",
      [](const py::dict& options) {
        const fewstep::ConsistencyTrainerOptions o = consistency_options(options);
        o.validate();
        return py::module_::import("json").attr("loads")(fewstep::options_to_json(o));
      },
      py::arg("options"), "Validated consistency options with every key (ValueError naming a bad or unknown one).");
  m.def(
      "_consistency_schedule",
      [](const py::dict& options, int64_t k) {
        const fewstep::ConsistencyTrainerOptions o = consistency_options(options);
        return std::make_pair(fewstep::consistency_points(o, k), fewstep::consistency_target_ema(o, k));
      },
      py::arg("options"), py::arg("k"), "(N(k), mu(k)): the number of levels and the target EMA rate at step k.");
  m.def(
      "_consistency_levels",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, int64_t n, double t_lo, double rho) {
        return fewstep::consistency_levels(require_schedule(schedule), n, t_lo, rho);
      },
      py::arg("schedule"), py::arg("n"), py::arg("t_lo"), py::arg("rho"),
      "The n increasing levels t_lo < ... < t_max (Karras rho-grid in sigma/alpha).");
  m.def(
      "_consistency_draw_index",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, const py::dict& options,
         const std::vector<double>& levels, int64_t n, at::Generator generator) {
        return fewstep::consistency_draw_index(require_schedule(schedule), consistency_options(options), levels, n,
                                               generator);
      },
      py::arg("schedule"), py::arg("options"), py::arg("levels"), py::arg("n"), py::arg("generator"),
      "n level indices in 0..N-2 from `generator`: uniform (cd, ct) or iCT's lognormal.");
  m.def(
      "_consistency_pair_times",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, const py::dict& options,
         const std::vector<double>& levels, const at::Tensor& index) {
        const fewstep::ConsistencyPairTimes p =
            fewstep::consistency_pair_times(require_schedule(schedule), consistency_options(options), levels, index);
        return py::make_tuple(p.t_hi, p.t_lo, p.alpha_hi, p.sigma_hi, p.alpha_lo, p.sigma_lo, p.weight);
      },
      py::arg("schedule"), py::arg("options"), py::arg("levels"), py::arg("index"),
      "(t_hi, t_lo, alpha_hi, sigma_hi, alpha_lo, sigma_lo, weight): [B] float64 tensors per row.");
  m.def(
      "_ect_pair_times",
      [](const std::shared_ptr<fewstep::NoiseSchedule>& schedule, const py::dict& options, int64_t k, double t_lo,
         const at::Tensor& normals) {
        const fewstep::ConsistencyTrainerOptions o = consistency_options(options);
        const fewstep::ConsistencyPairTimes p = fewstep::ect_pair_times(require_schedule(schedule), o, k, t_lo, normals);
        return py::make_tuple(p.t_hi, p.t_lo, p.alpha_hi, p.sigma_hi, p.alpha_lo, p.sigma_lo, p.weight, p.to_data,
                              o.ect.stage(k));
      },
      py::arg("schedule"), py::arg("options"), py::arg("k"), py::arg("t_lo"), py::arg("normals"),
      "ECT's pairs at step k from the lognormal's standard normals [B]: (t, r, alpha_t, sigma_t, alpha_r, sigma_r, "
      "weight, to_data, stage); to_data marks rows whose target is x0 (r at or below the boundary).");
  m.def(
      "_consistency_teacher_step",
      [](const std::shared_ptr<Denoiser>& teacher, const std::string& solver_name, const at::Tensor& x_hi,
         const at::Tensor& index, const std::vector<double>& levels) {
        const Denoiser& d = require_teacher(teacher);
        const auto stepper = fewstep::solver(solver_name);
        FEWSTEP_CHECK_VALUE(!stepper->traits().stochastic, "teacher_solver must be deterministic (an ODE step), got '",
                            solver_name, "'");
        py::gil_scoped_release release;
        return fewstep::consistency_teacher_step(d, *stepper, x_hi, index, levels);
      },
      py::arg("teacher"), py::arg("solver"), py::arg("x_hi"), py::arg("index"), py::arg("levels"),
      "CD's teacher step t_{i+1} -> t_i of every row (no autograd; GIL released).");
  m.def(
      "_consistency_function",
      [](const py::object& net, const std::shared_ptr<fewstep::NoiseSchedule>& schedule, const py::dict& options,
         const at::Tensor& x, const at::Tensor& t) {
        const fewstep::ConsistencyTrainerOptions o = consistency_options(options);
        return fewstep::consistency_function(python_consistency_network(net), require_schedule(schedule), o.function,
                                             x, t);
      },
      py::arg("net"), py::arg("schedule"), py::arg("options"), py::arg("x"), py::arg("t"),
      "f(x, t) = c_skip x + c_out net(c_in x, c_noise) per row (models/consistency_function.h), differentiable "
      "through the Python net.");
  m.def(
      "_with_dropout_seed",
      [](uint64_t seed, const py::function& fn) {
        return fewstep::with_dropout_seed(seed, [&fn] { return fn().cast<at::Tensor>(); });
      },
      py::arg("seed"), py::arg("fn"),
      "fn() with the global CPU generator (dropout's) seeded with `seed`, then restored (nets/network.h): two "
      "passes with one seed share their dropout masks.");
  m.def(
      "_consistency_distance",
      [](const at::Tensor& a, const at::Tensor& b, const std::string& distance, double huber_c) {
        return fewstep::consistency_distance(a, b, fewstep::parse_consistency_distance(distance), huber_c);
      },
      py::arg("a"), py::arg("b"), py::arg("distance"), py::arg("huber_c"), "The per-row distance d(a, b) ([B]).");
  m.def(
      "consistency_denoiser",
      [](const py::object& net, const std::shared_ptr<fewstep::NoiseSchedule>& schedule, double sigma_data,
         double t_min, const std::string& time_input, double time_scale) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        fewstep::ConsistencyParameterization p;
        p.sigma_data = sigma_data;
        p.t_min = t_min;
        p.time_input = fewstep::parse_time_input(time_input);
        p.time_scale = time_scale;
        return std::make_shared<Denoiser>(
            fewstep::consistency_denoiser(python_consistency_network(net), schedule, p, "Python consistency model"));
      },
      py::arg("net"), py::arg("schedule"), py::kw_only(), py::arg("sigma_data") = 0.5, py::arg("t_min") = 0.0,
      py::arg("time_input") = "t", py::arg("time_scale") = 1.0,
      "A consistency model f(x, t) = c_skip x + c_out net(c_in x, t_input) as a fewstep.Denoiser predicting x0 "
      "(models/consistency_function.h): sample it with solver='consistency'. t_min 0 = the schedule's.");
}
