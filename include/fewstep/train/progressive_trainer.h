/// @file train/progressive_trainer.h
/// @brief Progressive distillation (Salimans & Ho 2022, Algorithm 2) with exact resume.
///
/// Rounds. Round r (0-based) trains a student with N_r = initial_steps / 2^r steps against a
/// teacher that runs 2 N_r DDIM steps (train/progressive_target.h); the last round has
/// N = final_steps. The student starts as the teacher in function space (models/student_init.h:
/// a copy of the given network behind the exact conversion of its prediction to the student's), and
/// round 0's teacher is that same function read as the student's type, so at iteration 0 the N-step
/// student is the teacher's N-step DDIM. (A student given explicitly is used as given, with the
/// given teacher read as teacher_prediction in round 0: e.g. trainable_copy(teacher), the better start
/// for an ε teacher; models/student_init.h, StudentStart.) After `iterations_per_round` steps of a round that is not the last,
/// the student's EMA weights are copied into the teacher (which from then on is read with the
/// student's prediction type) and into the student, N halves, the AdamW state is dropped (a fresh optimiser) and the EMA
/// restarts from the student. The given teacher module is never modified (the trainer keeps its own copy).
///
/// One step: x_0 from the BatchSource; i ~ U{1..N} and ε ~ N(0, I) from the run's "noise" generator
/// (CPU draws); t = τ(i) on the student grid, z_t = α_t x_0 + σ_t ε; x̃ from two teacher DDIM steps;
/// the student's native output at (z_t, t) converted to x̂_0; loss
///   mean_b w(t_b) · mean_j (x̂_0,student − x̃)²_{b,j},
///   w = max(SNR, 1) ("truncated_snr") or SNR + 1 ("snr_plus_one"), SNR = α²/σ²;
/// backward, AdamW (train/optimizer.h) and the EMA update.
///
/// Learning rate within a round: the optimiser's LrSchedule is used with its step counter reset
/// at each round and `total_steps` set to iterations_per_round: optional warmup, then the decay
/// from lr to min_lr over the round (linear by default, as in the paper; LrDecay::Cosine allowed).
///
/// Local semigroup matching: the teacher's flow map Φ_{t→s} obeys the semigroup
/// law Φ_{t→s} = Φ_{u→s} ∘ Φ_{t→u}; a round fits the student's one-step map Ψ_{t→t−1/N} to the
/// composition of two teacher half steps on the same grid, so after the round Ψ is a one-step
/// approximation of the teacher's two-step map, locally in t, and the next round composes Ψ again.
/// The error of the final N-step student is the sum of each round's local matching errors.
///
/// Conditioning: with conditioning.num_classes > 0 the batch's labels go to both networks as y;
/// with guidance_range = [lo, hi], a guidance weight w ~ U[lo, hi] per example (the run's
/// "guidance" generator) goes to both as w — the second stage of guidance distillation (Meng et
/// al. 2023), whose teacher is a w-conditioned network (train/guidance_trainer.h).
///
/// Student parameterisation: "x0" or "v" (the paper's choices). "eps" is refused when the last
/// round has final_steps <= 2: at 1-2 steps the student works at t near t_max, where α ≈ 0 and
/// x̂_0 = (z − σ ε̂)/α amplifies any error in ε̂ without bound.
///
/// Checkpoints hold step, round, N, student, teacher, EMA, AdamW state, RNG states and the data
/// position; loading into an equally built trainer and running on is bit-identical to a run
/// that never stopped (fixed thread count; TorchScript executor unoptimised, as in
/// train/denoiser_trainer.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/conditioning.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/progressive_target.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

enum class ProgressiveWeighting { TruncatedSNR, SNRPlusOne };
/// "truncated_snr", "snr_plus_one" (ValueError otherwise).
ProgressiveWeighting parse_progressive_weighting(const std::string& name);
std::string to_string(ProgressiveWeighting weighting);

/// AdamW options whose learning rate decays linearly (Salimans & Ho 2022).
inline OptimizerOptions linear_decay_optimizer() {
  OptimizerOptions o;
  o.schedule.decay = LrDecay::Linear;
  return o;
}

struct ProgressiveTrainerOptions {
  int64_t initial_steps = 1024;  ///< student steps N of round 0 (the teacher runs 2N)
  int64_t final_steps = 1;       ///< student steps of the last round; initial_steps / final_steps a power of 2
  int64_t iterations_per_round = 1000;
  /// Teacher DDIM calls per student step in round 0 (even; 2 = the paper). Round 0's teacher is the
  /// diffusion model, whose target improves with more calls: K > 2 stands in for the log2(K/2) rounds
  /// a chain starting at initial_steps skips (K·initial_steps teacher steps). Later rounds' teacher is
  /// the previous student, trained for its own 2N-step grid, so they always use 2.
  int64_t first_round_substeps = 2;
  Prediction teacher_prediction = Prediction::Eps;  ///< what the given teacher network predicts
  Prediction student_prediction = Prediction::V;    ///< x0 or v (eps refused at <= 2 steps)
  TimeInput time_input = TimeInput::T;              ///< teacher's and student's time input
  double time_scale = 1.0;
  ProgressiveWeighting weighting = ProgressiveWeighting::TruncatedSNR;
  /// Grid range; defaults to the schedule's [t_min, t_max].
  std::optional<double> t_min, t_max;
  ConditioningOptions conditioning;                        ///< labels for conditional networks
  std::optional<std::pair<double, double>> guidance_range;  ///< w ~ U[lo, hi] for w-conditioned networks
  OptimizerOptions optimizer = linear_decay_optimizer();  ///< schedule.total_steps := iterations_per_round
  double ema_decay = 0.999;
  uint64_t seed = 0;
  /// ValueError naming the field.
  void validate() const;
};

/// The options as a flat JSON object (train/trainer.h): initial_steps, final_steps, iterations_per_round,
/// first_round_substeps,
/// teacher_prediction, student_prediction, time_input, time_scale, weighting, t_min, t_max (null: the
/// schedule's), num_classes, label_dropout, guidance_range ([lo, hi] or null), ema_decay, seed and the
/// optimiser's keys (train/denoiser_trainer.h; total_steps is replaced by iterations_per_round).
std::string options_to_json(const ProgressiveTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, ProgressiveTrainerOptions& options);

class ProgressiveDistillationTrainer final : public Trainer {
 public:
  /// `student` (optional) gives the student's architecture and initial weights (e.g. the teacher's
  /// weights plus a zero-initialised guidance input); by default the student is a copy of the teacher.
  /// ValueError naming the argument for null inputs, a teacher without forward or parameters,
  /// or bad options.
  ProgressiveDistillationTrainer(ScriptNet teacher, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                                 ProgressiveTrainerOptions options = {}, ScriptNet student = nullptr);
  ~ProgressiveDistillationTrainer() override;

  std::string kind() const override { return "progressive"; }
  /// One optimisation step (then the round change, if this step ended a round that is not the last);
  /// extra {"N": the student steps this step trained}. ValueError once every round is done.
  TrainStepStats step() override;
  Checkpoint state() const override;
  /// ValueError for another network or an inconsistent round.
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return ema_student(); }
  /// options_to_json with the grid range resolved, the schedule and the data source.
  std::string options_json() const override;
  bool supports_data_parallel() const override { return true; }

  int64_t round() const;          ///< 0-based
  int64_t current_steps() const;  ///< the current student's N
  int64_t num_rounds() const;
  bool finished() const;  ///< all rounds' iterations done
  const ScriptNet& student() const;
  const ScriptNet& teacher() const;
  const ScriptNet& ema_student() const;
  /// The current teacher as a Denoiser (its prediction type changes after round 0), for labels y
  /// and guidance weights w (undefined for networks without them).
  Denoiser teacher_denoiser(const at::Tensor& y = {}, const at::Tensor& w = {}) const;
  const Optimizer& optimizer() const;
  const ProgressiveTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
