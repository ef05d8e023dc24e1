/// @file train/denoiser_trainer.h
/// @brief Denoiser training by denoising score matching, with exact resume from checkpoints.
///
/// One step: a batch x_0 from the BatchSource; t ~ U[t_min, t_max] and ε ~ N(0, I) from the
/// run's "noise" generator (float64 t, CPU draws, so runs do not depend on the device);
/// the loss of train/dsm_loss.h; backward; train/optimizer.h (AdamW, warmup + cosine lr,
/// gradient clipping); train/ema.h. The network is a TorchScript module (nets/network.h)
/// trained in place through its parameters(); the EMA copy is the network to export.
///
/// Class-conditional training (options.conditioning.num_classes > 0): the batch's labels go to
/// forward(x, t, y), each replaced by the null class with probability label_dropout (drawn from the
/// run's "labels" generator; train/conditioning.h), so the network can be guided afterwards.
///
/// The loop, checkpoint files and resume are the Trainer base's (train/trainer.h). Checkpoints hold the step counter, the weights, the EMA,
/// the AdamW state, every generator state and the data source's position. Loading one into a
/// trainer built with the same network architecture, data source and options and running on
/// gives bit-identical weights to a run that never stopped (with a fixed thread count; the
/// TorchScript graph executor runs unoptimised during training so every step executes the same
/// kernels from the first one on).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/conditioning.h"
#include "fewstep/train/dsm_loss.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

struct DenoiserTrainerOptions {
  DsmOptions loss;
  /// Training time range; defaults to the schedule's [t_min, t_max].
  std::optional<double> t_min, t_max;
  OptimizerOptions optimizer;
  ConditioningOptions conditioning;
  double ema_decay = 0.999;
  uint64_t seed = 0;
};

/// The options as a flat JSON object (train/trainer.h): prediction, time_input, time_scale, weighting,
/// min_snr_gamma, t_min, t_max (null: the schedule's), num_classes, label_dropout, ema_decay, seed and
/// the optimiser's lr, warmup, total_steps, min_lr, decay, beta1, beta2, eps, weight_decay, grad_clip.
std::string options_to_json(const DenoiserTrainerOptions& options);
/// Sets the keys present in `json` (a flat object as above); ValueError naming an unknown key or a
/// bad value, TypeError for a value of the wrong type.
void options_from_json(const std::string& json, DenoiserTrainerOptions& options);

class DenoiserTrainer final : public Trainer {
 public:
  /// ValueError naming the argument for a null network/schedule/data, a network without trainable
  /// parameters, or bad options.
  DenoiserTrainer(ScriptNet net, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                  DenoiserTrainerOptions options = {});
  ~DenoiserTrainer() override;

  std::string kind() const override { return "denoiser"; }
  TrainStepStats step() override;
  Checkpoint state() const override;
  /// ValueError if the checkpoint holds another network.
  void load_state(const Checkpoint& checkpoint) override;
  /// options_to_json with the time range resolved, the schedule and the data source.
  std::string options_json() const override;
  bool supports_data_parallel() const override { return true; }
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return ema_net(); }

  const ScriptNet& net() const;
  const ScriptNet& ema_net() const;
  const DenoiserTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
