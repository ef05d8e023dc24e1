/// @file train/trainer.h
/// @brief The one shape of every fewstep trainer: step(), a state dict, atomic checkpoints, exact
/// resume, and one training loop with a progress bar and periodic checkpoints.
///
/// A trainer (denoiser, classifier, progressive / knowledge / guidance distillation, ...) implements
/// `step()` (one optimisation step: batch, loss, backward, AdamW, EMA) and its state as a
/// Checkpoint (train/checkpoint.h): step counter, networks, EMA, optimiser, every RNG state and
/// the data position, under a "format" string naming the trainer kind. Everything else is here,
/// written once: `save_checkpoint` (atomic), `load_checkpoint` (refuses another kind of checkpoint
/// with a message naming both), `resume`, and `train(steps, loop)`. Loading a checkpoint into an
/// equally built trainer and running on is bit-identical to a run that never stopped (same thread
/// count; trainers run TorchScript unoptimised, see ScopedUnoptimizedExecutor in nets/network.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/train/checkpoint.h"

namespace fewstep {

class BatchSource;
class Ema;
class Optimizer;
class RngBundle;

struct TrainStepStats {
  int64_t step = 0;  ///< steps completed after this one
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  /// Trainer-specific values for logs and the progress bar (e.g. {"accuracy", 0.91}, {"round", 2}).
  std::vector<std::pair<std::string, double>> extra;
};

struct TrainSummary {
  int64_t first_step = 0;  ///< step counter before train()
  int64_t last_step = 0;   ///< after
  std::vector<double> losses;
  double seconds = 0.0;
};

struct TrainLoopOptions {
  /// Written every `checkpoint_every` steps (0: only at the end) when non-empty.
  std::string checkpoint_path;
  int64_t checkpoint_every = 0;
  bool progress = true;  ///< progress bar on stderr (only when it is a terminal)
  /// Called after every step (logging, exports); may be empty.
  std::function<void(const TrainStepStats&)> on_step;
};

class Trainer {
 public:
  virtual ~Trainer() = default;

  /// Short name of the trainer kind ("denoiser", "progressive", ...); the checkpoint format is
  /// "fewstep.<kind>_trainer.v1".
  virtual std::string kind() const = 0;
  /// One optimisation step.
  virtual TrainStepStats step() = 0;
  /// Everything a resumed run needs (the state dict); "format" is added by save_checkpoint.
  virtual Checkpoint state() const = 0;
  /// Restores state(); ValueError naming the setting if the checkpoint was made with other settings.
  virtual void load_state(const Checkpoint& checkpoint) = 0;
  virtual int64_t step_count() const = 0;
  /// Steps the trainer's schedule is planned for (0: open-ended); the loop's progress bar uses it.
  virtual int64_t planned_steps() const { return 0; }
  /// The network to export (the EMA average for trainers that keep one).
  virtual const ScriptNet& export_net() const = 0;

  std::string checkpoint_format() const;
  void save_checkpoint(const std::string& path) const;
  /// ValueError if `path` is missing or holds another kind of checkpoint.
  void load_checkpoint(const std::string& path);
  /// load_checkpoint if `path` exists; returns whether it did.
  bool resume(const std::string& path);
  /// `steps` more steps (>= 0) with a progress bar (smoothed loss, lr and the extras) and
  /// checkpoints as `loop` asks; the last step is always checkpointed when a path is given.
  TrainSummary train(int64_t steps, const TrainLoopOptions& loop = {});
};

/// The parts most trainers checkpoint, under fixed keys: "step", the trained network under
/// `net_key`, "ema", "optimizer", "rng", "data/..." (the data source may be null: none stored).
struct TrainingParts {
  const char* net_key = "model";
  torch::jit::Module* net = nullptr;
  Ema* ema = nullptr;
  Optimizer* optimizer = nullptr;
  RngBundle* rng = nullptr;
  BatchSource* data = nullptr;
};
void save_training_parts(Checkpoint& checkpoint, int64_t step, const TrainingParts& parts);
/// Restores them and returns the step; ValueError naming `who` for a negative step or another network.
int64_t load_training_parts(const Checkpoint& checkpoint, const TrainingParts& parts, const char* who);

/// The data source's position under "data/..." (every trainer stores it).
void save_data_position(Checkpoint& checkpoint, const BatchSource& data);
void load_data_position(const Checkpoint& checkpoint, BatchSource& data);

/// ValueError "<who>: checkpoint '<source>' was trained with <key> '<theirs>', this trainer uses
/// '<mine>'" when "config/<key>" differs (strings and integers).
void check_setting(const Checkpoint& checkpoint, const std::string& key, const std::string& mine, const char* who);
void check_setting(const Checkpoint& checkpoint, const std::string& key, int64_t mine, const char* who);

}  // namespace fewstep
