/// @file train/consistency_trainer.h
/// @brief Consistency distillation (CD), consistency training (CT), improved consistency
/// training (iCT), easy consistency tuning (ECT) and continuous-time sCM (sCD, sCT) in one trainer (Song et
/// al. 2023, arXiv 2303.01469, Algorithms 2 and 3; Song & Dhariwal 2023, arXiv 2310.14189; Geng et al. 2024,
/// arXiv 2406.14548; Lu & Song 2024, arXiv 2410.11081).
///
/// Levels. The N points of a step are the Karras ρ-grid t_0 = t_min < t_1 < ... < t_{N−1} = t_max
/// (uniform in σ̃^{1/ρ}, σ̃ = σ/α: `timesteps(schedule, N − 1, Spacing::Karras)` reversed).
///
/// One step, per example: x_0 from the data, an index i ∈ {0..N−2} (uniform for CD and CT; iCT's
/// lognormal, train/consistency_curriculum.h), z ~ N(0, I), x_{i+1} = α_{i+1} x_0 + σ_{i+1} z, and
///  - CD: x̂_i = the teacher's ODE step t_{i+1} → t_i from x_{i+1}, one call of a registered
///    deterministic stepper (`heun` by default) on the teacher Denoiser, without autograd;
///  - CT, iCT: x̂_i = α_i x_0 + σ_i z (the same z: the one-sample score estimate of Algorithm 3);
/// loss = mean_b λ_b d(f_θ(x_{i+1}, t_{i+1}), f_{θ⁻}(x̂_i, t_i)), d ∈ {L2: mean_j (a−b)², L1: mean_j |a−b|,
/// pseudo-Huber: √(‖a−b‖² + c²) − c with c = 0.00054 √dim by default}, λ = 1 (CD, CT) or
/// 1/(σ̃_{i+1} − σ̃_i) (iCT). f is models/consistency_function.h's parameterisation; f(·, t_min) = identity.
/// After AdamW: θ⁻ ← μ θ⁻ + (1 − μ) θ with μ fixed (CD, `target_ema`) or μ(k) (CT); iCT has no target
/// network (θ⁻ = θ without gradient). An evaluation EMA (ema_decay) is kept and exported.
///
/// N: fixed `num_points` (CD), the CT curriculum N(k), or iCT's doubling curriculum.
///
/// ECT: no levels. Per row, σ̃_t ~ lognormal(P_mean, P_std) (clamped to the schedule's range), σ̃_r from
/// the mapping function (train/consistency_curriculum.h, EctCurriculum), t and r the schedule's times of
/// those levels, x_t and x_r from one z as in CT; the target is f_{θ⁻}(x_r, r) with θ⁻ = θ without
/// gradient (as iCT), or x_0 itself where σ̃_r <= σ̃(t_min) (the diffusion limit); weight 1/(σ̃_t − σ̃_r)
/// and the pseudo-Huber distance (the paper's adaptive weighting and loss). The student is meant to start
/// at a diffusion model: from an ε teacher, its weights read as F (models/student_init.h's
/// trainable_copy), not the ε teacher wrapped exactly, which is ill conditioned at high noise
/// (docs/distillation.md, "Where a student starts").
///
/// sCD, sCT: no pairs. Per row, σ̃ ~ lognormal(P_mean, P_std) as in ECT, x_t = α x_0 + σ z, and the
/// continuous-time objective of train/continuous_consistency.h: one forward-mode JVP of θ⁻ = θ (without
/// gradient) along the ODE, whose velocity comes from the teacher's ε̂ (sCD) or from x_0 and z (sCT),
/// then the online pass regressed onto F⁻ + û with the learned adaptive weight (kept in checkpoints
/// under "scm/log_weight"). About 2× ECT's cost per step (a JVP costs ~3–5 forward passes).
///
/// Dropout. Both passes of a step run with the same dropout masks: before each, the global CPU
/// generator (which TorchScript dropout draws from) is seeded with one value drawn from the run's
/// own "dropout" stream, and restored afterwards, so the masks are a function of the run's seed and
/// the user's global RNG is untouched. (The masks are identical when both passes see equally shaped
/// activations, which they do here.)
///
/// Checkpoints hold step, online student, target network, evaluation EMA, AdamW, every RNG stream and
/// the data position; resuming is bit-identical to an uninterrupted run (train/trainer.h).
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/solvers/stepper.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/consistency_curriculum.h"
#include "fewstep/train/continuous_consistency.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"

namespace fewstep {

enum class ConsistencyMethod { Distillation, Training, ImprovedTraining, EasyTuning, ScmDistillation, ScmTraining };
/// "cd", "ct", "ict", "ect", "scd", "sct" (ValueError otherwise).
ConsistencyMethod parse_consistency_method(const std::string& name);
std::string to_string(ConsistencyMethod method);

enum class ConsistencyDistance { L2, L1, PseudoHuber };
/// "l2", "l1", "pseudo_huber" (ValueError otherwise).
ConsistencyDistance parse_consistency_distance(const std::string& name);
std::string to_string(ConsistencyDistance distance);
/// The distance a method trains with when none is named: pseudo-Huber for iCT (Song & Dhariwal 2023,
/// arXiv 2310.14189, §3.3) and ECT (arXiv 2406.14548), L2 for the others. The CLI and Python use it.
ConsistencyDistance default_consistency_distance(ConsistencyMethod method);

struct ConsistencyTrainerOptions {
  ConsistencyMethod method = ConsistencyMethod::Distillation;
  ConsistencyParameterization function;  ///< σ_d, boundary, the student's time input
  // CD: the teacher and its ODE step.
  Prediction teacher_prediction = Prediction::Eps;
  TimeInput teacher_time_input = TimeInput::T;
  double teacher_time_scale = 1.0;
  std::string teacher_solver = "heun";           ///< any registered deterministic stepper
  std::shared_ptr<const Stepper> teacher_stepper;  ///< overrides teacher_solver (e.g. an exact flow in tests)
  int64_t num_points = 18;                        ///< CD's N
  double target_ema = 0.95;                       ///< CD's μ
  CtCurriculum ct;                                ///< CT's N(k), μ(k); total_steps = K
  IctCurriculum ict;                              ///< iCT's N(k); total_steps = K
  EctCurriculum ect;                              ///< ECT's mapping function and stages; total_steps = K
  ScmOptions scm;                                 ///< sCD's and sCT's stabilisers
  double p_mean = -1.1, p_std = 2.0;              ///< the lognormal of iCT's levels and ECT's / sCM's σ̃
  double rho = 7.0;
  ConsistencyDistance distance = ConsistencyDistance::L2;  ///< see default_consistency_distance
  double huber_c = 0.0;  ///< 0: 0.00054 √dim
  OptimizerOptions optimizer;
  double ema_decay = 0.999;  ///< evaluation EMA (exported)
  uint64_t seed = 0;
  /// ValueError naming the field.
  void validate() const;
};

/// The options as a flat JSON object (train/trainer.h): method, sigma_data, t_min (the boundary; 0 =
/// the schedule's), time_input, time_scale, teacher_prediction, teacher_time_input, teacher_time_scale,
/// teacher_solver (the name of teacher_stepper when one is given), num_points, target_ema, ct_s0, ct_s1,
/// ct_mu0, ct_total_steps, ict_s0, ict_s1, ict_total_steps, ect_q, ect_k, ect_b, ect_stages,
/// ect_total_steps, scm_tangent_c, scm_warmup_steps, scm_adaptive_weight, p_mean, p_std, rho, distance, huber_c,
/// ema_decay, seed and the optimiser's keys (train/denoiser_trainer.h).
std::string options_to_json(const ConsistencyTrainerOptions& options);
/// Sets the keys present in `json`; ValueError naming an unknown key, TypeError for a wrong type.
void options_from_json(const std::string& json, ConsistencyTrainerOptions& options);
/// Options from `json` over the defaults, with default_consistency_distance(method) unless `json`
/// names a distance: how a caller's partial options (Python keywords) become a trainer's.
ConsistencyTrainerOptions consistency_options_from_json(const std::string& json);

// The arithmetic of a consistency step, shared by ConsistencyTrainer and the Python loss
// (python/fewstep/distill.py), so both compute the same numbers.

/// N(k), the number of levels at step k (CD: num_points; CT, iCT: their curricula; ECT: 0, continuous).
int64_t consistency_points(const ConsistencyTrainerOptions& options, int64_t k);
/// μ(k), the target network's EMA rate (CD: target_ema; CT: the curriculum's; iCT: 0).
double consistency_target_ema(const ConsistencyTrainerOptions& options, int64_t k);
/// The n increasing levels t_0 = t_lo < ... < t_{n−1} = t_max: the Karras ρ-grid in σ̃ = σ/α, with the
/// first level exactly t_lo (f(·, t_lo) is the identity). ValueError for n < 2.
std::vector<double> consistency_levels(const NoiseSchedule& schedule, int64_t n, double t_lo, double rho);
/// `n` level indices i ∈ {0..N−2} drawn from `gen`: uniform (CD, CT) or iCT's discretised lognormal.
at::Tensor consistency_draw_index(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& options,
                                  const std::vector<double>& levels, int64_t n, at::Generator& gen);

/// Per row b (index i_b): the pair of times t_hi = t_{i+1} > t_lo = t_i, their α and σ, and the loss
/// weight λ (1 for CD and CT, 1/(σ̃_hi − σ̃_lo) for iCT); [B] float64 CPU tensors.
struct ConsistencyPairTimes {
  at::Tensor t_hi, t_lo, alpha_hi, sigma_hi, alpha_lo, sigma_lo, weight;
  at::Tensor to_data;  ///< ECT: [B] bool, rows whose target is x_0 (undefined for the level methods)
};
ConsistencyPairTimes consistency_pair_times(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& options,
                                            const std::vector<double>& levels, const at::Tensor& index);
/// CD's x̂_i: one step of `stepper` on `teacher` from t_{i+1} to t_i for every row of x_hi (rows grouped
/// by index), without autograd.
/// ECT's pairs at step k from `normals` ([B] standard normal draws): σ̃_t = exp(P_mean + P_std n)
/// clamped to [σ̃(t_min), σ̃(t_max)], σ̃_r = EctCurriculum::r(σ̃_t, k), t_hi/t_lo their times (t_lo clamped
/// at the boundary), weight 1/(σ̃_t − σ̃_r), to_data where σ̃_r <= σ̃(t_min).
ConsistencyPairTimes ect_pair_times(const NoiseSchedule& schedule, const ConsistencyTrainerOptions& options, int64_t k,
                                    double t_lo, const at::Tensor& normals);
at::Tensor consistency_teacher_step(const Denoiser& teacher, const Stepper& stepper, const at::Tensor& x_hi,
                                    const at::Tensor& index, const std::vector<double>& levels);
/// The per-row distance d(a, b) ([B]): L2 mean_j (a−b)², L1 mean_j |a−b|, or pseudo-Huber
/// √(‖a−b‖² + c²) − c with c = huber_c, or 0.00054 √dim when huber_c is 0.
at::Tensor consistency_distance(const at::Tensor& a, const at::Tensor& b, ConsistencyDistance distance,
                                double huber_c);

class ConsistencyTrainer final : public Trainer {
 public:
  /// `student`: the network F (initialised by the caller, e.g. from the teacher's weights for CD).
  /// `teacher`: required for CD and sCD, ignored otherwise. ValueError naming the argument for null inputs,
  /// a missing teacher or a stochastic teacher stepper.
  ConsistencyTrainer(ScriptNet student, SchedulePtr schedule, std::shared_ptr<BatchSource> data,
                     ConsistencyTrainerOptions options = {}, ScriptNet teacher = nullptr);
  ~ConsistencyTrainer() override;

  std::string kind() const override { return "consistency"; }
  /// extra: {"N", points}, {"mu", target EMA rate} (ECT: {"stage", s}; sCD, sCT: {"warmup", r}).
  TrainStepStats step() override;
  Checkpoint state() const override;
  void load_state(const Checkpoint& checkpoint) override;
  int64_t step_count() const override;
  int64_t planned_steps() const override;
  const ScriptNet& export_net() const override { return ema_student(); }
  /// options_to_json with the boundary resolved, the schedule and the data source.
  std::string options_json() const override;
  bool supports_data_parallel() const override { return true; }

  /// N and μ at step k (CD: fixed).
  int64_t points_at(int64_t k) const;
  double target_ema_at(int64_t k) const;
  /// The N increasing level times t_0 = t_min < ... < t_{N−1} = t_max.
  std::vector<double> levels(int64_t n) const;
  /// The loss of the current online and target networks on x0 at N = points_at(step_count()), with
  /// draws from a generator seeded with `seed` (the run's RNG untouched), without gradients or an
  /// update: for tests and evaluation.
  /// `at_step` (>= 0) evaluates at that step's N or ECT stage instead.
  double loss_on(const at::Tensor& x0, uint64_t seed, int64_t at_step = -1) const;

  const ScriptNet& student() const;
  const ScriptNet& target() const;  ///< θ⁻ (iCT: the student itself)
  const ScriptNet& ema_student() const;
  /// The evaluation EMA as a consistency Denoiser (x0 = f(x, t)).
  Denoiser denoiser() const;
  const ConsistencyTrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fewstep
