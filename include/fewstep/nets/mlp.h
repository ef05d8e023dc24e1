/// @file nets/mlp.h
/// @brief Time-conditioned residual MLP for low-dimensional data (Gaussian-mixture teachers).
///
/// forward(x [B, dim], t) → [B, dim]:
///   e = TimeEmbedding(t)                          sinusoidal(t·time_multiplier) → Linear → SiLU → Linear
///   h = Linear(dim → hidden)(x)
///   blocks × { h = h + Linear(SiLU(Linear(SiLU(h)) + Linear(SiLU(e)))) }
///   out = Linear(hidden → dim)(SiLU(h))
/// Parameters, with F = time_frequencies, E = time_embed_dim, H = hidden, D = dim, C = num_classes:
///   (F E + E) + (E² + E) + (D H + H) + blocks·(2(H² + H) + E H + H) + (H D + D) [+ (C + 1) E]
/// = 174082 for the defaults (D = 2), 177680 for D = 16.
#pragma once

#include <cstdint>

#include "fewstep/nets/network.h"

namespace fewstep {

struct MlpConfig {
  int64_t dim = 2;
  int64_t hidden = 128;
  int64_t blocks = 3;
  int64_t time_frequencies = 64;  // sin + cos features (even)
  int64_t time_embed_dim = 128;
  double time_multiplier = 1000.0;  // t ∈ [0, 1] spans the sinusoids' periods like DDPM's step index
  /// > 0: forward(x, t, y: Optional[Tensor] = None) with a label embedding; label C is "no class"
  /// (classifier-free guidance's null label), used when y is None.
  int64_t num_classes = 0;
  /// true: forward(..., w: Optional[Tensor] = None) also takes a guidance weight w (scalar or [B]),
  /// embedded sinusoidally and added to the time embedding through a zero-initialised layer, so a
  /// network whose other weights are copied from a teacher starts equal to it (guidance distillation,
  /// Meng et al. 2023). w = None adds nothing.
  bool guidance_input = false;
};

/// Builds the network with parameters drawn from a CPU generator seeded with `seed`.
/// ValueError naming the field for a bad config.
ScriptNet make_mlp(const MlpConfig& config, uint64_t seed);

/// The closed form above (no module is built).
int64_t mlp_parameter_count(const MlpConfig& config);

}  // namespace fewstep
