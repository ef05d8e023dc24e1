/// @file psld/splitting.h
/// @brief Splitting integrators for the PSLD reverse SDE: naive OBA, BAO, OBAB, BAOAB and the
/// Reduced OBA, BAO, OBAB of Pandey, Rudolph & Mandt (arXiv 2402.07211 §3; the longer 2310.07894 §3.2).
///
/// The reverse SDE of psld/sampler.h is split, per coordinate and in the β-clock r, into the
/// reversals of the forward process's Hamiltonian and Ornstein–Uhlenbeck parts (docs/psld.md
/// eqs. 5–9 derive it):
///   A (position, Hamiltonian):  dx = ½(−M⁻¹m [+ 2Γ s_x]) dr                       (m frozen)
///   B (momentum, Hamiltonian):  dm = ½( x    [+ 2Mν s_m]) dr                       (x frozen)
///   O (friction and noise):     dx = ½(Γx [+ 2Γ s_x]) dr + λ_s √Γ dW_x,
///                               dm = ½(νm [+ 2Mν s_m]) dr + √(Mν) dW_m
/// whose sum (λ_s = 1) is the reverse SDE. Each score term (bracketed) goes to exactly one piece:
/// the option `score_x` ∈ {"A", "O"} places the position score, `score_m` ∈ {"B", "O"} the
/// momentum score. The default, `score_x = "A"`, `score_m = "O"`, keeps the momentum score with
/// the momentum friction and noise it reverses; docs/psld.md shows why this is the split whose
/// figures follow the paper's ordering and why `score_m = "B"` (the earlier default here) loses
/// stability at b ≳ 0.3. A and B are one Euler step each; O is solved exactly when it holds no
/// score and by one Euler–Maruyama step when it does (psld/rules.h). A word such as OBA applies
/// O, then B, then A over the step b = B(s) − B(t); in OBAB and BAOAB the letters used twice take
/// b/2 each.
///
/// Naive schemes (`psld_noba`, `psld_nbao`, `psld_nobab`, `psld_nbaoab`) evaluate the score afresh
/// for every piece that holds a score term, at the current (x, m) and the step's start time s
/// ("T − t" in the paper's reverse time), λ_s = 1: with the default split 2, 2, 2 and 3
/// evaluations per step (A and O; BAOAB: A, O, A).
///
/// Reduced schemes (paper §3, "Reduced Splitting Integrators") change three things:
///  - score re-use (option `reuse`, default true): one evaluation per step, made where the first
///    piece needs it and re-used by the later ones (1 NFE/step). When the step's last piece holds
///    a score (OBAB with `score_m = "B"`), that piece evaluates afresh and its score is carried
///    to the next step, where it serves the pieces before the last (1 NFE/step + 1 at the start);
///  - time conditioning T − (t + h) (option `end_time`, OBAB with `score_m = "B"` only, default
///    true): that carried evaluation, made after the full A step, is conditioned on the step's
///    end time t instead of s;
///  - λ_s (option `lambda_s`, default 1): the position-space noise of O is multiplied by λ_s.
/// With reuse = false, λ_s = 1 and end_time = false a reduced scheme is its naive scheme, draw for
/// draw (tests check this to round-off). All schemes are weak order 1.
#pragma once

#include <string>

#include "fewstep/psld/sampler.h"

namespace fewstep {

enum class SplittingScheme { OBA, BAO, OBAB, BAOAB };

/// "OBA", "BAO", "OBAB", "BAOAB".
std::string to_string(SplittingScheme scheme);

/// Where the two score terms of the reverse SDE go (options `score_x`, `score_m`).
struct ScorePlacement {
  bool position_in_o = false;  ///< s_x in O (with the position friction and noise), else in A
  bool momentum_in_o = true;   ///< s_m in O (with the momentum friction and noise), else in B
  /// Reads `score_x` ("A" | "O") and `score_m` ("B" | "O"); ValueError naming the option otherwise.
  static ScorePlacement from_options(const Options& options, const std::string& owner);
  /// Does piece 'A', 'B' or 'O' hold a score term?
  bool uses_score(char piece) const;
};

/// The naive splitting integrators: every piece holding a score term evaluates it at (x, m; s).
/// Options {score_x, score_m}.
class PsldNaiveSplitting final : public PsldSampler {
 public:
  explicit PsldNaiveSplitting(SplittingScheme scheme, const Options& options = {});
  const PsldSamplerTraits& traits() const override { return traits_; }
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
  ScorePlacement placement() const { return placement_; }

 private:
  SplittingScheme scheme_;
  ScorePlacement placement_;
  PsldSamplerTraits traits_;
};

/// The reduced splitting integrators (OBA, BAO, OBAB) with options
/// {reuse: bool = true, lambda_s: double = 1, end_time: bool = true (OBAB with score_m = "B"), score_x, score_m}.
class PsldReducedSplitting final : public PsldSampler {
 public:
  explicit PsldReducedSplitting(SplittingScheme scheme, const Options& options = {});
  const PsldSamplerTraits& traits() const override { return traits_; }
  PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                      const PsldStepContext& ctx) const override;
  bool reuse() const { return reuse_; }
  double lambda_s() const { return lambda_s_; }
  bool end_time() const { return end_time_; }
  ScorePlacement placement() const { return placement_; }

 private:
  SplittingScheme scheme_;
  ScorePlacement placement_;
  bool reuse_ = true;
  double lambda_s_ = 1.0;
  bool end_time_ = true;
  bool carry_ = false;  ///< the step's last piece holds a score, evaluated afresh and carried on
  PsldSamplerTraits traits_;
};

}  // namespace fewstep
