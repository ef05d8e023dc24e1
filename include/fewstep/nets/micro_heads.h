/// @file nets/micro_heads.h
/// @brief The two small networks of micro-distillation: the residual head N_ψ of g_ψ
///        (micro/exponential_step.h) and the step-size head of h_φ (micro/step_size.h).
///
/// Residual head, forward(x, eps, lambda_s [B], h [B]) → [B, ...] (shape of x); with history,
/// forward(x, eps, d, lambda_s, h, h_prev), cat[x, eps, d] and the sinusoids of all three scalars
/// (history_depth 2: forward(x, eps, d, d2, lambda_s, h, h_prev, h_prev2); 3 adds d3 and h_prev3 likewise):
///   e   = Linear(E → E)(SiLU(Linear(4F → E)(sin/cos(λ_s ω), sin/cos(h ω))))   ω_i = exp(−log(100) i/F)
///   vectors [B, D] ("mlp"):  a = Linear(2D → H)(cat[x, eps]); blocks × MLP block (nets/mlp.h's, e added);
///                            out = Linear(H → D)(SiLU(a))
///   images [B, C, H, W] ("conv"): a = Conv3×3(2C → W)(cat[x, eps]); blocks × residual block
///                            {GN–SiLU–Conv3×3 (dilation 2^i) + Linear(e), GN–SiLU–Conv3×3};
///                            out = Conv3×3(W → C)(SiLU(GN(a)))
/// The output layer starts at zero, so an untrained g_ψ is exactly DDIM. About 100k parameters for
/// 28×28 images with the defaults (width 32, 4 blocks), 30k for 16-D vectors (hidden 64, 3 blocks).
///
/// Coefficient head (residual_kind "coefficients"; same inputs): learned solver coefficients rather
/// than a network of the data. Only the step's scalars are embedded, and the output is linear in the
/// step's vectors,
///   [a, b, c, c2] = Linear(E → 2 + previous)(SiLU(e)),   out = a x + b eps (+ c d (+ c2 d2) with history),
/// so g_ψ becomes a multistep exponential integrator whose weights depend on (λ_s, h, h_prev): with
/// h_φ's learned grid, a teacher-specific solver in the spirit of learned-coefficient samplers
/// (e.g. arXiv 2405.15506 for the grid alone). It cannot overfit the data (about 10k
/// parameters, none per pixel), costs a few multiply-adds per coordinate, and trains on unrolled
/// runs (joint mode) without a residual warm start; untrained it is DDIM (DEIS-2 with history).
///
/// Hybrid head (residual_kind "hybrid"; same inputs): the coefficient head plus the network head
/// (width and blocks as above), out = coefficients(...) + network(...). The network part starts at
/// zero, so a hybrid started from a trained coefficient head (MicroHeadConfig::can_start_from) is that
/// sampler exactly, and training adds what a rule of the step alone cannot express: a correction
/// that depends on the sample.
///
/// Step-size head, forward(features [B, F]) → [B] logits: Linear(F → W)–SiLU–Linear(W → W)–SiLU–
/// Linear(W → 1), output layer zero (an untrained h_φ proposes the uniform share, see step_size.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/nets/network.h"

namespace fewstep {

struct MicroHeadConfig {
  /// The data's shape without the batch: [D] selects the MLP head, [C, H, W] the convolutional one.
  std::vector<int64_t> sample_shape;
  int64_t width = 0;   ///< hidden width; 0 = 64 for vectors, 32 for images
  int64_t blocks = 0;  ///< residual blocks; 0 = 3 for vectors, 4 for images
  int64_t frequencies = 16;  ///< sinusoid frequencies per scalar input (λ_s and h)
  int64_t embed = 64;        ///< embedding width E
  int64_t groups = 8;        ///< GroupNorm groups (images)
  int64_t step_features = 5; ///< inputs of the step-size head (micro/step_size.h's features)
  int64_t step_width = 32;
  /// The residual head also takes the previous evaluation (micro/exponential_step.h): inputs
  /// (x, eps, d = eps − eps_prev, lambda_s, h, h_prev), 3 data channels and 3 embedded scalars.
  bool history = false;
  /// With history: how many previous evaluations the head sees, 1 to max_history_depth. Depth 2 also
  /// takes d2 = eps_prev − eps_prev2 and h_prev2 = λ_prev − λ_prev2 (4 data inputs, 4 embedded
  /// scalars), depth 3 likewise d3 and h_prev3; the base term stays DEIS-2, so an untrained head is the
  /// same sampler at any depth.
  int64_t history_depth = 1;
  static constexpr int64_t max_history_depth = 3;
  /// "network" (the conv/MLP head above), "coefficients" (the coefficient head above) or "hybrid"
  /// (their sum).
  std::string residual_kind = "network";
  /// Previous evaluations the residual head takes: 0 without history, else history_depth.
  int64_t previous_evaluations() const { return history ? history_depth : 0; }
  /// ValueError naming the field.
  void validate() const;
  /// The settings as "key=value, ..." (checkpoint compatibility checks).
  std::string describe() const;
  /// Whether heads built with `from` can start heads built with these settings (a trainer's init) as
  /// the same sampler: the same settings; or a coefficient head starting the coefficient part of a
  /// hybrid one; or, with history, a shallower head starting a deeper one (the new inputs' weights
  /// start at zero); the other settings (step embedding, width, step-size head) agreeing.
  bool can_start_from(const MicroHeadConfig& from) const;
};

/// Builds N_ψ with parameters drawn from a CPU generator seeded with `seed` (output layer zero).
ScriptNet make_residual_head(const MicroHeadConfig& config, uint64_t seed);
/// Copies `source` (a residual head built with `from`) into `target` (built with `to`): all of it, or
/// into the coefficient part of a hybrid `target`; into a deeper `target`, each weight fills the
/// leading part of its (wider) counterpart and the rest, the new inputs' weights, is zero. ValueError
/// naming both settings unless to.can_start_from(from).
void copy_residual_head(const MicroHeadConfig& from, const torch::jit::Module& source, const MicroHeadConfig& to,
                        torch::jit::Module& target);
/// Builds the step-size head (output layer zero).
ScriptNet make_step_size_head(const MicroHeadConfig& config, uint64_t seed);

/// Floating-point operations of one pass per sample (2 per multiply-add of the linear and convolution
/// layers; norms and activations, a few percent, are not counted): the accounting beside NFE.
int64_t residual_head_flops(const MicroHeadConfig& config);
int64_t step_size_head_flops(const MicroHeadConfig& config);

}  // namespace fewstep
