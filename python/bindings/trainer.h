// The one binding of fewstep::Trainer (train/trainer.h), shared by the binding files that build trainers
// (train.cpp: denoiser, classifier, distillation, consistency and Python losses; micro.cpp: micro).
#pragma once

#include <torch/python.h>

#include <functional>
#include <memory>
#include <mutex>

#include "fewstep/train/trainer.h"

/// A trainer seen from Python. step()/train() run in C++ with the GIL released; a lock keeps other
/// Python threads from using the trainer mid-step. Every method takes the lock with the GIL released
/// (no deadlock with callbacks, which retake the GIL), and the lock is recursive so that a callback may
/// use the trainer (e.g. trainer.export() for a periodic evaluation).
struct PyTrainer {
  std::shared_ptr<fewstep::Trainer> trainer;
  std::recursive_mutex mutex;
  /// What export() returns (called with the lock held and the GIL taken).
  std::function<pybind11::object(fewstep::Trainer&)> product;
  /// The Python object the trainer uses (a Python loss's implementation; None for the C++ trainers),
  /// held once for the wrapper and the C++ trainer alike, so that the fewstep.Trainer type can show
  /// the reference to Python's cyclic GC (tp_traverse/tp_clear in train.cpp). Never null.
  std::shared_ptr<pybind11::object> keep;
  /// keep.use_count() when only this wrapper and its trainer hold it (recorded by wrap_trainer).
  long keep_sole_count = 0;
};

/// A C++ trainer for Python; `product` builds what export() returns (default: a copy of export_net()
/// as a torch.jit.ScriptModule).
std::shared_ptr<PyTrainer> wrap_trainer(std::shared_ptr<fewstep::Trainer> trainer,
                                        std::function<pybind11::object(fewstep::Trainer&)> product = {},
                                        std::shared_ptr<pybind11::object> keep = nullptr);

/// Python's cyclic GC for the fewstep.Trainer type (py::custom_type_setup).
void trainer_gc_setup(PyHeapTypeObject* heap_type);

/// A Python options dict (keyword arguments) as the JSON object the options_from_json functions read.
std::string options_json_of(const pybind11::dict& options);

/// A str or os.PathLike as a string ("" for None when allowed); TypeError naming `arg` otherwise.
std::string path_arg(const pybind11::object& obj, const char* arg, bool allow_none);
