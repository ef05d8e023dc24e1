/// @file psld/training.h
/// @brief The PSLD trainer: HSM loss (psld/hsm_loss.h), AdamW with warm-up + cosine decay,
/// gradient clipping and an EMA, over any BatchSource — in the project's trainer shape
/// (train/trainer.h: step(), state dict, atomic checkpoints, bit-exact resume, the progress loop).
/// Used for the shipped 16-D mixture model and by the tests; the network is any TorchScript module
/// forward(z, t) → ε̂ (e.g. nets/mlp.h with dim = 2D).
#pragma once

#include <memory>

#include "fewstep/train/trainer.h"

#include <cstdint>
#include <functional>
#include <vector>

#include "fewstep/nets/network.h"
#include "fewstep/psld/process.h"
#include "fewstep/data/batch_source.h"

namespace fewstep {

struct PsldTrainOptions {
  int64_t steps = 3000;
  double lr = 1e-3;
  int64_t warmup = 200;
  double min_lr = 0.0;
  double ema = 0.999;
  double grad_clip = 1.0;
  uint64_t seed = 0;  ///< generator of t and ε
  /// ValueError naming the field.
  void validate() const;
};

struct PsldTrainResult {
  std::vector<double> losses;  ///< one per step
  ScriptNet ema;               ///< the EMA network (what gets shipped)
  double seconds = 0;
};

/// One HSM step per step(): z_t and t from the run's generator (seeded with options.seed; its state is
/// checkpointed), ε̂ = network(z_t, t), the loss, backward, AdamW, EMA. Checkpoints hold the step, the
/// network, the EMA, AdamW, the generator and the data position.
class PsldTrainer final : public Trainer {
 public:
  /// ValueError naming the argument for a null network or data source, or bad options.
  PsldTrainer(ScriptNet network, std::shared_ptr<BatchSource> data, PsldProcess process, PsldTrainOptions options);
  ~PsldTrainer() override;
  std::string kind() const override { return "psld"; }
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override;  ///< the EMA network
  /// steps, lr, warmup, min_lr, ema, grad_clip, seed and the data source (train/trainer.h).
  std::string options_json() const override;
  /// `steps` (the run's planned length) may change on resume.
  std::vector<std::string> resumable_options() const override { return {"steps"}; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Trains `network` in place (a PsldTrainer run for options.steps steps, without checkpoints). `on_step(step, loss)` is called after every step when set.
PsldTrainResult train_psld(const ScriptNet& network, BatchSource& data, const PsldProcess& process,
                           const PsldTrainOptions& options,
                           const std::function<void(int64_t, double)>& on_step = {});

}  // namespace fewstep
