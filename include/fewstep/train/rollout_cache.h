/// @file train/rollout_cache.h
/// @brief (x_T, teacher x_0) pairs from long teacher solves, cached on disk with their settings.
///
/// Knowledge distillation (Luhman & Luhman 2021, arXiv 2101.02388) regresses a student onto the teacher's
/// ODE solution map x_T ↦ x_0. The pairs cost many teacher evaluations, so they are made once:
/// sample i starts from x_T drawn with seed + i (per-sample generators, so a pair does not depend
/// on the batch it was made in), is solved with the given stepper on the given grid, and the file
/// stores x_T, x_0, the labels fed to a conditional teacher, and `settings` (a JSON text naming the
/// teacher, solver, grid, n and seed). A later call with the same path and settings loads the file;
/// other settings regenerate it (the file is written atomically).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

struct RolloutPairs {
  at::Tensor x_T;     ///< [n, ...] float32
  at::Tensor x_0;     ///< [n, ...] the teacher's solution from x_T
  at::Tensor labels;  ///< [n] int64, or undefined for an unconditional teacher
  std::string settings;
  bool from_cache = false;
};

struct RolloutSpec {
  std::vector<int64_t> sample_shape;  ///< one sample, without the batch
  int64_t n = 0;
  uint64_t seed = 0;
  int64_t batch = 250;  ///< samples per teacher solve
  std::vector<double> grid;
  /// Conditional teachers: a Denoiser per batch of labels (labels i % num_classes for sample i).
  int64_t num_classes = 0;
  bool progress = true;  ///< a progress bar on stderr (terminals only)
};

/// `make_teacher(labels)` returns the teacher for a batch (labels undefined when num_classes == 0).
/// ValueError naming the field for n < 1, an empty shape or grid.
RolloutPairs teacher_rollouts(const std::function<Denoiser(const at::Tensor& labels)>& make_teacher,
                              const Stepper& stepper, const RolloutSpec& spec, const std::string& settings,
                              const std::string& cache_path);

}  // namespace fewstep
