/// @file train/micro_trainer.h
/// @brief Partial micro-distillation with a learned step size (docs/micro.md; the exact linear factor of docs/design.md §1):
///        trains g_ψ (the nonlinear term of the exponential-integrator step) and h_φ (the step size)
///        from dense teacher trajectories (micro/trajectories.h).
///
/// Modes (MicroMode, micro/micro_sampler.h):
///  - residual: g_ψ alone, by local regression. A batch draws trajectories b, a knot j and a length
///    m ∈ [segment_min, segment_max] (in knots), and fits g_ψ(x_j, ε̂_j, λ_j, λ_{j+m} − λ_j) to the
///    exact residual r = x_{j+m} − (α_{j+m}/α_j) x_j, with loss mean(((g − r)/c)²), c the DDIM
///    coefficient (errors in ε units, comparable across step sizes). Samples on the fixed uniform
///    log-SNR grid.
///  - step_size: h_φ alone, with the DEIS-2 (λ) step, on unrolled runs (below).
///  - joint: g_ψ and h_φ together on unrolled runs; normally warm-started from a residual sampler.
/// Unrolled runs (micro/unroll.h): a batch of x_T with cached x_0^true, a budget N drawn uniformly
/// from [budget_min, budget_max] (one N per batch), the differentiable N-step run, and
///     loss = ‖x_0^pred − x_0^true‖² / sg(‖x_0^pred − x_0^true‖²)
/// (mean over batch and coordinates; sg = stop-gradient), whose gradient is that of log‖·‖²: budgets
/// from 5 to 20 steps, whose errors differ by orders of magnitude, weigh alike. The step-count term
/// of a λN² penalty is the budget itself (micro/step_size.h): N is fixed by the user, and h_φ
/// places the N steps; the reported loss value is the plain mean squared error.
/// Checkpoints (atomic, exact resume): both heads, their EMAs, AdamW, RNG streams, data position.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "fewstep/micro/micro_sampler.h"
#include "fewstep/micro/trajectories.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/nets/micro_heads.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

struct MicroTrainerOptions {
  MicroMode mode = MicroMode::Joint;
  MicroHeadConfig heads;  ///< sample_shape is taken from the trajectories when empty
  int64_t batch = 64;
  int64_t budget_min = 5;   ///< unrolled modes: N ~ U{budget_min..budget_max}
  int64_t budget_max = 20;
  double spread = 0.75;     ///< h_φ's bound a
  int64_t segment_min = 1;  ///< residual mode: step lengths in knots
  int64_t segment_max = 0;  ///< 0 = G/4
  bool teacher_grad = true; ///< unrolled modes: backpropagate through the teacher's x input
  /// Unrolled modes with h_φ: differentiate through the teacher's time input (micro/unroll.h; one
  /// more teacher call per step, without autograd).
  bool time_gradient = true;
  /// Unrolled modes: what the loss measures of the runs' end-point errors e_b = x̂_0 − x_0 (each
  /// loss's gradient is that of the log of the statistic, which the log line reports):
  ///   "mse"     mean over the batch and coordinates of e²;
  ///   "rms"     mean over the batch of each sample's RMS error;
  ///   "log-rms" geometric mean of the samples' RMS errors (every sample's relative error counts the
  ///             same: the few runs that diverge no longer dominate, and the median is what
  ///             benchmarks score).
  std::string loss = "mse";
  OptimizerOptions optimizer;
  double ema_decay = 0.999;
  uint64_t seed = 0;
  /// ValueError naming the field.
  void validate() const;
};

/// The options as a flat JSON object (train/trainer.h): mode, the heads' sample_shape, width, blocks,
/// frequencies, embed, groups, step_features, step_width, history, residual_kind, then batch, budget_min, budget_max,
/// spread, segment_min, segment_max, teacher_grad, time_gradient, loss, ema_decay, seed and the optimiser's
/// keys (train/denoiser_trainer.h).
std::string options_to_json(const MicroTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, MicroTrainerOptions& options);

class MicroTrainer final : public Trainer {
 public:
  /// `teacher_id` names the teacher in exported samplers. `init` (may be null) provides starting
  /// weights for the heads it has (e.g. a residual sampler to warm-start joint training); it must
  /// have the same head config. ValueError for bad options or data.
  MicroTrainer(Denoiser teacher, std::string teacher_id, DenseTrajectories data, MicroTrainerOptions options,
               std::shared_ptr<const MicroSampler> init = nullptr);
  ~MicroTrainer() override;

  std::string kind() const override { return "micro"; }
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  /// The EMA of the trained head (the residual head, or the step-size head in step_size mode).
  const ScriptNet& export_net() const override;
  /// options_to_json with the teacher's name and the trajectories' settings.
  std::string options_json() const override;
  /// residual_kind "network", history_depth 1 and loss "mse": the settings of checkpoints older than them.
  std::string options_added_later() const override;
  /// Every process draws the whole batch (trajectories, knots, budget) and trains on its rows; in the
  /// unrolled modes h_φ's step sizes come from the mean logit over every process's rows and the loss is
  /// divided by the whole batch's error, so the averaged gradient is the whole batch's.
  bool supports_data_parallel() const override { return true; }

  /// The sampler of the EMA heads (copies), with the teacher's identity probe.
  MicroSampler sampler() const;
  const ScriptNet& residual_head() const;
  const ScriptNet& step_size_head() const;
  const MicroTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
