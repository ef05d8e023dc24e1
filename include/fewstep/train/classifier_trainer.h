/// @file train/classifier_trainer.h
/// @brief Training of an image classifier (nets/classifier.h) by cross-entropy, with exact resume.
///
/// One step: a labelled batch (x [B, C, H, W], labels [B]) from the BatchSource; with `flip`, each
/// image is mirrored left–right with probability ½ (a draw of the run's "augment" generator;
/// Fashion-MNIST's classes are symmetric under this flip); logits = net.forward(x); loss = mean
/// cross-entropy; backward; train/optimizer.h (AdamW, warmup + cosine lr, gradient clipping).
/// The network is trained in place through its parameters(); it has no EMA copy. The loop,
/// checkpoint files and resume are the Trainer base's (train/trainer.h).
///
/// Checkpoints (train/checkpoint.h, atomic) hold the step counter, the weights, the AdamW state,
/// the generator states and the data source's position: a run resumed from one gives the same
/// weights as a run that never stopped (same thread count; the graph executor runs unoptimised
/// during training, as in DenoiserTrainer).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "fewstep/nets/network.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

struct ClassifierTrainerOptions {
  OptimizerOptions optimizer;
  bool flip = true;  // random horizontal flips (p = ½ per image)
  uint64_t seed = 0;
};

/// Accuracy and mean cross-entropy of a classifier on a labelled set.
struct ClassifierScore {
  int64_t n = 0;
  double accuracy = 0.0;
  double loss = 0.0;
};

/// Evaluates `net.forward(x) -> logits` on `images` [N, ...] with `labels` [N] (int64), `batch`
/// images at a time, under inference mode. ValueError naming the argument for mismatched shapes.
ClassifierScore score_classifier(const torch::jit::Module& net, const at::Tensor& images, const at::Tensor& labels,
                                 int64_t batch = 500);

/// The options as a flat JSON object (train/trainer.h): flip, seed and the optimiser's keys
/// (train/denoiser_trainer.h).
std::string options_to_json(const ClassifierTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, ClassifierTrainerOptions& options);

class ClassifierTrainer final : public Trainer {
 public:
  /// ValueError naming the argument for a null network/data, a network without a forward method
  /// or trainable parameters, or bad options.
  ClassifierTrainer(ScriptNet net, std::shared_ptr<BatchSource> data, ClassifierTrainerOptions options = {});
  ~ClassifierTrainer() override;

  std::string kind() const override { return "classifier"; }
  /// One optimisation step; loss = mean cross-entropy, extra {"accuracy": fraction of the batch
  /// classified correctly before the update}. ValueError if the data source gives no labels.
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return net(); }
  /// options_to_json with the data source.
  std::string options_json() const override;

  const ScriptNet& net() const;
  const ClassifierTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
