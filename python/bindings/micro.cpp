// Bindings of micro-distillation: the sampler file (micro/micro_sampler.h), the dense teacher
// trajectories it is trained on (micro/trajectories.h) and its trainer (train/micro_trainer.h).
//
// Unlike the DSM and distillation-loss bindings, the whole training step runs in C++ (the heads are
// TorchScript modules built by the library): Python sees MicroTrainer.step()/train(), which run with
// the GIL released. A Python teacher network retakes the GIL per call (models.cpp), as does the
// optional per-step callback of train().
#include <torch/python.h>
#include <torch/csrc/Dtype.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/micro/micro_sampler.h"
#include "fewstep/micro/trajectories.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/nets/micro_heads.h"
#include "fewstep/train/micro_trainer.h"
#include "fewstep/train/trainer.h"

#include "options.h"

namespace py = pybind11;
using fewstep::DenseTrajectories;
using fewstep::Denoiser;
using fewstep::MicroSampler;
using fewstep::MicroTrainer;

namespace {

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}

const Denoiser& require_teacher(const std::shared_ptr<Denoiser>& teacher) {
  FEWSTEP_CHECK_TYPE(teacher != nullptr, "teacher should be a fewstep.Denoiser, got None");
  return *teacher;
}

/// A str or os.PathLike as a string ("" for None when allowed); TypeError naming `arg` otherwise.
std::string path_arg(const py::object& obj, const char* arg, bool allow_none) {
  if (allow_none && obj.is_none()) return "";
  const bool ok = py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__");
  FEWSTEP_CHECK_TYPE(ok, arg, " should be a str or os.PathLike", allow_none ? " (or None)" : "", ", got ",
                     type_name(obj));
  py::object path = py::module_::import("os").attr("fspath")(obj);
  FEWSTEP_CHECK_TYPE(py::isinstance<py::str>(path), arg, " should be a text path, got ", type_name(path));
  return path.cast<std::string>();
}

fewstep::MicroMode mode_arg(const std::string& mode) {
  FEWSTEP_CHECK_VALUE(mode == "residual" || mode == "step_size" || mode == "joint",
                      "mode should be 'residual', 'step_size' or 'joint', got '", mode, "'");
  return fewstep::parse_micro_mode(mode);
}

at::ScalarType dtype_arg(const py::object& dtype) {
  FEWSTEP_CHECK_TYPE(THPDtype_Check(dtype.ptr()), "dtype should be torch.float32 or torch.float64, got ",
                     type_name(dtype), " ", std::string(py::repr(dtype)));
  const at::ScalarType s = reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
  FEWSTEP_CHECK_VALUE(s == at::kFloat || s == at::kDouble, "dtype should be torch.float32 or torch.float64, got ",
                      std::string(py::repr(dtype)));
  return s;
}

/// t_start/t_end: None = the schedule's range (0 in TrajectorySpec), otherwise a positive time.
double time_arg(const std::optional<double>& t, const char* arg) {
  if (!t) return 0.0;
  FEWSTEP_CHECK_VALUE(std::isfinite(*t) && *t > 0.0, arg, " should be a positive time (or None for the schedule's ",
                      "range), got ", *t);
  return *t;
}

/// MicroSamplerInfo as the dict of its file record (micro_sampler_info_json).
py::dict info_dict(const fewstep::MicroSamplerInfo& i) {
  return py::module_::import("json").attr("loads")(fewstep::micro_sampler_info_json(i));
}

py::dict stats_dict(const fewstep::TrainStepStats& s) {
  py::dict d;
  d["step"] = s.step;
  d["loss"] = s.loss;
  d["lr"] = s.lr;
  d["grad_norm"] = s.grad_norm;
  py::dict extras;
  for (const auto& [key, value] : s.extra) extras[py::str(key)] = value;
  d["extras"] = extras;
  return d;
}

/// A snapshot of the trainer's EMA heads: MicroTrainer::sampler() shares the EMA modules, which the
/// next step() updates in place; a Python object must not change under its owner's feet.
std::shared_ptr<MicroSampler> snapshot(const MicroSampler& s) {
  auto copy = [](const fewstep::ScriptNet& net) -> fewstep::ScriptNet {
    return net ? std::make_shared<torch::jit::Module>(net->deepcopy()) : nullptr;
  };
  return std::make_shared<MicroSampler>(copy(s.residual()), copy(s.step_size()), s.info(), s.teacher_probe().clone());
}

/// The trainer with a lock: step()/train() run without the GIL, so another Python thread could
/// otherwise use the trainer mid-step. Every method takes the lock with the GIL released (no
/// deadlock with train()'s callback, which retakes the GIL); the lock is recursive so that the
/// callback may use the trainer (e.g. trainer.sampler() for a periodic evaluation).
struct PyMicroTrainer {
  std::unique_ptr<MicroTrainer> trainer;
  std::recursive_mutex mutex;
};

/// f(trainer) under the lock, with the GIL released; f must not touch Python objects.
template <class F>
auto locked(PyMicroTrainer& t, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::recursive_mutex> lock(t.mutex);
  return f(*t.trainer);
}

constexpr const char* kTrajectoriesDoc = R"doc(Dense, accurate teacher trajectories: micro-distillation's training data.

Sample i starts from x_T = fs.randn with seed seed + i and is solved from t_start to t_end by DEIS-3
(in log-SNR) on a uniform log-SNR grid of segments * substeps steps; x is kept at the segments + 1
knots and the teacher's eps at the first segments knots. With cache, the data are one cached
teacher solve (docs/model_files.md, "Caches"): keyed by the teacher's content fingerprint and every
setting, loaded when they match and recomputed otherwise.

Args:
    teacher: the fewstep.Denoiser to distil.
    teacher_id: describes the teacher in exported samplers, e.g.
        "exact GaussianMixture.random(4, 3, 0)" or a file name (the cache is keyed by content).
    sample_shape: one sample's shape without the batch ([D] or [C, H, W]).
    n: number of trajectories.
    seed, segments, substeps, batch: see above (batch = trajectories per solve).
    t_start, t_end: the range (None = the schedule's t_max / t_min).
    dtype: torch.float32 or torch.float64, of the solve and the stored tensors.
    cache: None (no cache), True (the default cache directory, fs.cache_directory()) or a cache
        directory; the teacher needs a fingerprint (fs.Denoiser.fingerprint).
    progress: a progress bar on stderr.

Returns a DenseTrajectories (x [n, segments+1, ...], eps [n, segments, ...], times, lambdas, settings,
from_cache). The solve runs in C++ with the GIL released.

Example::

    gmm = fs.GaussianMixture.random(4, 3, seed=0)
    teacher = fs.Denoiser.exact(gmm, fs.VPLinear())
    data = fs.dense_trajectories(teacher, "exact gmm(4, 3, 0)", [4], 256, segments=16, substeps=4,
                                 cache=True, progress=False))doc";

constexpr const char* kSamplerDoc = R"doc(A micro-distilled sampler: residual head g_psi and/or step-size head h_phi.

Saved as one TorchScript file (``fewstep distill micro`` writes them) with the teacher's identity:
sampling with another model raises ValueError ("different teacher"). ``sample(teacher, x_T, nfe)``
makes exactly nfe teacher evaluations; samplers with a residual head also work as
``fs.sample(teacher, x_T, solver="micro", steps=nfe, path=file)``.

Example::

    sampler = fs.MicroSampler.load("runs/micro/student.pt")
    out = sampler.sample(teacher, torch.randn(64, 16), nfe=8)
    out.x, out.nfe, sampler.info["mode"])doc";

constexpr const char* kTrainerDoc = R"doc(Micro-distillation trainer: g_psi and/or h_phi from dense trajectories.

mode: "residual" (g_psi alone, local regression on the cached trajectories; fixed uniform log-SNR
grid), "step_size" (h_phi alone with the DEIS-2 step, on unrolled runs of budget_min..budget_max
steps) or "joint" (both, on unrolled runs; normally warm-started with init=<residual sampler>).
The training step runs in C++ with the GIL released. Checkpoints hold everything (heads, EMAs,
AdamW, RNG streams, data position): resuming is bit-identical to a run that never stopped.

Args:
    teacher, teacher_id: the fewstep.Denoiser the trajectories came from, and its name.
    trajectories: a DenseTrajectories (fs.dense_trajectories).
    batch: trajectories per step.
    budget_min, budget_max: unrolled modes: the step budget N ~ U{budget_min..budget_max}.
    spread: h_phi's bound a in [0, 1): steps within (1 -+ a) x the uniform share of what is left.
    segment_min, segment_max: residual mode: step lengths in knots (segment_max 0 = segments/4).
    teacher_grad: unrolled modes: backpropagate through the teacher's x input.
    time_gradient: unrolled modes with h_phi: differentiate through the teacher's time input by a
        forward difference (one more teacher call per step, training only).
    lr, min_lr, total_steps, warmup, decay: AdamW learning rate, linear warmup, then cosine ("cosine")
        or linear ("linear") decay to min_lr at total_steps (0 = constant).
    weight_decay, grad_clip: AdamW weight decay; global gradient-norm clip (<= 0: none).
    ema_decay: EMA of the heads (the sampler uses the EMA).
    seed: head initialisation and the trainer's random streams.
    width, blocks: residual head width and blocks (0 = defaults: 64/3 for vectors, 32/4 for images).
    history: the residual head also reuses the previous teacher evaluation and corrects the two-step
        DEIS term instead of DDIM's (an extension of partial micro-distillation; no extra teacher calls).
    init: a MicroSampler whose heads start this run (same head settings and teacher).

Example::

    trainer = fs.MicroTrainer(teacher, "exact gmm(4, 3, 0)", data, mode="residual", batch=64,
                              lr=1e-3, total_steps=2000)
    trainer.train(2000, checkpoint_path="micro.ckpt", checkpoint_every=500)
    trainer.sampler().save("micro-residual.pt"))doc";

}  // namespace

void bind_micro(py::module_& m) {
  py::class_<DenseTrajectories, std::shared_ptr<DenseTrajectories>>(
      m, "DenseTrajectories", "Dense teacher trajectories (fewstep.dense_trajectories): micro-distillation's data.")
      .def_readonly("x", &DenseTrajectories::x,
                    "[n, segments + 1, ...]: x at the knots (x[:, 0] = x_T, x[:, -1] = x_0).")
      .def_readonly("eps", &DenseTrajectories::eps, "[n, segments, ...]: the teacher's eps at knots 0..segments-1.")
      .def_property_readonly(
          "times", [](const DenseTrajectories& d) { return double_tensor(d.times); },
          "The segments + 1 knot times, decreasing (float64 tensor).")
      .def_property_readonly(
          "lambdas", [](const DenseTrajectories& d) { return double_tensor(d.lambdas); },
          "Half log-SNR at the knots, increasing (float64 tensor).")
      .def_readonly("settings", &DenseTrajectories::settings, "The settings (JSON text); the cache key.")
      .def_readonly("from_cache", &DenseTrajectories::from_cache, "Whether they were loaded from the cache.")
      .def_property_readonly("segments", &DenseTrajectories::segments, "Number of segments G (knots - 1).")
      .def("__len__", &DenseTrajectories::size)
      .def("__repr__", [](const DenseTrajectories& d) {
        return "DenseTrajectories(n=" + std::to_string(d.size()) + ", segments=" + std::to_string(d.segments()) +
               ", x=" + std::string(py::str(py::cast(d.x.sizes().vec()))) + ", dtype=" +
               std::string(c10::toString(d.x.scalar_type())) + ", from_cache=" + (d.from_cache ? "True" : "False") +
               ")";
      });

  m.def(
      "dense_trajectories",
      [](const std::shared_ptr<Denoiser>& teacher, const std::string& teacher_id,
         const std::vector<int64_t>& sample_shape, int64_t n, uint64_t seed, int64_t segments, int64_t substeps,
         std::optional<double> t_start, std::optional<double> t_end, int64_t batch, const py::object& dtype,
         const py::object& cache, bool progress) {
        const Denoiser& d = require_teacher(teacher);
        fewstep::TrajectorySpec spec;
        spec.sample_shape = sample_shape;
        spec.n = n;
        spec.seed = seed;
        spec.segments = segments;
        spec.substeps = substeps;
        spec.t_start = time_arg(t_start, "t_start");
        spec.t_end = time_arg(t_end, "t_end");
        spec.batch = batch;
        spec.dtype = dtype_arg(dtype);
        spec.progress = progress;
        const std::string root = cache_root_arg(cache);
        auto out = std::make_shared<DenseTrajectories>();
        {
          py::gil_scoped_release release;
          *out = fewstep::dense_trajectories(d, spec, teacher_id, root);
        }
        return out;
      },
      py::arg("teacher"), py::arg("teacher_id"), py::arg("sample_shape"), py::arg("n") = 512, py::kw_only(),
      py::arg("seed") = 0, py::arg("segments") = 64, py::arg("substeps") = 8, py::arg("t_start") = py::none(),
      py::arg("t_end") = py::none(), py::arg("batch") = 256,
      py::arg("dtype") = py::module_::import("torch").attr("float32"), py::arg("cache") = py::none(),
      py::arg("progress") = true, kTrajectoriesDoc);

  py::class_<MicroSampler, std::shared_ptr<MicroSampler>>(m, "MicroSampler", kSamplerDoc)
      .def_static(
          "load",
          [](const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            std::shared_ptr<const MicroSampler> s;
            {
              py::gil_scoped_release release;
              s = MicroSampler::load(p);
            }
            return std::const_pointer_cast<MicroSampler>(s);
          },
          py::arg("path"),
          "Loads a sampler file (ValueError naming the path if it is missing or not a micro sampler).")
      .def(
          "save",
          [](const MicroSampler& s, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            py::gil_scoped_release release;
            s.save(p);
          },
          py::arg("path"), "Writes the sampler file (atomic: temporary file + rename).")
      .def(
          "sample",
          [](const MicroSampler& s, const std::shared_ptr<Denoiser>& teacher, const at::Tensor& x_T, int64_t nfe,
             bool keep_trajectory, bool check_finite, bool denoise_to_zero) {
            const Denoiser& d = require_teacher(teacher);
            fewstep::SampleOptions options;
            options.keep_trajectory = keep_trajectory;
            options.check_finite = check_finite;
            options.denoise_to_zero = denoise_to_zero;
            auto solution = std::make_shared<fewstep::Solution>();
            {
              py::gil_scoped_release release;
              *solution = s.sample(d, x_T, nfe, options);
            }
            return solution;
          },
          py::arg("teacher"), py::arg("x_T"), py::arg("nfe"), py::kw_only(), py::arg("keep_trajectory") = false,
          py::arg("check_finite") = false, py::arg("denoise_to_zero") = false,
          "Checks the teacher's identity, then samples from x_T (at info['t_start']) to info['t_end'] with exactly "
          "nfe teacher evaluations (+1 with denoise_to_zero): the learned step on the uniform log-SNR grid, or "
          "under h_phi's step sizes. Returns a fewstep.Solution. Runs in C++ with the GIL released.")
      .def(
          "check_teacher",
          [](const MicroSampler& s, const std::shared_ptr<Denoiser>& teacher) {
            const Denoiser& d = require_teacher(teacher);
            py::gil_scoped_release release;
            s.check_teacher(d);
          },
          py::arg("teacher"),
          "ValueError naming the recorded teacher if `teacher` is not the model the heads were distilled from "
          "(its eps on a fixed probe differs by more than 1e-3 relative).")
      .def(
          "controller",
          [](const MicroSampler& s, int64_t nfe) {
            return std::const_pointer_cast<fewstep::StepController>(s.controller(nfe));
          },
          py::arg("nfe"),
          "h_phi as a fewstep.StepController placing exactly nfe steps (None for a 'residual' sampler).")
      .def_property_readonly(
          "info", [](const MicroSampler& s) { return info_dict(s.info()); },
          "The record: {mode, heads (dict), spread, t_start, t_end, teacher, schedule, training (JSON text)}.")
      .def_property_readonly("mode", [](const MicroSampler& s) { return fewstep::to_string(s.info().mode); },
                             "'residual', 'step_size' or 'joint'.")
      .def_property_readonly("residual_parameters", &MicroSampler::residual_parameters,
                             "Parameters of the residual head g_psi (0 if absent).")
      .def_property_readonly("step_size_parameters", &MicroSampler::step_size_parameters,
                             "Parameters of the step-size head h_phi (0 if absent).")
      .def_property_readonly(
          "residual_flops",
          [](const MicroSampler& s) -> int64_t {
            return s.residual() ? fewstep::residual_head_flops(s.info().heads) : 0;
          },
          "Floating-point operations of one residual-head pass per sample (0 if absent).")
      .def_property_readonly(
          "step_size_flops",
          [](const MicroSampler& s) -> int64_t {
            return s.step_size() ? fewstep::step_size_head_flops(s.info().heads) : 0;
          },
          "Floating-point operations of one step-size-head pass per sample (0 if absent).")
      .def_property_readonly("source", &MicroSampler::source, "The file it was loaded from ('' if built in memory).")
      .def("__repr__", [](const MicroSampler& s) {
        return "MicroSampler(mode='" + fewstep::to_string(s.info().mode) +
               "', sample_shape=" + std::string(py::str(py::cast(s.info().heads.sample_shape))) + ", teacher='" +
               s.info().teacher + "'" + (s.source().empty() ? std::string() : ", source='" + s.source() + "'") + ")";
      });

  py::class_<PyMicroTrainer, std::shared_ptr<PyMicroTrainer>>(m, "MicroTrainer", kTrainerDoc)
      .def(py::init([](const std::shared_ptr<Denoiser>& teacher, const std::string& teacher_id,
                       const std::shared_ptr<DenseTrajectories>& trajectories, const std::string& mode, int64_t batch,
                       int64_t budget_min, int64_t budget_max, double spread, int64_t segment_min,
                       int64_t segment_max, bool teacher_grad, bool time_gradient, double lr, double min_lr,
                       int64_t total_steps, int64_t warmup, const std::string& decay, double weight_decay,
                       double grad_clip, double ema_decay, uint64_t seed, int64_t width, int64_t blocks,
                       bool history, const std::shared_ptr<MicroSampler>& init) {
             const Denoiser& d = require_teacher(teacher);
             FEWSTEP_CHECK_TYPE(trajectories != nullptr,
                                "trajectories should be a fewstep.DenseTrajectories (fewstep.dense_trajectories), "
                                "got None");
             FEWSTEP_CHECK_VALUE(decay == "cosine" || decay == "linear",
                                 "decay should be 'cosine' or 'linear', got '", decay, "'");
             fewstep::MicroTrainerOptions o;
             o.mode = mode_arg(mode);
             o.heads.width = width;
             o.heads.blocks = blocks;
             o.heads.history = history;
             o.batch = batch;
             o.budget_min = budget_min;
             o.budget_max = budget_max;
             o.spread = spread;
             o.segment_min = segment_min;
             o.segment_max = segment_max;
             o.teacher_grad = teacher_grad;
             o.time_gradient = time_gradient;
             o.optimizer.schedule.lr = lr;
             o.optimizer.schedule.min_lr = min_lr;
             o.optimizer.schedule.total_steps = total_steps;
             o.optimizer.schedule.warmup_steps = warmup;
             o.optimizer.schedule.decay = decay == "linear" ? fewstep::LrDecay::Linear : fewstep::LrDecay::Cosine;
             o.optimizer.weight_decay = weight_decay;
             o.optimizer.grad_clip = grad_clip;
             o.ema_decay = ema_decay;
             o.seed = seed;
             auto out = std::make_shared<PyMicroTrainer>();
             {
               py::gil_scoped_release release;
               out->trainer = std::make_unique<MicroTrainer>(d, teacher_id, *trajectories, o, init);
               if (init) init->check_teacher(d);
             }
             return out;
           }),
           py::arg("teacher"), py::arg("teacher_id"), py::arg("trajectories"), py::kw_only(), py::arg("mode") = "joint",
           py::arg("batch") = 64, py::arg("budget_min") = 5, py::arg("budget_max") = 20, py::arg("spread") = 0.75,
           py::arg("segment_min") = 1, py::arg("segment_max") = 0, py::arg("teacher_grad") = true,
           py::arg("time_gradient") = true, py::arg("lr") = 2e-4, py::arg("min_lr") = 0.0, py::arg("total_steps") = 0,
           py::arg("warmup") = 0, py::arg("decay") = "cosine", py::arg("weight_decay") = 0.0,
           py::arg("grad_clip") = 1.0, py::arg("ema_decay") = 0.999, py::arg("seed") = 0, py::arg("width") = 0,
           py::arg("blocks") = 0, py::arg("history") = false, py::arg("init") = py::none())
      .def(
          "step",
          [](PyMicroTrainer& t) { return stats_dict(locked(t, [](MicroTrainer& tr) { return tr.step(); })); },
          "One optimisation step (GIL released); returns {step (completed), loss, lr, grad_norm, extras (e.g. "
          "budget)}.")
      .def(
          "train",
          [](PyMicroTrainer& t, int64_t steps, const py::object& checkpoint_path, int64_t checkpoint_every,
             bool progress, const py::object& callback) {
            fewstep::TrainLoopOptions loop;
            loop.checkpoint_path = path_arg(checkpoint_path, "checkpoint_path", true);
            loop.checkpoint_every = checkpoint_every;
            loop.progress = progress;
            if (!callback.is_none()) {
              FEWSTEP_CHECK_TYPE(PyCallable_Check(callback.ptr()), "callback should be callable, got ",
                                 type_name(callback));
              auto fn = hold(callback);
              loop.on_step = [fn](const fewstep::TrainStepStats& s) {
                py::gil_scoped_acquire gil;
                (*fn)(stats_dict(s));
              };
            }
            const fewstep::TrainSummary summary =
                locked(t, [&](MicroTrainer& tr) { return tr.train(steps, loop); });
            py::dict d;
            d["first_step"] = summary.first_step;
            d["last_step"] = summary.last_step;
            d["losses"] = summary.losses;
            d["seconds"] = summary.seconds;
            return d;
          },
          py::arg("steps"), py::arg("checkpoint_path") = py::none(), py::arg("checkpoint_every") = 0,
          py::arg("progress") = true, py::arg("callback") = py::none(),
          "`steps` more steps in C++ (GIL released) with a progress bar on stderr (when it is a terminal). With "
          "checkpoint_path, a checkpoint every checkpoint_every steps (0: only at the end) and always after the last "
          "step. callback(stats) gets step()'s dict after every step (it may call trainer.sampler()). Returns "
          "{first_step, last_step, losses, seconds}.")
      .def(
          "save_checkpoint",
          [](PyMicroTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            locked(t, [&](MicroTrainer& tr) { tr.save_checkpoint(p); return 0; });
          },
          py::arg("path"), "Writes the full training state (atomic).")
      .def(
          "load_checkpoint",
          [](PyMicroTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            locked(t, [&](MicroTrainer& tr) { tr.load_checkpoint(p); return 0; });
          },
          py::arg("path"),
          "Restores a checkpoint (ValueError if missing, of another trainer kind, or made with other settings).")
      .def(
          "resume",
          [](PyMicroTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            return locked(t, [&](MicroTrainer& tr) { return tr.resume(p); });
          },
          py::arg("path"), "load_checkpoint(path) if the file exists; returns whether it did.")
      .def_property_readonly(
          "step_count", [](PyMicroTrainer& t) { return locked(t, [](MicroTrainer& tr) { return tr.step_count(); }); },
          "Optimisation steps completed.")
      .def_property_readonly(
          "planned_steps",
          [](PyMicroTrainer& t) { return locked(t, [](MicroTrainer& tr) { return tr.planned_steps(); }); },
          "total_steps of the learning-rate schedule (0: open-ended).")
      .def_property_readonly(
          "mode",
          [](PyMicroTrainer& t) {
            return locked(t, [](MicroTrainer& tr) { return fewstep::to_string(tr.options().mode); });
          },
          "'residual', 'step_size' or 'joint'.")
      .def(
          "sampler",
          [](PyMicroTrainer& t) { return locked(t, [](MicroTrainer& tr) { return snapshot(tr.sampler()); }); },
          "A MicroSampler of the current EMA heads with the teacher's identity (a snapshot: later steps do not "
          "change it). Save it with .save(path).")
      .def("__repr__", [](PyMicroTrainer& t) {
        return locked(t, [](MicroTrainer& tr) {
          const fewstep::MicroTrainerOptions& o = tr.options();
          return "MicroTrainer(mode='" + fewstep::to_string(o.mode) + "', step=" + std::to_string(tr.step_count()) +
                 ", batch=" + std::to_string(o.batch) + ", heads=(" + o.heads.describe() + "))";
        });
      });
}
