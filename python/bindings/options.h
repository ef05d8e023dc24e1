// Shared by the binding files: Python keyword options → fewstep::Options, and holding Python objects
// from code that runs without the GIL.
#pragma once

#include <torch/python.h>

#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/options.h"

/// bool → bool, int → int64, float → double, str → string; anything else is a TypeError naming the key.
fewstep::Options options_from_dict(const pybind11::dict& dict);

/// Holds a Python object (e.g. a callable) in a shared_ptr whose deleter takes the GIL, so copies may
/// be dropped from C++ code that runs with the GIL released.
std::shared_ptr<pybind11::object> hold(pybind11::object obj);

/// A float64 CPU tensor holding `values` (time grids and the like, returned to Python).
at::Tensor double_tensor(const std::vector<double>& values);

/// cache= of the functions that cache teacher solves, as a cache root (core/cache_dir.h): None or
/// False → "" (no cache), True → the default root, a str or os.PathLike → that directory. TypeError
/// naming `arg` otherwise.
std::string cache_root_arg(const pybind11::object& cache, const char* arg = "cache");

/// A torch.dtype as a scalar type (the validity of the type is the caller's check); TypeError otherwise.
at::ScalarType dtype_of(const pybind11::object& dtype);

namespace fewstep {
struct ModelTunedGrid;
}  // namespace fewstep

/// A model file's tuned grids as a list of dicts {solver, options, nfe, timesteps, fit} and back
/// (bindings/grids.cpp).
pybind11::list tuned_grids_to_python(const std::vector<fewstep::ModelTunedGrid>& grids);
std::vector<fewstep::ModelTunedGrid> tuned_grids_from_python(const pybind11::object& grids);
