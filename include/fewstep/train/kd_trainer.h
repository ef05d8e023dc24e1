/// @file train/kd_trainer.h
/// @brief Knowledge distillation (Luhman & Luhman 2021, arXiv 2101.02388): a few-step student regressed
/// onto the teacher's long ODE solves from the same x_T.
///
/// The data are RolloutPairs (sample/teacher_cache.h): x_T and the teacher's x_0 = Φ_{T→0}(x_T).
/// The student is a network of the teacher's architecture (initialised from the teacher by the
/// caller, or any net with the same forward). It samples with `ddim` on a fixed grid
/// t_0 = T > t_1 > ... > t_N (N = 1: one step), through the library's own sampler with gradients
/// on (SampleOptions::inference_mode = false), so training and sampling run the same computation:
///   x̂_0^θ(x_T) = DDIM_N(x_T; student),   loss = mean_b mean_j (x̂_0^θ(x_T) − x_0)²_{b,j}
/// with backpropagation through all N steps. This is the global version of the semigroup matching
/// of progressive distillation: the student's whole N-step map is matched to the teacher's flow map
/// at once, rather than one grid step against two teacher half steps.
///
/// One step: a batch of pair indices from a shuffled pass over the pairs (the run's data order),
/// the student rollout, the loss, backward, AdamW, EMA. Conditional pairs feed their labels to the
/// student as y. Checkpoints as every trainer (train/trainer.h), exact resume.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

struct KdTrainerOptions {
  std::vector<double> timesteps;  ///< the student's grid, decreasing (N + 1 times)
  Prediction student_prediction = Prediction::X0;
  TimeInput time_input = TimeInput::T;
  double time_scale = 1.0;
  int64_t batch = 64;
  OptimizerOptions optimizer;
  double ema_decay = 0.999;
  uint64_t seed = 0;
  /// ValueError naming the field.
  void validate() const;
};

/// The options as a flat JSON object (train/trainer.h): timesteps (a list), student_prediction,
/// time_input, time_scale, batch, ema_decay, seed and the optimiser's keys (train/denoiser_trainer.h).
std::string options_to_json(const KdTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, KdTrainerOptions& options);

class KnowledgeDistillationTrainer final : public Trainer {
 public:
  /// ValueError naming the argument for a null student/schedule, pairs with mismatched shapes or
  /// fewer than `batch` examples, or bad options.
  KnowledgeDistillationTrainer(ScriptNet student, SchedulePtr schedule, RolloutPairs pairs,
                               KdTrainerOptions options);
  ~KnowledgeDistillationTrainer() override;

  std::string kind() const override { return "kd"; }
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return ema_student(); }
  /// options_to_json with the schedule and the pairs' settings.
  std::string options_json() const override;
  bool supports_data_parallel() const override { return true; }

  const ScriptNet& student() const;
  const ScriptNet& ema_student() const;
  /// The student as a Denoiser (for labels y, undefined if unconditional); sample it with `ddim`
  /// on options().timesteps.
  Denoiser student_denoiser(const ScriptNet& net, const at::Tensor& y = {}) const;
  const KdTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
