/// @file micro/micro_sampler.h
/// @brief A micro-distilled sampler: the residual head of g_ψ and/or the step-size head of
///        h_φ, with the identity of the teacher they were distilled from, as one TorchScript file.
///
/// File: a TorchScript archive of a module with submodules `residual` (N_ψ, nets/micro_heads.h) and/or
/// `step_size` (h_φ's head), a buffer `teacher_probe`, and an extra file "fewstep_micro.json" holding
/// MicroSamplerInfo. Python's torch.jit.load reads it (the heads are ordinary TorchScript).
///
/// Teacher identity: g_ψ and h_φ are only meaningful with the teacher whose evaluations they take, so
/// the file stores that teacher's ε̂ on a fixed probe (2 inputs drawn from a fixed seed, at two times
/// of the sampler's range) and its description. `check_teacher` re-evaluates the probe (2 extra
/// samples of one teacher call, made once per run and not counted in NFE) and refuses a teacher whose
/// predictions differ by more than 1e-3 relative, naming the recorded teacher. The probe is a
/// functional identity: it works for TorchScript files, exact mixtures and Python callables alike.
///
/// Sampling (`plan`, `sample`): with a step-size head, the step (g_ψ's, or DEIS-2 in λ for a
/// step-size-only sampler) runs under LearnedStepController (micro/step_size.h) with a budget of `nfe`
/// steps; without one, on the uniform log-SNR grid of `nfe` steps. Either way NFE = nfe teacher
/// evaluations; each step also makes one pass of each head. `sample` is a request (sample/request.h)
/// whose stepper is this sampler's, so it runs exactly what fs.sample(teacher, x_T, solver="micro",
/// path=file, steps=nfe) runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/control/controller.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/nets/micro_heads.h"
#include "fewstep/sample/sample.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

/// What was trained, and how a sampler steps.
enum class MicroMode {
  Residual,  ///< g_ψ alone (fixed uniform log-SNR grid)
  StepSize,  ///< h_φ alone, with the DEIS-2 (λ) step
  Joint,     ///< g_ψ and h_φ trained together on unrolled trajectories
};
/// "residual", "step_size", "joint" (ValueError otherwise).
MicroMode parse_micro_mode(const std::string& name);
std::string to_string(MicroMode mode);

struct MicroSamplerInfo {
  MicroMode mode = MicroMode::Joint;
  MicroHeadConfig heads;
  double spread = 0.75;  ///< h_φ's bound a (micro/step_size.h)
  double t_start = 0.0;  ///< the range the heads were trained on
  double t_end = 0.0;
  std::string teacher;   ///< description of the teacher (file name, hash, or "exact mixture ...")
  std::string schedule;  ///< the teacher schedule's repr
  std::string training;  ///< settings of the training run (JSON text), for the record
};

/// The info record as stored in a sampler file ("fewstep_micro.json": format, mode, heads, spread, ...).
std::string micro_sampler_info_json(const MicroSamplerInfo& info);

class MicroSampler {
 public:
  /// residual is required for Residual/Joint, step_size for StepSize/Joint; teacher_probe is
  /// `probe_teacher(teacher, info)`. ValueError naming what is missing.
  MicroSampler(ScriptNet residual, ScriptNet step_size, MicroSamplerInfo info, at::Tensor teacher_probe);

  /// The teacher's ε̂ on the identity probe ([2, sample_shape...] at two times), float32.
  static at::Tensor probe_teacher(const Denoiser& teacher, const MicroSamplerInfo& info);
  /// ValueError naming the file, the recorded teacher and the relative difference if `teacher` is not
  /// the one the heads were distilled from.
  void check_teacher(const Denoiser& teacher) const;

  /// Atomic write (temporary file + rename). `load` raises ValueError naming the path for a missing
  /// file, a TorchScript file that is not a micro sampler, or a bad info record.
  void save(const std::string& path) const;
  static std::shared_ptr<const MicroSampler> load(const std::string& path);

  /// The step: the `micro` stepper of this sampler — g_ψ (Residual/Joint) or DEIS order 2 in λ
  /// (StepSize) — which checks the teacher at the first step of every run.
  std::shared_ptr<const Stepper> stepper() const;
  /// h_φ under a budget of nfe steps (null for a Residual sampler).
  std::shared_ptr<const StepController> controller(int64_t nfe) const;
  /// A run of nfe teacher evaluations from t_start to t_end (default: the trained range
  /// info().t_start → info().t_end): the stepper and either h_φ's controller (spacing must then be
  /// LogSNR: h_φ places the steps) or the `spacing` grid of nfe steps.
  StepPlan plan(const NoiseSchedule& schedule, int64_t nfe, Spacing spacing = Spacing::LogSNR,
                std::optional<double> t_start = std::nullopt, std::optional<double> t_end = std::nullopt) const;
  /// nfe teacher evaluations from x_T over plan(teacher's schedule, nfe); the teacher is checked first.
  Solution sample(const Denoiser& teacher, const at::Tensor& x_T, int64_t nfe, const SampleOptions& options = {}) const;

  const ScriptNet& residual() const { return residual_; }
  const ScriptNet& step_size() const { return step_size_; }
  const MicroSamplerInfo& info() const { return info_; }
  const at::Tensor& teacher_probe() const { return probe_; }
  /// Where it was loaded from ("" if built in memory); used in messages.
  const std::string& source() const { return source_; }
  /// Parameters of the residual / step-size heads (0 if absent).
  int64_t residual_parameters() const;
  int64_t step_size_parameters() const;

 private:
  ScriptNet residual_;
  ScriptNet step_size_;
  MicroSamplerInfo info_;
  at::Tensor probe_;
  std::string source_;
};

}  // namespace fewstep
