/// @file train/optimizer.h
/// @brief AdamW with the learning-rate schedule and gradient-norm clipping of every trainer.
///
/// One call of step(s) sets lr = schedule.at(s), clips the global L2 norm of the gradients to
/// grad_clip (torch::nn::utils::clip_grad_norm_; skipped when grad_clip <= 0), applies
/// torch::optim::AdamW (Loshchilov & Hutter 2019) and clears the gradients. Its state (per
/// parameter: step, exp_avg, exp_avg_sq) goes to checkpoints as plain tensors in parameter
/// order, so a resumed optimiser continues bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "fewstep/train/checkpoint.h"
#include "fewstep/train/lr_schedule.h"

namespace torch::optim {
class AdamW;
}  // namespace torch::optim

namespace fewstep {

struct OptimizerOptions {
  LrSchedule schedule;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;  // max global gradient norm; <= 0 disables clipping
};

/// The options as a flat JSON object: lr, warmup, total_steps, min_lr, decay ("cosine" or "linear"),
/// beta1, beta2, eps, weight_decay, grad_clip (the keys every trainer's options share).
std::string options_to_json(const OptimizerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, OptimizerOptions& options);

class Optimizer {
 public:
  struct Stats {
    double lr;
    double grad_norm;  // before clipping (0 if no parameter had a gradient)
  };

  /// `parameters` must require grad. ValueError naming the option for bad values.
  Optimizer(std::vector<at::Tensor> parameters, OptimizerOptions options);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// The update of 0-based step `step` from the gradients accumulated since the last call.
  Stats step(int64_t step);
  /// Drops accumulated gradients (set to undefined).
  void zero_grad();

  const OptimizerOptions& options() const { return options_; }
  const std::vector<at::Tensor>& parameters() const { return parameters_; }

  void save(Checkpoint& checkpoint, const std::string& prefix) const;
  void load(const Checkpoint& checkpoint, const std::string& prefix);

 private:
  std::vector<at::Tensor> parameters_;
  OptimizerOptions options_;
  std::unique_ptr<torch::optim::AdamW> adamw_;
};

}  // namespace fewstep
