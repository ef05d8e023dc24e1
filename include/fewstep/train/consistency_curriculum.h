/// @file train/consistency_curriculum.h
/// @brief Discretisation, EMA and noise-level curricula of consistency training.
///
/// Consistency training (Song et al. 2023, arXiv 2303.01469, Appendix C, "CT"), with K the total
/// number of training steps, s_0 / s_1 the initial / final discretisation and μ_0 the initial EMA
/// rate of the target network:
///   N(k) = ⌈√(k/K · ((s_1 + 1)² − s_0²) + s_0²) − 1⌉ + 1,        μ(k) = exp(s_0 log μ_0 / N(k)).
/// Improved consistency training (Song & Dhariwal 2023, arXiv 2310.14189, "iCT"), eq. (8):
///   N(k) = min(s_0 · 2^⌊k/K'⌋, s_1) + 1,  K' = ⌊K / (⌊log₂⌊s_1/s_0⌋⌋ + 1)⌋,
/// no target EMA (μ = 0: the target is the online network without gradient), and the noise level
/// index i ∈ {0..N−2} drawn with the discretised lognormal of eq. (10),
///   p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2 P_std)) − erf((ln σ_i − P_mean)/(√2 P_std)),
/// with the loss weight λ(σ_i) = 1/(σ_{i+1} − σ_i) (eq. (9)). The σ_i are the N points of the Karras
/// ρ-grid (ρ = 7) between σ_min and σ_max — here the VE-equivalent levels σ̃ = σ/α of the schedule,
/// so the same formulas serve VP schedules.
/// Easy consistency tuning (Geng et al. 2024, arXiv 2406.14548, "ECT", §3 and the mapping function
/// of its continuous-time training): the pair (t, r) is continuous, t ~ lognormal(P_mean, P_std) in σ̃
/// and r = t (1 − n(t)/q^(s+1)), clamped at 0, with n(t) = 1 + k·sigmoid(−b t) and s = the stage,
/// s = ⌊step · stages / K⌋: at stage 0 most pairs have r = 0 (the target is the data: diffusion
/// training, where the tuning starts from a diffusion model), and Δt = t − r shrinks by q at every stage.
#pragma once

#include <cstdint>
#include <vector>

namespace fewstep {

struct CtCurriculum {
  int64_t s0 = 2, s1 = 150;  ///< the paper's CIFAR-10 values
  double mu0 = 0.9;
  int64_t total_steps = 1;  ///< K
  int64_t points(int64_t k) const;   ///< N(k)
  double target_ema(int64_t k) const;  ///< μ(k)
  void validate() const;  ///< ValueError naming the field
};

struct IctCurriculum {
  int64_t s0 = 10, s1 = 1280;  ///< Song & Dhariwal's values
  int64_t total_steps = 1;     ///< K
  int64_t points(int64_t k) const;  ///< N(k)
  void validate() const;
};

struct EctCurriculum {
  double q = 2.0;            ///< Δt shrinks by q per stage
  double k = 8.0, b = 1.0;   ///< n(t) = 1 + k sigmoid(−b t)
  int64_t stages = 8;        ///< stages over the run
  int64_t total_steps = 1;   ///< K
  int64_t stage(int64_t step) const;             ///< ⌊step · stages / K⌋, at most stages − 1
  double r(double t, int64_t step) const;       ///< the paired level r(t) >= 0 (σ̃ units)
  void validate() const;  ///< ValueError naming the field
};

/// The probabilities p(i), i = 0..N−2, of iCT's discretised lognormal over the increasing levels
/// `sigmas` (N values). ValueError for fewer than 2 levels or a non-positive P_std.
std::vector<double> lognormal_index_probabilities(const std::vector<double>& sigmas, double p_mean = -1.1,
                                                  double p_std = 2.0);

}  // namespace fewstep
