/// @file psld/splitting.h
/// @brief Splitting integrators for the PSLD reverse SDE: naive OBA, BAO, OBAB, BAOAB and the
/// Reduced OBA, BAO, OBAB of Pandey, Rudolph & Mandt (arXiv 2402.07211; derivations in 2310.07894).
///
/// The reverse SDE of psld/sampler.h is split, per coordinate and in the β-clock r, into
///   A (position):  dx = ½(−M⁻¹m + 2Γ s_x(x, m)) dr                       (m frozen)
///   B (momentum):  dm = ½(x + 2Mν s_m(x, m)) dr                          (x frozen)
///   O (the linear, noisy part, an Ornstein–Uhlenbeck process in reverse time):
///                  dx = ½Γx dr + λ_s √Γ dW_x,   dm = ½ν m dr + √(Mν) dW_m
/// whose sum (λ_s = 1) is the reverse SDE. O is solved exactly,
///   x' = e^{Γb/2} x + λ_s √(e^{Γb} − 1) η_x,   m' = e^{νb/2} m + √(M (e^{νb} − 1)) η_m,
/// A and B by one Euler step each,
///   A(b): x' = x + (b/2)(−M⁻¹m + 2Γ s_x),   B(b): m' = m + (b/2)(x + 2Mν s_m),
/// and a word such as OBA applies O, then B, then A over the step b = B(s) − B(t); in OBAB and
/// BAOAB the letters used twice take b/2 each (Strang / Leimkuhler–Matthews arrangement).
/// (λ_s scales the noise of O in position space, paper §3 "controlling the noise injection".)
///
/// Naive schemes (`psld_noba`, `psld_nbao`, `psld_nobab`, `psld_nbaoab`) evaluate the score afresh
/// for every A and B at the current (x, m), always conditioned on the step's start time s
/// ("T − t" in the paper's reverse time): 2, 2, 3 and 4 evaluations per step, λ_s = 1.
///
/// Reduced schemes (paper §3, "Reduced Splitting Integrators") change three things:
///  - score re-use: one evaluation serves a B and the A that follows it, so
///    `psld_roba`:  O(b); s = s(x_O, m_O; s); B(b) with s_m; A(b) with the same s_x        (1 NFE/step)
///    `psld_rbao`:  s = s(x, m; s); B(b) with s_m; A(b) with the same s_x; O(b)          (1 NFE/step)
///    `psld_robab`: O(b); B(b/2) and A(b) with the score carried from the previous step's last
///                  evaluation (first step: evaluated after O at time s); s' = s(x_A, m_B; t);
///                  B(b/2) with s'_m; s' is carried to the next step       (1 NFE/step + 1 at the start)
///  - time conditioning T − (t + h): the evaluation after a full A step of a half-step scheme
///    (`psld_robab`) is conditioned on the step's end time t instead of s (option `end_time`);
///  - λ_s: the position-space noise of O is multiplied by λ_s (option `lambda_s`, default 1).
/// With reuse = false, λ_s = 1 and end_time = false a reduced scheme is its naive scheme, draw for
/// draw (tests check this to round-off). All schemes are weak order 1 (Euler substeps for A, B).
#pragma once

#include <string>

#include "fewstep/psld/sampler.h"

namespace fewstep {

enum class SplittingScheme { OBA, BAO, OBAB, BAOAB };

/// "OBA", "BAO", "OBAB", "BAOAB" and back.
std::string to_string(SplittingScheme scheme);

/// The naive splitting integrators: every A and B evaluates the score at (x, m; s).
class PsldNaiveSplitting final : public PsldSampler {
 public:
  explicit PsldNaiveSplitting(SplittingScheme scheme, const Options& options = {});
  const PsldSamplerTraits& traits() const override { return traits_; }
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;

 private:
  SplittingScheme scheme_;
  PsldSamplerTraits traits_;
};

/// The reduced splitting integrators (OBA, BAO, OBAB) with options
/// {reuse: bool = true, lambda_s: double = 1, end_time: bool = true (OBAB only)}.
class PsldReducedSplitting final : public PsldSampler {
 public:
  explicit PsldReducedSplitting(SplittingScheme scheme, const Options& options = {});
  const PsldSamplerTraits& traits() const override { return traits_; }
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
  bool reuse() const { return reuse_; }
  double lambda_s() const { return lambda_s_; }
  bool end_time() const { return end_time_; }

 private:
  SplittingScheme scheme_;
  bool reuse_ = true;
  double lambda_s_ = 1.0;
  bool end_time_ = true;
  PsldSamplerTraits traits_;
};

}  // namespace fewstep
