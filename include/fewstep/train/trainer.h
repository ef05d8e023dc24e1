/// @file train/trainer.h
/// @brief The one shape of every fewstep trainer: step(), a state dict, its options as JSON,
/// atomic checkpoints, exact resume with the options checked, data parallelism, and the one
/// training loop.
///
/// A trainer (denoiser, classifier, progressive / knowledge / guidance / consistency distillation,
/// micro-distillation, PSLD, or a loss written in Python) implements `step()` (one optimisation
/// step: batch, loss, backward, update(), EMA), its state as a Checkpoint (train/checkpoint.h:
/// step counter, networks, EMA, optimiser, every RNG state, the data position) and its options as
/// a flat JSON object (`options_json()`). Everything else is here, written once:
///  - `save_checkpoint` writes the state atomically with a "format" tag naming the kind and the
///    options under "options";
///  - `load_checkpoint` refuses another kind of checkpoint, then compares the stored options with
///    the trainer's (`check_resume_options`): a setting that differs and is not in
///    `resumable_options()` (by default only "total_steps", the planned length of the run) is
///    refused with a ValueError naming the setting and both values;
///  - `train(steps, loop)` is the training loop of the library, the Python package and the
///    command line: progress bar or log lines, the per-step callback, periodic checkpoints, a stop
///    request (Ctrl-C in the command line) that checkpoints before returning.
/// Loading a checkpoint into an equally built trainer and running on is bit-identical to a run that
/// never stopped (same thread count; trainers run TorchScript unoptimised, see
/// ScopedUnoptimizedExecutor in nets/network.h).
///
/// Data parallelism (`set_data_parallel`): `world` processes build the same trainer (same seed,
/// same data), every process draws the randomness of the whole batch and trains on its rows
/// [rank·B/world, (rank+1)·B/world) (`shard`), and `update` averages the gradients over the
/// processes (the caller's all-reduce) before the optimiser step. The mean of the shard losses'
/// gradients is the gradient of the whole batch's mean loss, so every process ends with the
/// weights of one process trained on whole batches, up to floating-point summation order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/optimizer.h"

namespace fewstep {

class BatchSource;
class Ema;
class RngBundle;

struct TrainStepStats {
  int64_t step = 0;  ///< steps completed after this one
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  /// Trainer-specific values for logs and the progress bar (e.g. {"accuracy", 0.91}, {"N", 4}).
  std::vector<std::pair<std::string, double>> extra;
};

struct TrainSummary {
  int64_t first_step = 0;  ///< step counter before train()
  int64_t last_step = 0;   ///< after
  std::vector<double> losses;
  double seconds = 0.0;
  bool stopped = false;  ///< ended early by TrainLoopOptions::stop
};

struct TrainLoopOptions {
  /// Written every `checkpoint_every` steps (0: only at the end) and when stopped, if non-empty (by
  /// rank 0 only under data parallelism).
  std::string checkpoint_path;
  int64_t checkpoint_every = 0;
  bool progress = true;  ///< progress bar on stderr (only when it is a terminal)
  /// Called after every step, once the step's checkpoint (if one is due) is written: a callback that
  /// stops the run by throwing leaves that checkpoint behind (logging, exports at round ends); may be empty.
  std::function<void(const TrainStepStats&)> on_step;
  /// Called after every step before its checkpoint, for the bookkeeping on_checkpoint reads (e.g. the
  /// CLI's loss window, so a checkpoint's record includes its own step); may be empty; should not throw.
  std::function<void(const TrainStepStats&)> record_step;
  /// Called after every checkpoint write (e.g. an export beside it); may be empty.
  std::function<void()> on_checkpoint;
  /// Asked before every step; true ends the loop early (with a checkpoint). May be empty.
  std::function<bool()> stop;
  std::string label;  ///< the progress bar's label (default: the trainer's kind)
  /// Without a bar (progress off or stderr not a terminal): a line on stdout every `log_every`
  /// steps and after the last, "step k/total  loss (mean of the last 100)  lr  grad  extras  it/s
  /// eta" (0: none).
  int64_t log_every = 0;
};

/// Data parallelism over `world` processes (see the file comment).
struct DataParallel {
  int64_t rank = 0;
  int64_t world = 1;
  /// Replaces every tensor by its mean over the processes, in place (e.g. an all-reduce); called with
  /// the gradients before each update and with the loss. Required when world > 1.
  std::function<void(const std::vector<at::Tensor>&)> average;
};

class Trainer {
 public:
  virtual ~Trainer() = default;

  /// Short name of the trainer kind ("denoiser", "progressive", ...); the checkpoint format is
  /// "fewstep.<kind>_trainer.v1".
  virtual std::string kind() const = 0;
  /// One optimisation step.
  virtual TrainStepStats step() = 0;
  /// Everything a resumed run needs (the state dict); "format" and "options" are added by save_checkpoint.
  virtual Checkpoint state() const = 0;
  /// Restores state() (the options were checked by load_checkpoint); ValueError for another network.
  virtual void load_state(const Checkpoint& checkpoint) = 0;
  virtual int64_t step_count() const = 0;
  /// Steps the trainer's schedule is planned for (0: open-ended); the loop's progress bar uses it.
  virtual int64_t planned_steps() const { return 0; }
  /// The network to export (the EMA average for trainers that keep one); null for trainers whose
  /// networks are not TorchScript modules (a loss written in Python).
  virtual const ScriptNet& export_net() const = 0;
  /// Every option of the trainer (and what it was built on: schedule, data) as a flat JSON object,
  /// e.g. {"lr": 0.0002, "prediction": "eps", "data": "ShuffledBatches(...)", ...}.
  virtual std::string options_json() const = 0;
  /// The options that may differ when a checkpoint is resumed: {"total_steps"} unless overridden.
  virtual std::vector<std::string> resumable_options() const { return {"total_steps"}; }
  /// Options added after checkpoints were first written, as a flat JSON object of the values those
  /// checkpoints ran with (e.g. {"history_depth": 1}): a checkpoint without the key resumes as if it
  /// had that value. "{}" unless overridden.
  virtual std::string options_added_later() const { return "{}"; }
  /// Whether step() honours set_data_parallel (draws for the whole batch, trains on its shard).
  virtual bool supports_data_parallel() const { return false; }

  /// Options of whatever built the trainer (e.g. the command line's flags: {"--batch": 64, ...}), a
  /// flat JSON object stored and compared on resume like the trainer's own, except `resumable`.
  /// `added_later`: as options_added_later(), for these options.
  void set_run_options(const std::string& json_object, std::vector<std::string> resumable = {},
                       const std::string& added_later = "{}");
  /// ValueError if the trainer does not support it, world < 1, rank outside [0, world) or no `average`.
  void set_data_parallel(DataParallel parallel);
  const DataParallel& data_parallel() const { return parallel_; }

  std::string checkpoint_format() const;
  void save_checkpoint(const std::string& path) const;
  /// ValueError if `path` is missing, holds another kind of checkpoint, or was written with options
  /// that differ (other than the resumable ones).
  void load_checkpoint(const std::string& path);
  /// load_checkpoint if `path` exists; returns whether it did.
  bool resume(const std::string& path);
  /// `steps` more steps (>= 0) with a progress bar (smoothed loss, lr and the extras) and
  /// checkpoints as `loop` asks; the last step is always checkpointed when a path is given.
  TrainSummary train(int64_t steps, const TrainLoopOptions& loop = {});

 protected:
  /// This process's rows of a whole batch (dimension 0); the batch itself without data parallelism.
  /// ValueError naming the sizes if the batch does not split evenly.
  at::Tensor shard(const at::Tensor& batch) const;
  /// The optimiser update of 0-based schedule step `schedule_step`, after averaging the gradients
  /// over the processes.
  Optimizer::Stats update(Optimizer& optimizer, int64_t schedule_step);
  /// The loss over the processes (the whole batch's mean loss); `loss` itself without parallelism.
  double average_loss(double loss);

 private:
  DataParallel parallel_;
  std::string run_options_ = "{}";
  std::vector<std::string> run_resumable_;
  std::string run_added_later_ = "{}";
};

/// The one resume check: ValueError "<who>: checkpoint '<source>' was written with other options:
/// <key> is <current value> here, <saved value> in the checkpoint (...)" for the first key of the flat
/// JSON objects that differs and is not in `resumable` (a key missing on one side differs, except a key
/// of the JSON object `added_later` missing from the checkpoint: it stands for the value given there).
void check_resume_options(const std::string& who, const std::string& source, const std::string& saved,
                          const std::string& current, const std::vector<std::string>& resumable,
                          const std::string& added_later = "{}");

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

}  // namespace fewstep
