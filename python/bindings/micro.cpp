// Bindings of micro-distillation: the sampler file (micro/micro_sampler.h), the dense teacher
// trajectories it is trained on (micro/trajectories.h) and its trainer (train/micro_trainer.h).
//
// Unlike the DSM and distillation-loss bindings, the whole training step runs in C++ (the heads are
// TorchScript modules built by the library): the trainer is fewstep.Trainer.micro (the one Trainer
// binding, trainer.h), whose step()/train() run with the GIL released. A Python teacher network
// retakes the GIL per call (models.cpp), as does the optional per-step callback of train().
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
#include "trainer.h"

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

/// A snapshot of the trainer's EMA heads: MicroTrainer::sampler() shares the EMA modules, which the
/// next step() updates in place; a Python object must not change under its owner's feet.
std::shared_ptr<MicroSampler> snapshot(const MicroSampler& s) {
  auto copy = [](const fewstep::ScriptNet& net) -> fewstep::ScriptNet {
    return net ? std::make_shared<torch::jit::Module>(net->deepcopy()) : nullptr;
  };
  return std::make_shared<MicroSampler>(copy(s.residual()), copy(s.step_size()), s.info(), s.teacher_probe().clone());
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

constexpr const char* kTrainerDoc = R"doc(The micro-distillation trainer: g_psi and/or h_phi from dense trajectories.

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
    history_depth: with history, how many previous evaluations the residual head sees: 1 to 3 (each
        also passes the difference of the two before; an untrained head is the same sampler at any depth,
        and init= a shallower sampler deepens it).
    residual_kind: "network" (g_psi's residual head is a conv/MLP net of x and eps) or "coefficients"
        (learned multistep weights of x, eps and, with history, the previous eps (two or three
        with history_depth=2 or 3), functions of the step's (lambda_s, h, h_prev...) alone: about 10k
        parameters; train it in joint mode from scratch; docs/micro.md) or "hybrid" (the coefficients plus
        a network of width/blocks whose output starts at zero; init= a "coefficients" sampler with the
        same other settings to refine it per sample).
    loss: unrolled modes: "mse" (default), "rms" (mean of the samples' RMS end-point errors) or "log-rms"
        (their geometric mean: every sample's relative error counts the same; docs/micro.md).
    init: a MicroSampler whose heads start this run as the same sampler (same head settings and teacher;
        or a "coefficients" sampler starting a "hybrid" run; or, with history, a shallower history_depth).

Returns a fewstep.Trainer; its export() is the fewstep.MicroSampler of the EMA heads. Example::

    trainer = fs.Trainer.micro(teacher, "exact gmm(4, 3, 0)", data, mode="residual", batch=64,
                               lr=1e-3, total_steps=2000)
    trainer.train(2000, checkpoint="micro.ckpt", checkpoint_every=500)
    trainer.export().save("micro-residual.pt"))doc";

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

  // fewstep.Trainer.micro: the micro trainer in the one Trainer binding (trainer.h); export() gives the
  // MicroSampler of the EMA heads.
  py::object trainer_class = m.attr("Trainer");
  trainer_class.attr("micro") = py::staticmethod(py::cpp_function(
      [](const std::shared_ptr<Denoiser>& teacher, const std::string& teacher_id,
         const std::shared_ptr<DenseTrajectories>& trajectories, const std::shared_ptr<MicroSampler>& init,
         const py::kwargs& options) {
        const Denoiser& d = require_teacher(teacher);
        FEWSTEP_CHECK_TYPE(trajectories != nullptr,
                           "trajectories should be a fewstep.DenseTrajectories (fewstep.dense_trajectories), got None");
        fewstep::MicroTrainerOptions o;
        if (options.contains("mode")) mode_arg(py::str(options["mode"]));
        fewstep::options_from_json(options_json_of(options), o);
        std::shared_ptr<MicroTrainer> trainer;
        {
          py::gil_scoped_release release;
          trainer = std::make_shared<MicroTrainer>(d, teacher_id, *trajectories, o, init);
          if (init) init->check_teacher(d);
        }
        return wrap_trainer(trainer, [](fewstep::Trainer& t) -> py::object {
          std::shared_ptr<MicroSampler> s;
          {
            py::gil_scoped_release release;
            s = snapshot(static_cast<MicroTrainer&>(t).sampler());
          }
          return py::cast(s);
        });
      },
      py::name("micro"), py::arg("teacher"), py::arg("teacher_id"), py::arg("trajectories"), py::kw_only(),
      py::arg("init") = py::none(), kTrainerDoc));
}
