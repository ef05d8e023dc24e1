/// @file nets/unet.h
/// @brief Small time-conditioned UNet for 28×28 images (the Fashion-MNIST teacher).
///
/// DDPM-style (Ho et al. 2020), reduced to fit a 2-core CPU. With c_l = base_channels·channel_mult[l]
/// and levels l = 0..L−1 at resolutions 28, 14, 7 (each halved by a stride-2 3×3 convolution):
///   conv_in 3×3 (in_channels → c_0)
///   down l:  res_blocks × ResBlock(→ c_l) [+ attention at the lowest level]; skip s_l; downsample
///   middle:  ResBlock, attention (if enabled), ResBlock at c_{L−1}
///   up l:    ResBlock(concat(h, s_l) → c_l), then res_blocks − 1 × ResBlock [+ attention at the
///            lowest level]; nearest ×2 upsampling + 3×3 convolution to the next level's size
///   out:     GroupNorm, SiLU, conv 3×3 (c_0 → in_channels)
/// ResBlock(x, e): h = conv(SiLU(GN(x))) + Linear(SiLU(e)); h = conv(SiLU(GN(h))); x' = skip(x) + h,
/// skip a 1×1 convolution when channels change. Attention: single-head self-attention over the
/// 7×7 = 49 positions after GroupNorm, 1×1 q/k/v and output projections, residual.
/// Time embedding as in nets/mlp.h with width 4·base_channels.
///
/// Parameter counts: 831,329 with the defaults (base 32, mult {1, 2, 2}, 1 res block, attention);
/// 1,239,841 with res_blocks = 2; 470,281 with base_channels = 24.
#pragma once

#include <cstdint>
#include <vector>

#include "fewstep/nets/network.h"

namespace fewstep {

struct UNetConfig {
  int64_t in_channels = 1;
  int64_t image_size = 28;  // must be divisible by 2^(levels − 1)
  int64_t base_channels = 32;
  std::vector<int64_t> channel_mult = {1, 2, 2};  // one entry per resolution level
  int64_t res_blocks = 1;                         // per level on the way down (the way up has the same)
  bool attention = true;                          // self-attention at the lowest resolution and in the middle
  int64_t groups = 8;                             // GroupNorm groups (must divide every channel count)
  int64_t time_frequencies = 64;
  double time_multiplier = 1000.0;
  /// > 0: forward(x, t, y: Optional[Tensor] = None) with a label embedding and a null class (see MlpConfig).
  int64_t num_classes = 0;
  /// true: forward(..., w: Optional[Tensor] = None) also takes a guidance weight w (scalar or [B]),
  /// embedded sinusoidally and added to the time embedding through a zero-initialised layer, so a
  /// network whose other weights are copied from a teacher starts equal to it (guidance distillation,
  /// Meng et al. 2023). w = None adds nothing.
  bool guidance_input = false;
};

/// Builds the network with parameters drawn from a CPU generator seeded with `seed`.
/// ValueError naming the field for a bad config.
ScriptNet make_unet(const UNetConfig& config, uint64_t seed);

}  // namespace fewstep
