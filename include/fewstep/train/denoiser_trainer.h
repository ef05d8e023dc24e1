/// @file train/denoiser_trainer.h
/// @brief Denoiser training by denoising score matching, with exact resume from checkpoints.
///
/// One step: a batch x_0 from the BatchSource; t ~ U[t_min, t_max] and ε ~ N(0, I) from the
/// run's "noise" generator (float64 t, CPU draws, so runs do not depend on the device);
/// the loss of train/dsm_loss.h; backward; train/optimizer.h (AdamW, warmup + cosine lr,
/// gradient clipping); train/ema.h. The network is a TorchScript module (nets/network.h)
/// trained in place through its parameters(); the EMA copy is the network to export.
///
/// Checkpoints (train/checkpoint.h, atomic) hold the step counter, the weights, the EMA,
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
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/train/batch_source.h"
#include "fewstep/train/dsm_loss.h"
#include "fewstep/train/optimizer.h"

namespace fewstep {

struct DenoiserTrainerOptions {
  DsmOptions loss;
  /// Training time range; defaults to the schedule's [t_min, t_max].
  std::optional<double> t_min, t_max;
  OptimizerOptions optimizer;
  double ema_decay = 0.999;
  uint64_t seed = 0;
  /// Written every `checkpoint_every` steps (0: only at the end of train()) when non-empty.
  std::string checkpoint_path;
  int64_t checkpoint_every = 0;
  bool progress = true;  // progress bar on stderr (only when it is a terminal)
};

struct TrainStepStats {
  int64_t step;  // steps completed after this one
  double loss;
  double lr;
  double grad_norm;
};

struct TrainSummary {
  int64_t first_step = 0;  // step counter before train()
  int64_t last_step = 0;   // after
  std::vector<double> losses;
  double seconds = 0.0;
};

class DenoiserTrainer {
 public:
  /// ValueError naming the argument for a null network/schedule/data, a network without trainable
  /// parameters, or bad options.
  DenoiserTrainer(ScriptNet net, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                  DenoiserTrainerOptions options = {});
  ~DenoiserTrainer();
  DenoiserTrainer(const DenoiserTrainer&) = delete;
  DenoiserTrainer& operator=(const DenoiserTrainer&) = delete;

  /// One optimisation step.
  TrainStepStats step();
  /// `steps` more steps with a progress bar and periodic checkpoints (see options).
  TrainSummary train(int64_t steps);

  void save_checkpoint(const std::string& path) const;
  /// Restores everything saved; ValueError if the checkpoint is missing, from another kind of
  /// trainer, another prediction/weighting, or another network.
  void load_checkpoint(const std::string& path);
  /// load_checkpoint if `path` exists; returns whether it did.
  bool resume(const std::string& path);

  int64_t step_count() const;
  const ScriptNet& net() const;
  const ScriptNet& ema_net() const;
  const DenoiserTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
