/// @file train/guidance_trainer.h
/// @brief Guidance distillation, stage one (Meng et al. 2023, "On distillation of guided diffusion
/// models", Meng et al. 2023, arXiv 2210.03142): one network that takes the guidance weight as input.
///
/// Classifier-free guidance evaluates a class-conditional teacher twice per step,
///   out_s(z, t, y) = out(z, t, ∅) + s · (out(z, t, y) − out(z, t, ∅))      (models/guidance.h)
/// with ∅ the null class. The student F_θ(z, t, y, s) (same architecture plus a guidance input,
/// nets/unet.h guidance_input; zero-initialised so it starts as the conditional teacher) is fitted
/// to it over a range of s, in the teacher's native parameterisation:
///   s ~ U[guidance_min, guidance_max],  t ~ U[t_min, t_max],  z = α_t x + σ_t ε,
///   loss = mean_b mean_j (F_θ(z, t, y, s) − out_s(z, t, y))²_{b,j}
/// (the teacher's two passes are one batched call on [z; z] with [y; ∅], without gradients).
/// Afterwards one call per step gives the guided model at any s in the range; stage two is
/// progressive distillation of this student with the guidance weight kept as input
/// (ProgressiveTrainerOptions::guidance_range), giving few steps of one call each.
///
/// Draws: t, ε from the run's "noise" generator, s from "guidance". Checkpoints and resume as every
/// trainer (train/trainer.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

struct GuidanceTrainerOptions {
  int64_t num_classes = 10;
  double guidance_min = 1.0;  ///< s = 1: the conditional model
  double guidance_max = 4.0;
  Prediction prediction = Prediction::Eps;  ///< teacher's and student's native output
  TimeInput time_input = TimeInput::T;
  double time_scale = 1.0;
  std::optional<double> t_min, t_max;  ///< defaults: the schedule's range
  OptimizerOptions optimizer;
  double ema_decay = 0.999;
  uint64_t seed = 0;
  /// ValueError naming the field.
  void validate() const;
};

/// The options as a flat JSON object (train/trainer.h): num_classes, guidance_min, guidance_max,
/// prediction, time_input, time_scale, t_min, t_max (null: the schedule's), ema_decay, seed and the
/// optimiser's keys (train/denoiser_trainer.h).
std::string options_to_json(const GuidanceTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, GuidanceTrainerOptions& options);

class GuidanceDistillationTrainer final : public Trainer {
 public:
  /// `teacher`: forward(x, t, y) class-conditional (y = num_classes: no class); `student`:
  /// forward(x, t, y, w), trained in place. ValueError naming the argument for null inputs or bad
  /// options; the data source must give labels.
  GuidanceDistillationTrainer(ScriptNet teacher, ScriptNet student, SchedulePtr schedule,
                              std::shared_ptr<BatchSource> data, GuidanceTrainerOptions options = {});
  ~GuidanceDistillationTrainer() override;

  std::string kind() const override { return "guidance"; }
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return ema_student(); }
  /// options_to_json with the time range resolved, the schedule and the data source.
  std::string options_json() const override;
  bool supports_data_parallel() const override { return true; }

  const ScriptNet& student() const;
  const ScriptNet& ema_student() const;
  const GuidanceTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
