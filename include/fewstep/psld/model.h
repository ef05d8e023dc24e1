/// @file psld/model.h
/// @brief What PSLD samplers call: (z, t) ↦ ∇_z log p_t(z), from an exact mixture or an ε-network.
///
/// A PSLD network predicts ε̂ of the HSM kernel (psld/process.h), so its score is
/// s = −L_t⁻ᵀ ε̂ (PSLD eq. 9). The samplers only need that score, so the model contract is the
/// score itself; `PsldEvaluator` counts the calls so a run's NFE is exact.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fewstep/nets/network.h"
#include "fewstep/psld/process.h"

namespace fewstep {

class PsldMixture;

class PsldModel {
 public:
  /// (z [B, 2C, ...], host time t) ↦ score, same shape as z.
  using ScoreFn = std::function<at::Tensor(const at::Tensor& z, double t)>;
  /// (z, t [B] tensor in z's dtype) ↦ ε̂, same shape as z.
  using EpsNetwork = std::function<at::Tensor(const at::Tensor& z, const at::Tensor& t)>;

  /// The exact score of a PSLD mixture.
  static PsldModel exact(std::shared_ptr<const PsldMixture> mixture);
  /// A network predicting ε̂(z, t · time_scale); score = −L_t⁻ᵀ ε̂.
  static PsldModel eps_network(EpsNetwork network, PsldProcess process, double time_scale = 1.0,
                               std::string description = "eps network");
  /// A TorchScript module (e.g. one made by nets/mlp.h with dim = 2D) whose forward(z, t) returns ε̂.
  static PsldModel script(ScriptNet module, PsldProcess process, double time_scale = 1.0);
  /// Loads a TorchScript file (ValueError naming the path if it cannot be read).
  static PsldModel torchscript(const std::string& path, PsldProcess process, double time_scale = 1.0);
  /// Any score function (tests, wrappers).
  static PsldModel direct(ScoreFn score, PsldProcess process, std::string description);

  at::Tensor score(const at::Tensor& z, double t) const { return score_(z, t); }
  const PsldProcess& process() const { return process_; }
  const std::string& description() const { return description_; }

 private:
  PsldModel(ScoreFn score, PsldProcess process, std::string description);
  ScoreFn score_;
  PsldProcess process_;
  std::string description_;
};

/// Counts and forwards score evaluations. One per sampling run.
class PsldEvaluator {
 public:
  explicit PsldEvaluator(const PsldModel& model) : model_(&model) {}
  at::Tensor operator()(const at::Tensor& z, double t) {
    ++nfe_;
    return model_->score(z, t);
  }
  int64_t nfe() const { return nfe_; }
  const PsldProcess& process() const { return model_->process(); }

 private:
  const PsldModel* model_;
  int64_t nfe_ = 0;
};

}  // namespace fewstep
