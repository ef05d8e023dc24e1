/// @file train/continuous_consistency.h
/// @brief sCM's continuous-time consistency objective (Lu & Song 2024, arXiv 2410.11081, §4 and
/// Algorithm 1: sCD and sCT) on the library's consistency parameterisation
/// f(x, t) = c_skip x + c_out F(c_in x, c_noise) (models/consistency_function.h), on any schedule.
///
/// TrigFlow in our terms. With σ̃ = σ/α and θ = arctan(σ̃/σ_d) (TrigFlow's time), TrigFlow's state is
/// y = cos θ · x/α = σ_d c_in x, the network sees y/σ_d = c_in x, and f = a(t) y + c_out(t) F with
/// a = c_skip/(σ_d c_in). On VE with the boundary at σ̃ = 0, a = cos θ and c_out = σ_d sin θ, which is
/// TrigFlow's f = cos θ y − σ_d sin θ F_trig with F_trig = −F: the same model. Our boundary offset
/// (c_out = 0 at t_min, so f(·, t_min) is exactly the identity) is the only difference.
///
/// The objective. Along the probability-flow ODE, the consistency function is constant, so its total
/// derivative df/dt = a' y + a ẏ + c_out' F + c_out (∂F/∂(c_in x) · ẏ/σ_d + ∂F/∂c_noise · c_noise')
/// must vanish. sCM's gradient pulls F towards F⁻ − g, with g = cos θ · df⁻/dθ (θ⁻ = θ without
/// gradient), that is in our sign convention towards F⁻ + u with
///   u = −κ df⁻/dt,   κ = √(σ̃² + σ_d²) / (dσ̃/dt)      (cos θ · dt/dθ, in the schedule's time),
/// computed with one forward-mode JVP of F along (ẏ/σ_d, c_noise') (no double backward). The paper's
/// stabilisers:
///  - tangent warm-up: r = min(1, k/H) multiplies the terms a' y + c_out dF/dt (Algorithm 1's
///    cos θ sin θ (y + σ_d dF/dt)), so training starts as diffusion distillation;
///  - tangent normalisation: û = u / (‖u‖ + c), c = 0.1, per example;
///  - adaptive weighting: loss_b = e^{w(σ̃_b)}/D ‖F_θ − F⁻ − û‖² − w(σ̃_b), w learned. Here w is
///    piecewise linear in log σ̃ over `kScmWeightKnots` knots (the paper uses a small MLP of the time
///    embedding; a knot table holds the same one-dimensional function and costs nothing).
/// ẏ comes from the teacher's ε̂ (sCD: dx/dt = (d log α/dt) x − σ (dλ/dt) ε̂) or from the sample itself
/// (sCT: dx/dt = α' x_0 + σ' z). Scalar derivatives of the scalings and of the network's time input
/// are float64 central differences on the host (relative error ~1e-10, far below a float32 JVP).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "fewstep/models/consistency_function.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

/// Knots of the adaptive weight w(σ̃), equally spaced in log σ̃ over the schedule's range.
inline constexpr int64_t kScmWeightKnots = 32;

struct ScmOptions {
  double tangent_c = 0.1;       ///< c of the tangent normalisation û = u/(‖u‖ + c)
  int64_t warmup_steps = -1;    ///< H of r = min(1, k/H); −1: a tenth of the run; 0: no warm-up
  bool adaptive_weight = true;  ///< the learned weight w(σ̃); off: loss_b = ‖F_θ − F⁻ − û‖²/D
  /// ValueError naming the field.
  void validate() const;
  /// r at step k of a run of `total_steps`.
  double warmup(int64_t k, int64_t total_steps) const;
};

/// Per-row scalars of the objective at host times t ([B] float64 CPU): a, a', c_out, c_out', c_in,
/// c_in', c_noise, c_noise' (the network's time input and its t-derivative) and κ; each [B] float64.
struct ScmCoefficients {
  at::Tensor a, da, c_out, dc_out, c_in, dc_in, c_noise, dc_noise, kappa;
};
/// ValueError naming `t` for a time outside [t_min, t_max] of the parameterisation.
ScmCoefficients scm_coefficients(const NoiseSchedule& schedule, const ConsistencyParameterization& p,
                                 const at::Tensor& t);

/// The JVP pass, without gradient: F⁻ = F(c_in x, c_noise) and the normalised target shift û, from
/// x_t, the per-row times t and dx/dt along the ODE, with warm-up factor r and normalisation c.
/// `input` and `time_input` are F's inputs, for the online pass.
struct ScmTangent {
  at::Tensor F_minus, target, input, time_input;
};
ScmTangent scm_tangent(const ConsistencyNetwork& net, const NoiseSchedule& schedule,
                       const ConsistencyParameterization& p, const at::Tensor& x, const at::Tensor& t,
                       const at::Tensor& dx_dt, double r, double tangent_c);

/// dx/dt of the probability-flow ODE from the model's noise prediction ε̂ at per-row times t:
/// (d log α/dt) x − σ (dλ/dt) ε̂.
at::Tensor ode_velocity_from_eps(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps,
                                 const at::Tensor& t);

/// w at per-row levels σ̃ ([B], any dtype): linear interpolation of `knots` ([K], differentiable) over
/// log σ̃ ∈ [log lo, log hi], constant beyond.
at::Tensor scm_log_weight(const at::Tensor& knots, const at::Tensor& sigma_tilde, double lo, double hi);

/// The per-row loss e^w/D ‖F_θ − F⁻ − û‖² − w (or ‖·‖²/D when `log_weight` is undefined), times `mask`
/// ([B], 1 or 0; undefined: all 1), averaged over the B rows.
at::Tensor scm_loss(const at::Tensor& F_theta, const ScmTangent& tangent, const at::Tensor& log_weight,
                    const at::Tensor& mask = {});

}  // namespace fewstep
