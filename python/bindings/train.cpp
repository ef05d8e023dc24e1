// Bindings of train/: the denoising-score-matching arithmetic, the parts of a training run (AdamW with
// its learning-rate schedule, the EMA update, the checkpoint archive) and the one Trainer binding:
// every C++ trainer, and the trainer of a loss written in Python (python/fewstep/train.py), is a
// fewstep::Trainer driven by the library's loop (Trainer::train) with the GIL released.
//
// A Python loss keeps the network call in Python, so autograd and DistributedDataParallel see an
// ordinary PyTorch forward; its step (python/fewstep/train.py) calls back into the bound AdamW, EMA
// and checkpoint code, so nothing of a run is implemented twice.
#include "trainer.h"

#include <torch/csrc/jit/python/module_python.h>
#include <torch/script.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/student_init.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/train/classifier_trainer.h"
#include "fewstep/train/consistency_trainer.h"
#include "fewstep/train/denoiser_trainer.h"
#include "fewstep/train/dsm_loss.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/guidance_trainer.h"
#include "fewstep/train/kd_trainer.h"
#include "fewstep/train/progressive_trainer.h"
#include "options.h"

namespace py = pybind11;
using fewstep::Checkpoint;
using fewstep::NoiseSchedule;
using fewstep::ScriptNet;
using fewstep::Trainer;

namespace {

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}

const NoiseSchedule& require(const std::shared_ptr<NoiseSchedule>& schedule) {
  FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule (e.g. fewstep.VPLinear()), got None");
  return *schedule;
}

fewstep::DsmOptions make_options(const std::string& prediction, const std::string& time_input, double time_scale,
                                 const std::string& weighting, double min_snr_gamma) {
  fewstep::DsmOptions o;
  o.prediction = fewstep::parse_prediction(prediction);
  o.time_input = fewstep::parse_time_input(time_input);
  o.time_scale = time_scale;
  o.weighting = fewstep::parse_loss_weighting(weighting);
  o.min_snr_gamma = min_snr_gamma;
  o.validate();
  return o;
}

/// A torch.jit.ScriptModule's C++ module (shared: training it trains the Python object), or TypeError.
ScriptNet script_net(const py::object& obj, const char* arg, bool allow_none = false) {
  if (allow_none && obj.is_none()) return nullptr;
  const auto module = torch::jit::as_module(obj);
  FEWSTEP_CHECK_TYPE(module.has_value(), arg, " should be a torch.jit.ScriptModule (torch.jit.script(net) or a "
                     "network built by fewstep), got ", type_name(obj));
  return std::make_shared<torch::jit::Module>(*module);
}

/// A copy of a C++ module as a torch.jit.ScriptModule; with `trainable`, its parameters require grad.
py::object script_module(const torch::jit::Module& module, bool trainable = false) {
  torch::jit::Module copy;
  {
    py::gil_scoped_release release;
    at::NoGradGuard no_grad;
    copy = module.deepcopy();
  }
  if (trainable)
    for (const at::Tensor& p : copy.parameters(true)) at::Tensor(p).requires_grad_(true);
  return py::module_::import("torch.jit._recursive").attr("wrap_cpp_module")(copy);
}

std::shared_ptr<fewstep::BatchSource> require_data(const std::shared_ptr<fewstep::BatchSource>& data) {
  FEWSTEP_CHECK_TYPE(data != nullptr, "data should be a fewstep.BatchSource (e.g. fewstep.ShuffledBatches(x, "
                     "labels, batch_size, seed)), got None");
  return data;
}

/// f(trainer) under the lock, with the GIL released; f must not touch Python objects.
template <class F>
auto locked(PyTrainer& t, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::recursive_mutex> lock(t.mutex);
  return f(*t.trainer);
}

/// The trainer of a loss written in Python: every virtual calls the Python implementation (the GIL
/// taken per call), whose protocol is documented in python/fewstep/train.py (class _LossRun).
class PythonTrainer final : public Trainer {
 public:
  explicit PythonTrainer(std::shared_ptr<py::object> impl) : impl_(std::move(impl)) {
    kind_ = py::str((*impl_).attr("kind"));
  }
  std::string kind() const override { return kind_; }
  fewstep::TrainStepStats step() override {
    py::gil_scoped_acquire gil;
    const py::tuple r = (*impl_).attr("step")();
    fewstep::TrainStepStats s{r[0].cast<int64_t>(), r[1].cast<double>(), r[2].cast<double>(), r[3].cast<double>(), {}};
    for (const auto& item : r[4].cast<py::dict>()) s.extra.emplace_back(py::str(item.first), item.second.cast<double>());
    return s;
  }
  Checkpoint state() const override {
    Checkpoint c;
    py::gil_scoped_acquire gil;
    (*impl_).attr("state")(py::cast(&c, py::return_value_policy::reference));
    return c;
  }
  void load_state(const Checkpoint& c) override {
    py::gil_scoped_acquire gil;
    (*impl_).attr("load_state")(py::cast(const_cast<Checkpoint*>(&c), py::return_value_policy::reference));
  }
  int64_t step_count() const override { return attr<int64_t>("step_count"); }
  int64_t planned_steps() const override { return attr<int64_t>("planned_steps"); }
  const ScriptNet& export_net() const override {
    static const ScriptNet none;
    return none;
  }
  std::string options_json() const override {
    py::gil_scoped_acquire gil;
    return (*impl_).attr("options_json")().cast<std::string>();
  }
  std::vector<std::string> resumable_options() const override {
    return attr<std::vector<std::string>>("resumable_options");
  }
  bool supports_data_parallel() const override { return true; }

 private:
  template <class T>
  T attr(const char* name) const {
    py::gil_scoped_acquire gil;
    return (*impl_).attr(name).cast<T>();
  }
  std::shared_ptr<py::object> impl_;
  std::string kind_;
};

py::dict summary_dict(const fewstep::TrainSummary& s) {
  py::dict d;
  d["first_step"] = s.first_step;
  d["last_step"] = s.last_step;
  d["losses"] = s.losses;
  d["seconds"] = s.seconds;
  d["stopped"] = s.stopped;
  return d;
}

constexpr const char* kTrainerDoc = R"doc(A fewstep trainer: one shape for every training method.

C++ trainers are built with the static methods (Trainer.denoiser, Trainer.classifier,
Trainer.progressive, Trainer.knowledge, Trainer.guidance, Trainer.consistency, Trainer.micro) from
TorchScript networks; a loss written in Python (fewstep.DSMLoss, fewstep.ProgressiveDistillationLoss,
..., any fewstep.train.Objective) on an nn.Module with fewstep.train.loss_trainer(...). All share:

    step()                  one optimisation step (GIL released) -> fewstep.TrainStep
    train(steps, ...)       `steps` more steps: progress bar, callback, checkpoints (GIL released)
    save_checkpoint(path)   the whole state, written atomically, with the options as JSON
    load_checkpoint(path)   ValueError if another kind, or an option differs that may not change
    resume(path)            load_checkpoint if the file exists; returns whether it did
    export()                the trained product (EMA network, sampler, ...)
    options                 the options dict stored in checkpoints and compared on resume
    set_data_parallel(rank, world, average)   split every batch across processes (fewstep.data_parallel)

Resuming a checkpoint and training on gives bit-identical weights to a run that never stopped (same
machine, thread count and versions).)doc";

}  // namespace

std::shared_ptr<PyTrainer> wrap_trainer(std::shared_ptr<Trainer> trainer,
                                        std::function<py::object(Trainer&)> product,
                                        std::shared_ptr<py::object> keep) {
  auto out = std::make_shared<PyTrainer>();
  out->trainer = std::move(trainer);
  out->product = product ? std::move(product) : [](Trainer& t) -> py::object {
    const ScriptNet& net = t.export_net();
    if (!net) return py::none();
    return script_module(*net);
  };
  out->keep = keep ? std::move(keep) : hold(py::none());
  out->keep_sole_count = out->keep.use_count();
  return out;
}

// ---- Python's cyclic GC through a Trainer (a Python loss or net that keeps a reference to its trainer) ----
// The reference to `keep` is shown to the collector only while the Python wrapper is the PyTrainer's
// sole owner, the PyTrainer its C++ trainer's, and nothing else holds `keep` (the count recorded by
// wrap_trainer): otherwise C++ keeps the object alive, as it must. Touched only under the GIL.
namespace {

PyTrainer* solely_held_trainer(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  py::detail::value_and_holder vh = inst->get_value_and_holder();
  if (!vh.holder_constructed()) return nullptr;
  const auto& holder = vh.holder<std::shared_ptr<PyTrainer>>();
  if (!holder || holder.use_count() != 1 || !holder->keep) return nullptr;
  if (holder->trainer && holder->trainer.use_count() != 1) return nullptr;
  return holder->keep.use_count() == holder->keep_sole_count ? holder.get() : nullptr;
}

int trainer_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
  Py_VISIT(Py_TYPE(self));
#endif
  if (PyTrainer* t = solely_held_trainer(self)) Py_VISIT(t->keep->ptr());
  return 0;
}

int trainer_clear(PyObject* self) {
  if (PyTrainer* t = solely_held_trainer(self)) {
    py::object dropped = std::move(*t->keep);  // the slot is empty before the object may be freed
    *t->keep = py::none();
  }
  return 0;
}

}  // namespace

void trainer_gc_setup(PyHeapTypeObject* heap_type) {
  PyTypeObject& type = heap_type->ht_type;
  type.tp_flags |= Py_TPFLAGS_HAVE_GC;
  type.tp_traverse = trainer_traverse;
  type.tp_clear = trainer_clear;
}

std::string options_json_of(const py::dict& options) {
  // JSON has no NaN or infinity: such a value is refused here, by name.
  for (const auto& item : options) {
    if (!py::isinstance<py::float_>(item.second)) continue;
    const double v = item.second.cast<double>();
    FEWSTEP_CHECK_VALUE(std::isfinite(v), std::string(py::str(item.first)), " should be finite, got ", v);
  }
  return py::module_::import("json").attr("dumps")(options).cast<std::string>();
}

std::string path_arg(const py::object& obj, const char* arg, bool allow_none) {
  if (allow_none && obj.is_none()) return "";
  const bool ok = py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__");
  FEWSTEP_CHECK_TYPE(ok, arg, " should be a str or os.PathLike", allow_none ? " (or None)" : "", ", got ",
                     type_name(obj));
  py::object path = py::module_::import("os").attr("fspath")(obj);
  FEWSTEP_CHECK_TYPE(py::isinstance<py::str>(path), arg, " should be a text path, got ", type_name(path));
  return path.cast<std::string>();
}

void bind_train(py::module_& m) {
  m.def(
      "student_from_teacher",
      [](const py::object& teacher, const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction,
         const std::string& student_prediction, const std::string& time_input, double time_scale,
         const py::object& consistency_sigma_data, double consistency_t_min) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        const ScriptNet net = script_net(teacher, "teacher");
        const fewstep::TeacherParameterization tp{fewstep::parse_prediction(prediction),
                                                  fewstep::parse_time_input(time_input), time_scale};
        fewstep::StudentTarget target{fewstep::parse_prediction(student_prediction), std::nullopt};
        if (!consistency_sigma_data.is_none())
          target.consistency = fewstep::ConsistencyParameterization{consistency_sigma_data.cast<double>(),
                                                                    consistency_t_min, tp.time_input, tp.time_scale};
        ScriptNet student;
        {
          py::gil_scoped_release release;
          student = fewstep::student_from_teacher(*net, *schedule, tp, target);
        }
        return script_module(*student, /*trainable=*/true);
      },
      py::arg("teacher"), py::arg("schedule"), py::kw_only(), py::arg("prediction") = "eps",
      py::arg("student_prediction") = "v", py::arg("time_input") = "t", py::arg("time_scale") = 1.0,
      py::arg("consistency_sigma_data") = py::none(), py::arg("consistency_t_min") = 0.0,
      "The teacher as a student in function space (models/student_init.h): a TorchScript module wrapping a copy "
      "of the teacher with the exact conversion of its output to `student_prediction`, or, with "
      "consistency_sigma_data, to the network F of the consistency function f = c_skip x + c_out F(c_in x, t), "
      "so that f equals the teacher's x0 prediction. At iteration 0 the student is the teacher.");
  m.def(
      "_resolve_student_start",
      [](const std::string& start, const std::string& teacher_prediction) {
        return fewstep::to_string(fewstep::resolve_student_start(fewstep::parse_student_start(start),
                                                                 fewstep::parse_prediction(teacher_prediction)));
      },
      py::arg("start"), py::arg("teacher_prediction"),
      "'teacher' or 'weights': where a student of a teacher predicting `teacher_prediction` starts for `start` "
      "('auto', 'teacher' or 'weights'; models/student_init.h). ValueError naming a bad value.");
  // ---------------------------------------------------------------------------------------------
  // Denoising score matching: only the arithmetic; the network call stays in Python (train.py).
  m.def(
      "_dsm_options",
      [](const std::string& prediction, const std::string& time_input, double time_scale,
         const std::string& weighting, double min_snr_gamma) {
        const fewstep::DsmOptions o = make_options(prediction, time_input, time_scale, weighting, min_snr_gamma);
        return py::make_tuple(fewstep::to_string(o.prediction), fewstep::to_string(o.time_input),
                              fewstep::to_string(o.weighting));
      },
      py::arg("prediction"), py::arg("time_input"), py::arg("time_scale"), py::arg("weighting"),
      py::arg("min_snr_gamma"),
      "Validates DSM options (ValueError naming the bad one); returns the canonical names.");
  m.def(
      "_dsm_inputs",
      [](const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t,
         const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction, const std::string& time_input,
         double time_scale, const std::string& weighting, double min_snr_gamma) {
        const fewstep::DsmOptions o = make_options(prediction, time_input, time_scale, weighting, min_snr_gamma);
        const fewstep::DsmInputs in = fewstep::dsm_inputs(x0, eps, t, require(schedule), o);
        return py::make_tuple(in.x_t, in.t_input, in.target, in.weight);
      },
      py::arg("x0"), py::arg("eps"), py::arg("t"), py::arg("schedule"), py::arg("prediction"), py::arg("time_input"),
      py::arg("time_scale"), py::arg("weighting"), py::arg("min_snr_gamma"),
      "fewstep::dsm_inputs: (x_t, t_input, target, weight).");
  m.def(
      "_dsm_loss",
      [](const at::Tensor& output, const at::Tensor& target, const at::Tensor& weight) {
        fewstep::DsmInputs in;
        in.target = target;
        in.weight = weight;
        return fewstep::dsm_loss(output, in);
      },
      py::arg("output"), py::arg("target"), py::arg("weight"),
      "fewstep::dsm_loss: mean_b weight_b * mean_j (output - target)^2.");
  m.def(
      "native_error_scale",
      [](const std::string& prediction, const std::shared_ptr<NoiseSchedule>& schedule, double t) {
        return fewstep::native_error_scale(fewstep::parse_prediction(prediction), require(schedule), t);
      },
      py::arg("prediction"), py::arg("schedule"), py::arg("t"),
      "c_t = |native output error|^2 / |x0 error|^2 at time t for a network predicting `prediction`.");
  m.def(
      "x0_loss_weight",
      [](const std::string& weighting, const std::string& prediction, const std::shared_ptr<NoiseSchedule>& schedule,
         double t, double min_snr_gamma) {
        return fewstep::x0_loss_weight(fewstep::parse_loss_weighting(weighting), fewstep::parse_prediction(prediction),
                                       require(schedule), t, min_snr_gamma);
      },
      py::arg("weighting"), py::arg("prediction"), py::arg("schedule"), py::arg("t"), py::arg("min_snr_gamma") = 5.0,
      "w_t: the weight of the per-sample x0 mean squared error under `weighting` (uniform: c_t, truncated_snr: "
      "max(SNR, 1), min_snr: min(SNR, gamma)).");

  // ---------------------------------------------------------------------------------------------
  // The parts of a run that the Python losses' step uses (python/fewstep/train.py).
  py::class_<Checkpoint, std::shared_ptr<Checkpoint>>(
      m, "Checkpoint",
      "A trainer's state: named tensors, integers and strings (core/tensor_archive.h), written atomically.")
      .def(py::init<>())
      .def("set_tensor", &Checkpoint::set_tensor, py::arg("key"), py::arg("value"))
      .def("set_int", &Checkpoint::set_int, py::arg("key"), py::arg("value"))
      .def("set_string", &Checkpoint::set_string, py::arg("key"), py::arg("value"))
      .def("__contains__", &Checkpoint::contains, py::arg("key"))
      .def("tensor", &Checkpoint::tensor, py::arg("key"), "ValueError naming the key when missing.")
      .def("integer", &Checkpoint::integer, py::arg("key"))
      .def("string", &Checkpoint::string, py::arg("key"))
      .def("tensor_keys", &Checkpoint::tensor_keys, py::arg("prefix") = "", "Tensor keys starting with prefix, sorted.")
      .def(
          "save",
          [](const Checkpoint& c, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            py::gil_scoped_release release;
            c.save(p);
          },
          py::arg("path"), "Writes atomically (temporary file, fsync, rename).")
      .def_static(
          "load",
          [](const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            py::gil_scoped_release release;
            return std::make_shared<Checkpoint>(Checkpoint::load(p));
          },
          py::arg("path"), "ValueError naming the path if it is missing or not a fewstep checkpoint.")
      .def_property_readonly("source", &Checkpoint::source);

  py::class_<fewstep::Optimizer, std::shared_ptr<fewstep::Optimizer>>(
      m, "Optimizer",
      "AdamW with the learning-rate schedule (linear warmup, cosine or linear decay) and gradient clipping of "
      "every fewstep trainer (train/optimizer.h), over any tensors that require grad.")
      .def(py::init([](std::vector<at::Tensor> parameters, const py::dict& options) {
             fewstep::OptimizerOptions o;
             fewstep::options_from_json(options_json_of(options), o);
             return std::make_shared<fewstep::Optimizer>(std::move(parameters), o);
           }),
           py::arg("parameters"), py::arg("options"),
           "options: lr, warmup, total_steps, min_lr, decay ('cosine' or 'linear'), beta1, beta2, eps, weight_decay, "
           "grad_clip (ValueError naming a bad or unknown one).")
      .def(
          "step",
          [](fewstep::Optimizer& o, int64_t step) {
            py::gil_scoped_release release;
            const fewstep::Optimizer::Stats s = o.step(step);
            return std::make_pair(s.lr, s.grad_norm);
          },
          py::arg("step"),
          "The update of 0-based schedule step `step` from the accumulated gradients (then cleared): "
          "(lr, grad_norm before clipping).")
      .def("zero_grad", &fewstep::Optimizer::zero_grad)
      .def("save", &fewstep::Optimizer::save, py::arg("checkpoint"), py::arg("prefix"))
      .def("load", &fewstep::Optimizer::load, py::arg("checkpoint"), py::arg("prefix"))
      .def_property_readonly("options", [](const fewstep::Optimizer& o) {
        return py::module_::import("json").attr("loads")(fewstep::options_to_json(o.options()));
      });

  m.def(
      "lr_at",
      [](int64_t step, const py::dict& options) {
        fewstep::OptimizerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        o.schedule.validate();
        return o.schedule.at(step);
      },
      py::arg("step"), py::arg("options"),
      "The learning rate of 0-based step `step` under the optimiser options (lr, warmup, total_steps, min_lr, "
      "decay): train/lr_schedule.h.");
  m.def(
      "ema_update",
      [](const std::vector<at::Tensor>& average, const std::vector<at::Tensor>& current,
         const std::vector<at::Tensor>& average_buffers, const std::vector<at::Tensor>& buffers, double decay) {
        py::gil_scoped_release release;
        fewstep::ema_update(average, current, average_buffers, buffers, decay);
      },
      py::arg("average"), py::arg("current"), py::arg("average_buffers"), py::arg("buffers"), py::arg("decay"),
      "average <- decay * average + (1 - decay) * current (parameters), buffers copied (train/ema.h).");

  // ---------------------------------------------------------------------------------------------
  // Data sources of the C++ trainers.
  py::class_<fewstep::BatchSource, std::shared_ptr<fewstep::BatchSource>>(
      m, "BatchSource", "Batches on demand with a checkpointable position (data/batch_source.h).")
      .def(
          "next",
          [](fewstep::BatchSource& d) {
            fewstep::Batch b;
            {
              py::gil_scoped_release release;
              b = d.next();
            }
            return py::make_tuple(b.x, b.labels.defined() ? py::cast(b.labels) : py::none());
          },
          "The next batch (x, labels or None); advances the position.")
      .def("state", &fewstep::BatchSource::state, "The position: named tensors.")
      .def("load_state", &fewstep::BatchSource::load_state, py::arg("state"))
      .def("describe", &fewstep::BatchSource::describe)
      .def("__repr__", &fewstep::BatchSource::describe);
  py::class_<fewstep::ShuffledBatches, fewstep::BatchSource, std::shared_ptr<fewstep::ShuffledBatches>>(
      m, "ShuffledBatches", "Batches of an in-memory data set, reshuffled each epoch (data/shuffled_batches.h).")
      .def(py::init([](const at::Tensor& x, const std::optional<at::Tensor>& labels, int64_t batch_size,
                       uint64_t seed, bool shuffle) {
             return std::make_shared<fewstep::ShuffledBatches>(x, labels.value_or(at::Tensor()), batch_size, seed,
                                                               shuffle);
           }),
           py::arg("x"), py::arg("labels") = py::none(), py::arg("batch_size") = 64, py::arg("seed") = 0,
           py::arg("shuffle") = true);
  py::class_<fewstep::MixtureData, fewstep::BatchSource, std::shared_ptr<fewstep::MixtureData>>(
      m, "MixtureData", "Fresh samples of a Gaussian mixture every batch (data/mixture_data.h).")
      .def(py::init([](const std::shared_ptr<fewstep::GaussianMixture>& mixture, int64_t batch_size, uint64_t seed) {
             FEWSTEP_CHECK_TYPE(mixture != nullptr, "mixture should be a fewstep.GaussianMixture, got None");
             return std::make_shared<fewstep::MixtureData>(mixture, batch_size, seed);
           }),
           py::arg("mixture"), py::arg("batch_size") = 64, py::arg("seed") = 0);

  // ---------------------------------------------------------------------------------------------
  // The trainer.
  py::class_<fewstep::TrainStepStats>(m, "TrainStep", "What one optimisation step reports.")
      .def_readonly("step", &fewstep::TrainStepStats::step, "Steps completed (1 after the first).")
      .def_readonly("loss", &fewstep::TrainStepStats::loss, "The batch loss of this step.")
      .def_readonly("lr", &fewstep::TrainStepStats::lr, "The learning rate this step used.")
      .def_readonly("grad_norm", &fewstep::TrainStepStats::grad_norm, "Global gradient norm before clipping.")
      .def_property_readonly(
          "extra",
          [](const fewstep::TrainStepStats& s) {
            py::dict d;
            for (const auto& [k, v] : s.extra) d[py::str(k)] = v;
            return d;
          },
          "Trainer-specific values, e.g. {'N': 4} (progressive) or {'budget': 7} (micro).")
      .def("__repr__", [](const fewstep::TrainStepStats& s) {
        return "TrainStep(step=" + std::to_string(s.step) + ", loss=" + std::to_string(s.loss) +
               ", lr=" + std::to_string(s.lr) + ")";
      });

  py::class_<PyTrainer, std::shared_ptr<PyTrainer>> cls(m, "Trainer", kTrainerDoc,
                                                        py::custom_type_setup(trainer_gc_setup));
  cls.def(py::init([](py::object impl) {
            std::shared_ptr<py::object> held = hold(std::move(impl));
            auto trainer = std::make_shared<PythonTrainer>(held);
            return wrap_trainer(trainer, [](Trainer&) -> py::object { return py::none(); }, std::move(held));
          }),
          py::arg("impl"),
          "The trainer of a loss written in Python; `impl` is a fewstep.train._LossRun (use "
          "fewstep.train.loss_trainer).")
      .def(
          "step", [](PyTrainer& t) { return locked(t, [](Trainer& tr) { return tr.step(); }); },
          "One optimisation step (GIL released) -> fewstep.TrainStep.")
      .def(
          "train",
          [](PyTrainer& t, int64_t steps, const py::object& checkpoint, int64_t checkpoint_every, bool progress,
             const py::object& callback, int64_t log_every) {
            fewstep::TrainLoopOptions loop;
            loop.checkpoint_path = path_arg(checkpoint, "checkpoint", true);
            loop.checkpoint_every = checkpoint_every;
            loop.log_every = log_every;
            loop.progress = false;  // the Python bar below instead (it also shows in notebooks)
            std::shared_ptr<py::object> cb, bar;
            if (!callback.is_none()) {
              FEWSTEP_CHECK_TYPE(PyCallable_Check(callback.ptr()), "callback should be callable, got ",
                                 type_name(callback));
              cb = hold(callback);
            }
            if (progress && steps > 0)
              bar = hold(py::module_::import("fewstep.train").attr("_ProgressBar")(steps, t.trainer->kind()));
            if (cb || bar) {
              loop.on_step = [cb, bar](const fewstep::TrainStepStats& s) {
                py::gil_scoped_acquire gil;
                if (bar) (*bar).attr("update")(s);
                if (cb) (*cb)(s);
              };
            }
            fewstep::TrainSummary summary;
            try {
              summary = locked(t, [&](Trainer& tr) { return tr.train(steps, loop); });
            } catch (...) {
              if (bar) (*bar).attr("close")();
              throw;
            }
            if (bar) (*bar).attr("close")();
            return summary_dict(summary);
          },
          py::arg("steps"), py::kw_only(), py::arg("checkpoint") = py::none(), py::arg("checkpoint_every") = 0,
          py::arg("progress") = true, py::arg("callback") = py::none(), py::arg("log_every") = 0,
          "`steps` more steps in C++ (GIL released): a tqdm bar (loss, lr), callback(fewstep.TrainStep) after every "
          "step, and with checkpoint=path a checkpoint every checkpoint_every steps (0: only at the end) and after "
          "the last step (with data parallelism, by rank 0 only). Returns {first_step, last_step, losses, seconds, "
          "stopped}.")
      .def(
          "save_checkpoint",
          [](PyTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            locked(t, [&](Trainer& tr) {
              tr.save_checkpoint(p);
              return 0;
            });
          },
          py::arg("path"), "Writes the whole training state with the options (atomic).")
      .def(
          "load_checkpoint",
          [](PyTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            locked(t, [&](Trainer& tr) {
              tr.load_checkpoint(p);
              return 0;
            });
          },
          py::arg("path"),
          "Restores a checkpoint; ValueError if missing, of another trainer kind, or written with options that "
          "differ (only those in resumable_options may).")
      .def(
          "resume",
          [](PyTrainer& t, const py::object& path) {
            const std::string p = path_arg(path, "path", false);
            return locked(t, [&](Trainer& tr) { return tr.resume(p); });
          },
          py::arg("path"), "load_checkpoint(path) if the file exists; returns whether it did.")
      .def(
          "export",
          [](PyTrainer& t) -> py::object {
            py::gil_scoped_release release;
            std::lock_guard<std::recursive_mutex> lock(t.mutex);
            py::gil_scoped_acquire gil;
            if (!t.keep->is_none() && py::hasattr(*t.keep, "export")) return t.keep->attr("export")();
            return t.product(*t.trainer);
          },
          "The trained product, a snapshot (later steps do not change it): the EMA network (a ScriptModule, or a "
          "copy of a Python network), or a fewstep.MicroSampler.")
      .def(
          "set_data_parallel",
          [](PyTrainer& t, int64_t rank, int64_t world, const py::object& average) {
            fewstep::DataParallel p;
            p.rank = rank;
            p.world = world;
            if (!average.is_none()) {
              FEWSTEP_CHECK_TYPE(PyCallable_Check(average.ptr()), "average should be callable, got ",
                                 type_name(average));
              auto fn = hold(average);
              p.average = [fn](const std::vector<at::Tensor>& tensors) {
                py::gil_scoped_acquire gil;
                (*fn)(tensors);
              };
            }
            locked(t, [&](Trainer& tr) {
              tr.set_data_parallel(p);
              return 0;
            });
            if (!t.keep->is_none() && py::hasattr(*t.keep, "set_data_parallel"))
              t.keep->attr("set_data_parallel")(rank, world, average);
          },
          py::arg("rank"), py::arg("world"), py::arg("average"),
          "Data parallelism: this is process `rank` of `world`; every process draws the whole batch and trains on "
          "its rows, and average(tensors) replaces each tensor by its mean over the processes in place (an "
          "all-reduce; fewstep.data_parallel supplies one). ValueError if the trainer does not support it.")
      .def_property_readonly(
          "step_count", [](PyTrainer& t) { return locked(t, [](Trainer& tr) { return tr.step_count(); }); },
          "Optimisation steps completed.")
      .def_property_readonly(
          "planned_steps", [](PyTrainer& t) { return locked(t, [](Trainer& tr) { return tr.planned_steps(); }); },
          "The steps the trainer's schedule is planned for (0: open-ended).")
      .def_property_readonly("kind", [](PyTrainer& t) { return locked(t, [](Trainer& tr) { return tr.kind(); }); })
      .def_property_readonly(
          "options",
          [](PyTrainer& t) {
            const std::string j = locked(t, [](Trainer& tr) { return tr.options_json(); });
            return py::module_::import("json").attr("loads")(j);
          },
          "Every option of the trainer, as stored in its checkpoints and compared on resume.")
      .def_property_readonly(
          "resumable_options",
          [](PyTrainer& t) { return locked(t, [](Trainer& tr) { return tr.resumable_options(); }); },
          "The options that may differ when resuming (e.g. ['total_steps']).")
      .def_property_readonly(
          "impl", [](PyTrainer& t) { return *t.keep; },
          "The Python implementation of a Python loss's trainer (student, EMA, objective); None otherwise.")
      .def("__repr__", [](PyTrainer& t) {
        return locked(t, [](Trainer& tr) {
          return "Trainer(kind='" + tr.kind() + "', step=" + std::to_string(tr.step_count()) + ")";
        });
      });

  // The C++ trainers. Networks are TorchScript modules, shared with the caller (trained in place);
  // options are keyword arguments with the names of the trainer's options_to_json.
  cls.def_static(
      "denoiser",
      [](const py::object& net, const std::shared_ptr<NoiseSchedule>& schedule,
         const std::shared_ptr<fewstep::BatchSource>& data, const py::kwargs& options) {
        fewstep::DenoiserTrainerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return wrap_trainer(std::make_shared<fewstep::DenoiserTrainer>(script_net(net, "net"), schedule,
                                                                       require_data(data), o));
      },
      py::arg("net"), py::arg("schedule"), py::arg("data"),
      "Denoising score matching of a ScriptModule net(x, t[, y]) (train/denoiser_trainer.h). Options: prediction, "
      "time_input, time_scale, weighting, min_snr_gamma, t_min, t_max, num_classes, label_dropout, ema_decay, seed, "
      "lr, warmup, total_steps, min_lr, decay, beta1, beta2, eps, weight_decay, grad_clip.");
  cls.def_static(
      "classifier",
      [](const py::object& net, const std::shared_ptr<fewstep::BatchSource>& data, const py::kwargs& options) {
        fewstep::ClassifierTrainerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        return wrap_trainer(std::make_shared<fewstep::ClassifierTrainer>(script_net(net, "net"), require_data(data), o));
      },
      py::arg("net"), py::arg("data"),
      "Cross-entropy training of a ScriptModule classifier (train/classifier_trainer.h). Options: flip, seed and the "
      "optimiser's.");
  cls.def_static(
      "progressive",
      [](const py::object& teacher, const std::shared_ptr<NoiseSchedule>& schedule,
         const std::shared_ptr<fewstep::BatchSource>& data, const py::object& student, const py::kwargs& options) {
        fewstep::ProgressiveTrainerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return wrap_trainer(std::make_shared<fewstep::ProgressiveDistillationTrainer>(
            script_net(teacher, "teacher"), schedule, require_data(data), o, script_net(student, "student", true)));
      },
      py::arg("teacher"), py::arg("schedule"), py::arg("data"), py::kw_only(), py::arg("student") = py::none(),
      "Progressive distillation (train/progressive_trainer.h). Options: initial_steps, final_steps, "
      "iterations_per_round, first_round_substeps, teacher_prediction, student_prediction, time_input, time_scale, weighting, t_min, t_max, "
      "num_classes, label_dropout, guidance_range, ema_decay, seed and the optimiser's.");
  cls.def_static(
      "knowledge",
      [](const py::object& student, const std::shared_ptr<NoiseSchedule>& schedule, const at::Tensor& x_T,
         const at::Tensor& x_0, const std::optional<at::Tensor>& labels, const py::kwargs& options) {
        fewstep::KdTrainerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        fewstep::RolloutPairs pairs;
        pairs.x_T = x_T;
        pairs.x_0 = x_0;
        pairs.labels = labels.value_or(at::Tensor());
        pairs.settings = "tensors given in Python (" + std::to_string(x_T.size(0)) + " pairs)";
        return wrap_trainer(std::make_shared<fewstep::KnowledgeDistillationTrainer>(script_net(student, "student"),
                                                                                    schedule, pairs, o));
      },
      py::arg("student"), py::arg("schedule"), py::arg("x_T"), py::arg("x_0"), py::kw_only(),
      py::arg("labels") = py::none(),
      "Knowledge distillation on teacher pairs (x_T, x_0) (train/kd_trainer.h). Options: timesteps, "
      "student_prediction, time_input, time_scale, batch, ema_decay, seed and the optimiser's.");
  cls.def_static(
      "guidance",
      [](const py::object& teacher, const py::object& student, const std::shared_ptr<NoiseSchedule>& schedule,
         const std::shared_ptr<fewstep::BatchSource>& data, const py::kwargs& options) {
        fewstep::GuidanceTrainerOptions o;
        fewstep::options_from_json(options_json_of(options), o);
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return wrap_trainer(std::make_shared<fewstep::GuidanceDistillationTrainer>(
            script_net(teacher, "teacher"), script_net(student, "student"), schedule, require_data(data), o));
      },
      py::arg("teacher"), py::arg("student"), py::arg("schedule"), py::arg("data"),
      "Guidance distillation, stage one (train/guidance_trainer.h). Options: num_classes, guidance_min, "
      "guidance_max, prediction, time_input, time_scale, t_min, t_max, ema_decay, seed and the optimiser's.");
  cls.def_static(
      "consistency",
      [](const py::object& student, const std::shared_ptr<NoiseSchedule>& schedule,
         const std::shared_ptr<fewstep::BatchSource>& data, const py::object& teacher, const py::kwargs& options) {
        const fewstep::ConsistencyTrainerOptions o = fewstep::consistency_options_from_json(options_json_of(options));
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return wrap_trainer(std::make_shared<fewstep::ConsistencyTrainer>(
            script_net(student, "student"), schedule, require_data(data), o, script_net(teacher, "teacher", true)));
      },
      py::arg("student"), py::arg("schedule"), py::arg("data"), py::kw_only(), py::arg("teacher") = py::none(),
      "Consistency distillation / training (CD, CT, iCT, ECT, sCD, sCT; train/consistency_trainer.h). Options: "
      "method, sigma_data, t_min, time_input, time_scale, teacher_prediction, teacher_time_input, teacher_time_scale, "
      "teacher_solver, num_points, target_ema, ct_s0, ct_s1, ct_mu0, ct_total_steps, ict_s0, ict_s1, ict_total_steps, "
      "ect_q, ect_k, ect_b, ect_stages, ect_total_steps, scm_tangent_c, scm_warmup_steps, scm_adaptive_weight, "
      "p_mean, p_std, rho, distance (default: pseudo_huber for ict and ect, l2 otherwise), huber_c, ema_decay, seed "
      "and the optimiser's. A teacher is needed for cd and scd.");
}
