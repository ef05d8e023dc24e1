/// @file grids/optimize.h
/// @brief Optimised time grids: the NFE + 1 times a solver samples a model on best, fitted on teacher
///        trajectories from per-sample seeds and kept with the settings they were fitted for
///        (docs/grids.md).
///
/// Both methods fit on the same data: sample i of the training set starts from x_T =
/// randn_per_sample(seed + i) (core/noise.h) and is solved by the cached teacher solve
/// (sample/teacher_cache.h) on a fine log-SNR grid of `candidates · substeps` steps of
/// `reference_solver`, keeping x at the `candidates + 1` candidate times; its end is the reference
/// x_0. Held-out seeds (heldout_seed + i) are solved the same way and score the result.
/// The error of a grid is, per sample, the RMS over coordinates of (x_0^grid − x_0^reference);
/// train/held-out errors are medians over samples.
///
///  - "dp" (GITS, Chen et al. 2024, arXiv 2405.11326, §3.2): the cost of jumping from candidate t_i
///    to t_j is the error of one step of the solver from the teacher's state at t_i against the
///    teacher's state at t_j, weighted by the measured sensitivity of the end state to the state at
///    t_j and squared (`dp_propagate`, docs/grids.md); dynamic programming finds the path t_max → t_min of exactly
///    `steps_for_nfe(solver, nfe)` jumps of least total cost. GITS costs multistep solvers by that
///    one-step cost from a fresh state (their first, lower-order step); here, by default
///    (`dp_history`), a multistep solver's jump i → j following h → i is costed with the
///    evaluation at the teacher's (x_h, t_h) as its history (one previous evaluation: order 2 for
///    third-order multistep solvers), so the cost is the step the run takes.
///  - "gradient" (LD3, Tong et al. 2024, arXiv 2405.15506, §3): the times are parametrised by
///    softmax increments in λ = log(α/σ) between the schedule's ends (the uniform log-SNR grid at
///    θ = 0), the loss is the mean squared error of the solver's x_0 on that grid against the
///    reference (the registered stepper run by the one sampling loop), and Adam (train/optimizer.h)
///    runs `iterations` steps. The steppers take their times as numbers, so ∂loss/∂λ_i comes from
///    forward differences of the unrolled solve (one more solve per interior time); autograd
///    carries it through the softmax parametrisation. It works for every deterministic fixed-grid
///    stepper. Descent starts at the fixed spacing (logsnr, time, quadratic, karras) of least
///    training loss, as LD3 starts from a standard schedule.
///
/// Both methods minimise a stand-in for the median error (DP its local costs, gradient the mean
/// squared error), so the result is checked on the training samples against every fixed spacing's
/// grid: when one has the lower median error there, it is returned instead (`selected` says which).
/// A tuned grid is therefore never worse than the fixed grids on the seeds it was fitted on.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/model_file.h"

namespace fewstep {

/// What a grid is fitted on and how (every field is recorded with the grid).
struct GridFitSettings {
  std::vector<int64_t> sample_shape;  ///< one sample, without the batch (required)
  int64_t n = 64;                     ///< training samples: seeds seed, seed + 1, ...
  uint64_t seed = 0;
  int64_t heldout_n = 64;             ///< held-out samples: seeds heldout_seed, heldout_seed + 1, ...
  uint64_t heldout_seed = 1000000;
  int64_t candidates = 100;           ///< candidate times of the DP (log-SNR spaced, ends included)
  int64_t substeps = 4;               ///< reference steps per candidate interval
  /// dp with a multistep solver: cost a jump i → j with the evaluation at the teacher's state of the
  /// path's previous point as the solver's history (the DP's state is then the last jump: O(M³)
  /// steps); false: GITS's plain one-step cost from a fresh state (O(M²)).
  bool dp_history = true;
  /// dp: weigh the error of a jump landing at t_j by how much an error at t_j changes the end state
  /// (measured by the reference solver on the candidate times from 16 training states); false: GITS's
  /// unweighted local error.
  bool dp_propagate = true;
  std::string reference_solver = "unipc";
  at::ScalarType dtype = at::kDouble;  ///< of x_T, the teacher solves and the fitted solves
  // gradient method
  int64_t iterations = 300;
  double lr = 0.05;                   ///< Adam's learning rate on the softmax logits
  double fd_step = 1e-4;              ///< forward-difference step in λ
  // both
  int64_t batch = 256;                ///< samples per solve (does not change the result)
  std::string cache_root;             ///< teacher-solve cache (core/cache_dir.h); "" = none
  bool progress = true;
  /// ValueError naming the field.
  void validate() const;
};

struct OptimizedGrid {
  std::vector<double> times;  ///< t_0 = t_max > ... > t_N = t_min
  std::string solver;
  Options solver_options;
  int64_t nfe = 0;
  std::string method;         ///< "dp" or "gradient"
  bool dp_history = false;    ///< dp: the cost carried the multistep history (settings.dp_history and a multistep solver)
  GridFitSettings settings;
  int64_t reference_nfe = 0;  ///< evaluations of one reference solve
  double train_error = 0.0;   ///< median over training samples (of `times`)
  /// "fitted", or "fixed <spacing>" when a fixed spacing's grid had the lower training error than the fit
  /// (then `times` is that grid; the fit's own error is fitted_train_error).
  std::string selected = "fitted";
  double fitted_train_error = 0.0;
  double heldout_error = 0.0; ///< median over held-out samples
  /// The best fixed spacing for the same solver and NFE on the held-out samples, for comparison.
  std::string best_fixed_spacing;
  double best_fixed_error = 0.0;
  std::vector<double> loss;   ///< gradient: training loss (MSE) per iteration; dp: empty
  double fit_seconds = 0.0;   ///< fitting time (teacher solves included)
  /// The method and settings as a JSON object (the sidecar's "fit" record).
  std::string fit_json() const;
  /// The sidecar entry (models/model_file.h).
  ModelTunedGrid tuned_grid() const;
};

/// "dp" and "gradient".
std::vector<std::string> grid_methods();

/// Fits a grid (see the file comment). ValueError naming the argument for nfe < 1, an unknown
/// method, a stochastic or adaptive solver, an NFE the solver cannot spend exactly, a bad setting.
OptimizedGrid optimize_timesteps(const Denoiser& model, const std::string& solver, const Options& solver_options,
                                 int64_t nfe, const std::string& method, const GridFitSettings& settings);

/// Per-sample RMS error (float64 [n]) of `solver` on `grid` from x_T against x_ref, in batches.
at::Tensor grid_errors(const Denoiser& model, const std::string& solver, const Options& solver_options,
                       const std::vector<double>& grid, const at::Tensor& x_T, const at::Tensor& x_ref,
                       int64_t batch = 256);

/// Writes `grid` into the sidecar of `model_path` (save_tuned_grid, models/model_file.h).
void save_optimized_grid(const std::string& model_path, const OptimizedGrid& grid);

}  // namespace fewstep
