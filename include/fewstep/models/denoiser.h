/// @file models/denoiser.h
/// @brief The one model object solvers see: (x, t) ↦ (x̂_0, ε̂), whatever the network predicts.
///
/// Conversions at time t with x = α x_0 + σ ε (docs/design.md §1):
///  - "eps":   x̂_0 = (x − σ ε̂)/α
///  - "x0":    ε̂ = (x − α x̂_0)/σ
///  - "v":     v = α ε − σ x_0 (Salimans & Ho 2022) ⇒ x̂_0 = (α x − σ v)/(α²+σ²), ε̂ = (σ x + α v)/(α²+σ²)
///  - "score": ε̂ = −σ s
///  - "flow":  u = α̇ x_0 + σ̇ ε (flow matching velocity) ⇒ solve the 2×2 system with x.
/// The network's time input is the continuous t, the discrete index (t·N − 1), σ or λ,
/// multiplied by `time_scale`, as a tensor of shape [batch] with x's dtype and device.
///
/// Content identity: a Denoiser may carry a fingerprint, a text that changes whenever its outputs
/// can (what a cache of its solves is keyed by, sample/teacher_cache.h). TorchScript files, model
/// files and exact mixtures get one from their content (SHA-256 of the file's bytes, of the mixture's
/// parameters, and of the schedule and prediction settings); a network given as a callable has none
/// unless the caller supplies it (Python: an nn.Module's is computed from its current state_dict).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "fewstep/core/device.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

class GaussianMixture;

enum class Prediction { Eps, X0, V, Score, Flow };
enum class TimeInput { T, Index, Sigma, Lambda };

/// "eps", "x0", "v", "score", "flow" (ValueError otherwise).
Prediction parse_prediction(const std::string& name);
std::string to_string(Prediction prediction);
/// "t", "index", "sigma", "lambda" (ValueError otherwise).
TimeInput parse_time_input(const std::string& name);
std::string to_string(TimeInput time_input);

/// What a denoiser returns: the data prediction and the noise prediction, same shape as x.
struct DenoiserOutput {
  at::Tensor x0;
  at::Tensor eps;
};

/// Which of the two predictions a caller reads (StepperTraits::needs). A network's native output is
/// converted only into those; the other field may be left undefined (it is filled when it costs
/// nothing, e.g. ε̂ of an ε network). Exact and direct models always fill both.
enum class Needs { Both, Eps, X0 };
std::string to_string(Needs needs);

class Denoiser {
 public:
  /// A network: (x, t_input[batch]) ↦ native prediction, same shape as x.
  using Network = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t)>;
  /// A model that already gives both predictions at a host time t (exact models, wrappers).
  using Direct = std::function<DenoiserOutput(const at::Tensor& x, double t)>;
  /// Computes a content fingerprint on demand (see above); called again at every use, so it may
  /// follow weights that change (an nn.Module still being trained).
  using Fingerprint = std::function<std::string()>;

  /// Wraps a network predicting `prediction`, fed time as `time_input` × `time_scale`.
  /// `network_fingerprint` (optional) identifies the network's content; the Denoiser's fingerprint
  /// then also covers the schedule, prediction and time input.
  Denoiser(Network network, SchedulePtr schedule, Prediction prediction, TimeInput time_input = TimeInput::T,
           double time_scale = 1.0, Fingerprint network_fingerprint = {});

  /// Loads a TorchScript module (torch::jit::load) whose forward(x, t) returns the prediction.
  /// `placement` (core/device.h) maps it to a device as it is read and converts its parameters to a
  /// dtype; unset, the module stays on the device it was saved from. Pass x on that device and in
  /// that dtype. ValueError naming the path if it cannot be read.
  static Denoiser torchscript(const std::string& path, SchedulePtr schedule, Prediction prediction,
                              TimeInput time_input = TimeInput::T, double time_scale = 1.0,
                              const Placement& placement = {});
  /// The exact denoiser of a Gaussian mixture under `schedule` (any family).
  static Denoiser exact(std::shared_ptr<const GaussianMixture> mixture, SchedulePtr schedule);
  /// A model that directly returns (x̂_0, ε̂); `description` shows up in messages and repr.
  static Denoiser direct(Direct fn, SchedulePtr schedule, std::string description);

  /// Evaluates the model at host time t (in the schedule's range). `needs` names the predictions
  /// the caller reads; the others may come back undefined (see Needs).
  DenoiserOutput operator()(const at::Tensor& x, double t, Needs needs = Needs::Both) const;

  const SchedulePtr& schedule() const { return schedule_; }
  const NoiseSchedule& schedule_ref() const { return *schedule_; }
  const std::string& description() const { return description_; }

  /// The content fingerprint (64 hex characters), or nullopt when this model has no content
  /// identity (a callable without one).
  std::optional<std::string> fingerprint() const;
  bool has_fingerprint() const { return static_cast<bool>(fingerprint_); }
  /// A copy whose fingerprint is `fingerprint()` (the caller vouches that it identifies the model;
  /// an empty function removes it).
  Denoiser with_fingerprint(Fingerprint fingerprint) const;

 private:
  /// The model with the predictions it must fill (Needs).
  using Evaluate = std::function<DenoiserOutput(const at::Tensor& x, double t, Needs needs)>;
  Denoiser(Direct fn, SchedulePtr schedule, std::string description);
  Evaluate fn_;
  SchedulePtr schedule_;
  std::string description_;
  Fingerprint fingerprint_;
};

/// Converts a native network output to (x̂_0, ε̂) at time t (exposed for tests and trainers); with
/// `needs` Eps or X0 only that one is computed (the other is set only when it is `out` itself).
DenoiserOutput convert_prediction(const at::Tensor& x, const at::Tensor& out, Prediction prediction,
                                  const NoiseSchedule& schedule, double t, Needs needs = Needs::Both);
/// The inverse: the native target a network predicting `prediction` should output.
at::Tensor native_from_x0_eps(const at::Tensor& x0, const at::Tensor& eps, Prediction prediction,
                              const NoiseSchedule& schedule, double t);
/// The network's time input for host time t.
double network_time(const NoiseSchedule& schedule, double t, TimeInput time_input, double time_scale);

}  // namespace fewstep
