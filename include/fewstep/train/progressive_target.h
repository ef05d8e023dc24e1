/// @file train/progressive_target.h
/// @brief The student target of progressive distillation (Salimans & Ho 2022, Algorithm 2).
///
/// Student grid. A student with N steps runs on the uniform-in-t grid of the trainer's range
/// [t_lo, t_hi] (default the schedule's [t_min, t_max]):
///   τ(i) = t_lo + (i/N)(t_hi − t_lo),  i ∈ [0, N]  (i may be a half-integer),
/// i.e. the paper's t = i/N ∈ [0, 1] mapped affinely onto [t_lo, t_hi]. Grid index i = N is the
/// start (t_hi), the student's step number N − i goes from τ(i) to τ(i − 1). The end of the grid
/// is τ(0) = t_lo; there σ > 0 on every schedule, and following the paper (σ_0 = 0) the student's
/// last step (from τ(1)) is a step to σ = 0, i.e. its output is its data prediction x̂_0 (so an
/// N-step student sampler is N − 1 DDIM steps τ(N) → τ(1) plus x̂_0 at τ(1): N evaluations).
///
/// Target. For a sample z_t at t = τ(i), t' = τ(i − ½), t'' = τ(i − 1), the teacher takes two
/// deterministic DDIM steps, each one call of the library's `ddim` stepper (solvers/ddim.h):
///   z_{t'}  = DDIM(teacher; z_t, t → t'),   z_{t''} = DDIM(teacher; z_{t'}, t' → t'').
/// A student DDIM step t → t'' with data prediction x̃ lands on (σ_{t''}/σ_t) z_t + (α_{t''} −
/// (σ_{t''}/σ_t) α_t) x̃ (DDIM's data form), so the x̃ that makes it land on the teacher's z_{t''} is
///   x̃ = (z_{t''} − (σ_{t''}/σ_t) z_t) / (α_{t''} − (σ_{t''}/σ_t) α_t)
/// with the denominator written σ_{t''} e^{λ_t} expm1(λ_{t''} − λ_t) > 0 (no cancellation).
/// At the last step (i = 1, t'' = end of the grid, treated as σ_{t''} = 0, docs/design.md §1) the
/// formula gives x̃ = z_{t''}/α_{t''} with z_{t''} = the teacher's x̂_0(z_{t'}, t') — the second DDIM
/// call's data prediction — so the target is the teacher's x̂ itself.
///
/// A second view: local semigroup matching. Write Φ_{t→s} for a sampler's map from time t to s.
/// The teacher's map on its 2N-step grid composes two half steps, Φ_{t'→t''} ∘ Φ_{t→t'}; the
/// student is trained so that its single step Ψ_{t→t''} equals that composition pointwise on
/// the z_t the forward process produces. Matching the semigroup property one step at a time
/// (local), round after round (N → N/2 → ...), composes into a short sampler that reproduces
/// the teacher's long one; each round's error adds to the previous rounds' error.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "fewstep/models/denoiser.h"

namespace fewstep {

/// τ(i) above: host float64 time of (possibly half-integer) index i on the N-step grid of [t_lo, t_hi].
double progressive_grid_time(double i, int64_t steps, double t_lo, double t_hi);

struct ProgressiveTarget {
  at::Tensor target;  ///< x̃, z_t's shape and dtype
  at::Tensor z_mid;   ///< teacher z_{t'} (after the first half of the calls: the first of two)
  at::Tensor z_end;   ///< teacher z_{t''} (last DDIM call); at i = 1 the teacher's x̂ (σ_{t''} = 0)
  at::Tensor t;       ///< [B] float64 (CPU) student times τ(i)
};

/// The Algorithm 2 target for z_t [B, ...] at grid indices `index` ([B] integer tensor, values in
/// 1..steps) of the `steps`-step grid of [t_lo, t_hi]. The teacher is evaluated once per distinct
/// index (the `ddim` stepper takes host times), without autograd. ValueError naming the argument
/// for an index out of range, a shape mismatch or a bad range.
///
/// `substeps` K (even, default 2 = the paper) generalises the teacher's two calls to K DDIM calls on
/// the uniform subdivision τ(i − j/K), j = 1..K; the closed form is the same with z_{t''} the K-th
/// state (at i = 1 the K-th call's x̂). K > 2 gives a target closer to the teacher's ODE at K/2 the
/// cost per target: round 0 of a chain that starts at few steps uses it in place of the rounds it
/// skips (train/progressive_trainer.h, first_round_substeps). z_mid is then the state at τ(i − ½).
ProgressiveTarget progressive_target(const Denoiser& teacher, const at::Tensor& z_t, const at::Tensor& index,
                                     int64_t steps, double t_lo, double t_hi, int64_t substeps = 2);

/// The closed form alone, at host times t (of z_t) and t'' (of z_end), for tests and reuse:
/// (z_end − (σ_{t''}/σ_t) z_t) / (α_{t''} − (σ_{t''}/σ_t) α_t).
at::Tensor progressive_x0_from_two_steps(const NoiseSchedule& schedule, const at::Tensor& z_t,
                                         const at::Tensor& z_end, double t, double t_end);

}  // namespace fewstep
