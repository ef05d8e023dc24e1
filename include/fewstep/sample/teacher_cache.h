/// @file sample/teacher_cache.h
/// @brief One cached teacher solve: many ODE solves of a model from per-sample-seeded x_T, kept on
///        disk under a key made of the model's content and every setting.
///
/// Knowledge distillation regresses a student onto the teacher's solution map x_T ↦ x_0 (Luhman &
/// Luhman 2021, arXiv 2101.02388), micro-distillation learns from dense teacher trajectories
/// (docs/micro.md), and `fewstep eval` measures a solver against a fine reference solve of the same
/// model. All three are this: sample i starts from x_T drawn by `randn_per_sample` with seed
/// `seed + i` (core/noise.h; the same x_T as `fs.randn(shape, seeds)` and `fewstep sample --seed`;
/// times σ(t_0) for VE teachers, sample/request.h prior_scale),
/// is solved by a deterministic registered stepper on a given grid, and x is kept at every
/// `keep_every`-th grid point (and optionally the teacher's ε̂ there).
///
/// Cache (one policy, core/cache_dir.h): the file `<cache_root>/teacher-solves/<hash>.pt` is a
/// TensorArchive (checksummed) that stores its key: the teacher's content fingerprint
/// (models/denoiser.h: the SHA-256 of a model file's .pt and sidecar, of a TorchScript file, of an
/// exact mixture's parameters, or of a Python module's weights) and every setting that changes the
/// result (solver and options, grid, n, seed, shape, dtype, kept points, labels). A load compares
/// the stored key with the wanted one, checks the shapes and redraws x_T to check it bit for bit,
/// so a retrained teacher at the same path, another network with the same description, a changed
/// noise convention or a damaged file is recomputed, never returned. A model without a fingerprint
/// is not cached: asking for a cache then is a ValueError saying what to pass.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"

namespace fewstep {

struct TeacherSolveSpec {
  std::vector<int64_t> sample_shape;  ///< one sample, without the batch
  int64_t n = 0;                      ///< samples
  uint64_t seed = 0;                  ///< x_T of sample i is randn_per_sample with seed + i
  std::string solver = "unipc";       ///< a deterministic registered stepper
  Options solver_options;
  std::vector<double> grid;           ///< the solve's times, decreasing (validated against the schedule)
  /// Keep x at every keep_every-th grid point (the grid's steps must be a multiple of it); 0 = keep
  /// only x_T and the end.
  int64_t keep_every = 0;
  /// Also keep the teacher's ε̂ at every kept point but the last, from the evaluation the solve makes
  /// there (free; needs a stepper with one evaluation per step, e.g. deis).
  bool keep_eps = false;
  /// > 0: sample i is solved with class label i % num_classes (teacher_solve's `conditioned`).
  int64_t num_classes = 0;
  at::ScalarType dtype = at::kFloat;  ///< of x_T, the solve and the kept tensors (float32 or float64)
  /// Where the solve runs (the teacher's device); the kept tensors are stored on the CPU. Part of the
  /// key when it is not the CPU (kernels on another device may round differently).
  at::Device device = at::kCPU;
  int64_t batch = 256;                ///< samples per solve; does not change the result
  bool progress = true;               ///< a progress bar on stderr (terminals only)
  std::string label = "teacher solves";  ///< the progress bar's title
  /// ValueError naming the field.
  void validate() const;
};

struct TeacherSolve {
  at::Tensor x;       ///< [n, K + 1, ...]: x at the kept points; x[:, 0] = x_T, x[:, K] = the solve's end
  at::Tensor eps;     ///< [n, K, ...]: the teacher's ε̂ at kept points 0..K−1 (keep_eps), else undefined
  at::Tensor labels;  ///< [n] int64 (num_classes > 0), else undefined
  std::vector<double> times;  ///< the K + 1 kept times (decreasing)
  int64_t nfe = 0;            ///< model evaluations of one sample's solve
  std::string key;            ///< the cache key (JSON text)
  std::string cache_file;     ///< the cache file read or written ("" without a cache)
  bool from_cache = false;
  std::string note;           ///< why an existing cache file was not used ("" otherwise)
  at::Tensor x_T() const;     ///< x[:, 0]
  at::Tensor x_end() const;   ///< x[:, K]
};

/// The teacher for a batch of labels (conditional teachers).
using ConditionedTeacher = std::function<Denoiser(const at::Tensor& labels)>;

/// The subdirectory of a cache root that holds teacher solves ("teacher-solves").
std::string teacher_cache_dir(const std::string& cache_root);

/// Solves (or loads from `<cache_root>/teacher-solves/`, when `cache_root` is not empty) the
/// teacher solves of `spec`. `teacher` gives the schedule and the fingerprint the cache is keyed
/// by; with num_classes > 0, `conditioned(labels)` gives the model each batch is solved with (its
/// content must be the teacher's: the key holds the teacher's fingerprint and the label rule).
/// ValueError naming the field for a bad spec, a stochastic solver, or a cache asked for a teacher
/// without a fingerprint. A cache file that cannot be written only costs the next run time.
TeacherSolve teacher_solve(const Denoiser& teacher, const TeacherSolveSpec& spec, const std::string& cache_root = "",
                           const ConditionedTeacher& conditioned = {});

/// A teacher-solve cache file read on its own (e.g. `fewstep eval --reference FILE`): checksum and
/// format verified, key not compared. ValueError naming the file if it is not one.
TeacherSolve load_teacher_solve(const std::string& file);

/// (x_T, teacher x_0) pairs for knowledge distillation: a teacher_solve that keeps the ends.
struct RolloutPairs {
  at::Tensor x_T;     ///< [n, ...]
  at::Tensor x_0;     ///< [n, ...] the teacher's solution from x_T
  at::Tensor labels;  ///< [n] int64, or undefined for an unconditional teacher
  std::string settings;  ///< the cache key: what the pairs are (checked when a trainer resumes)
  bool from_cache = false;
};
RolloutPairs rollout_pairs(const TeacherSolve& solve);

}  // namespace fewstep
