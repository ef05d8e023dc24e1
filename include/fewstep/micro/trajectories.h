/// @file micro/trajectories.h
/// @brief Dense, high-accuracy teacher trajectories: the training data of micro-distillation.
///
/// Sample i starts from x_T drawn by randn_per_sample with seed + i (core/noise.h: the x_T of
/// `fs.randn` and `fewstep sample --seed`, independent of the batch) and is solved from t_start to
/// t_end by the library's `deis` stepper (order 3, in λ) on a
/// uniform log-SNR grid of segments·substeps steps. Every substeps-th point is kept: x at the
/// segments + 1 knots λ_0 < ... < λ_G (uniform in λ), and the teacher's ε̂ at the first G knots (the
/// evaluation the solve makes there, so it costs nothing). From them come
///  - g_ψ's targets: for knots j < k, the exact residual x_k − (α_k/α_j) x_j of the step j → k, with
///    the teacher's ε̂_j as the step's input (no extra evaluation);
///  - x_0^true = x at the last knot, the target of the unrolled (joint) training.
/// A fine high-order solve, not fine-step Euler (see docs/design.md §1): with the defaults
/// (64 × 8 steps, Δλ ≈ 0.02 for VP-linear) DEIS-3's global error is far below the 1000-step DDIM
/// error that the distilled sampler is measured against.
///
/// The solve is one teacher_solve (sample/teacher_cache.h): cached under a cache root, keyed by the
/// teacher's content fingerprint and every setting, verified on load.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"

namespace fewstep {

struct TrajectorySpec {
  std::vector<int64_t> sample_shape;  ///< one sample, without the batch
  int64_t n = 512;                    ///< trajectories
  uint64_t seed = 0;
  int64_t segments = 64;   ///< G: knots are G + 1 points uniform in λ
  int64_t substeps = 8;    ///< DEIS-3 steps per segment
  double t_start = 0.0;    ///< 0 = the schedule's t_max
  double t_end = 0.0;      ///< 0 = the schedule's t_min
  int64_t batch = 256;     ///< trajectories per solve
  at::ScalarType dtype = at::kFloat;  ///< the solve's and the stored tensors' dtype
  bool progress = true;    ///< progress on stderr
  /// ValueError naming the field.
  void validate() const;
};

struct DenseTrajectories {
  at::Tensor x;     ///< [n, G + 1, ...]: x at the knots (x[:, 0] = x_T, x[:, G] = x_0^true)
  at::Tensor eps;   ///< [n, G, ...]: the teacher's ε̂ at knots 0..G−1
  std::vector<double> times;  ///< the G + 1 knots (decreasing)
  std::vector<double> lambdas;
  std::string settings;     ///< the cache key (JSON text)
  std::string teacher_id;   ///< the description given to dense_trajectories
  bool from_cache = false;
  std::string cache_file;   ///< "" without a cache
  int64_t segments() const { return static_cast<int64_t>(times.size()) - 1; }
  int64_t size() const { return x.size(0); }
};

/// Solves (or loads from the teacher-solve cache under `cache_root`, core/cache_dir.h; "" = no
/// cache) the trajectories of `teacher`. `teacher_id` describes the teacher for records and
/// messages (a file name, "exact mixture(seed=...)", ...); the cache is keyed by the teacher's
/// content fingerprint, so caching needs a teacher that has one (ValueError otherwise).
DenseTrajectories dense_trajectories(const Denoiser& teacher, const TrajectorySpec& spec, const std::string& teacher_id,
                                     const std::string& cache_root = "");

}  // namespace fewstep
