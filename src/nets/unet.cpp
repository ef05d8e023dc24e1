#include "fewstep/nets/unet.h"

#include <torch/script.h>

#include <cmath>
#include <sstream>

#include "fewstep/core/check.h"
#include "script_builder.h"

namespace fewstep {

namespace {

using nets_detail::ScriptBuilder;

void check_config(const UNetConfig& c) {
  FEWSTEP_CHECK_VALUE(c.in_channels >= 1, "UNetConfig.in_channels must be >= 1, got ", c.in_channels);
  FEWSTEP_CHECK_VALUE(c.base_channels >= 1, "UNetConfig.base_channels must be >= 1, got ", c.base_channels);
  FEWSTEP_CHECK_VALUE(!c.channel_mult.empty(), "UNetConfig.channel_mult must have at least one level");
  FEWSTEP_CHECK_VALUE(c.res_blocks >= 1, "UNetConfig.res_blocks must be >= 1, got ", c.res_blocks);
  FEWSTEP_CHECK_VALUE(c.groups >= 1, "UNetConfig.groups must be >= 1, got ", c.groups);
  for (size_t l = 0; l < c.channel_mult.size(); ++l) {
    const int64_t ch = c.base_channels * c.channel_mult[l];
    FEWSTEP_CHECK_VALUE(c.channel_mult[l] >= 1 && ch % c.groups == 0, "UNetConfig.channel_mult[", l,
                        "] = ", c.channel_mult[l], " gives ", ch, " channels, which UNetConfig.groups = ", c.groups,
                        " must divide");
  }
  const int64_t factor = int64_t{1} << (c.channel_mult.size() - 1);
  FEWSTEP_CHECK_VALUE(c.image_size >= factor && c.image_size % factor == 0, "UNetConfig.image_size = ", c.image_size,
                      " must be divisible by 2^(levels - 1) = ", factor, " (levels = channel_mult.size())");
}

// conv(SiLU(GN(x))) + time projection, conv(SiLU(GN(h))), plus a (1×1-projected) skip.
torch::jit::Module res_block(ScriptBuilder& b, int64_t in, int64_t out, int64_t embed, int64_t groups) {
  torch::jit::Module m = b.module("ResBlock");
  b.norm(m, "norm1", in);
  b.conv(m, "conv1", in, out, 3);
  b.linear(m, "time", embed, out);
  b.norm(m, "norm2", out);
  b.conv(m, "conv2", out, out, 3);
  if (in != out) b.conv(m, "skip", in, out, 1);
  std::ostringstream src;
  src << "def forward(self, x: Tensor, emb: Tensor) -> Tensor:\n"
      << "    h = torch.silu(torch.group_norm(x, " << groups << ", self.norm1_weight, self.norm1_bias, 1e-5))\n"
      << "    h = torch.conv2d(h, self.conv1_weight, self.conv1_bias, [1, 1], [1, 1])\n"
      << "    h = h + torch.linear(torch.silu(emb), self.time_weight, self.time_bias).unsqueeze(-1).unsqueeze(-1)\n"
      << "    h = torch.silu(torch.group_norm(h, " << groups << ", self.norm2_weight, self.norm2_bias, 1e-5))\n"
      << "    h = torch.conv2d(h, self.conv2_weight, self.conv2_bias, [1, 1], [1, 1])\n";
  if (in != out) {
    src << "    return torch.conv2d(x, self.skip_weight, self.skip_bias) + h\n";
  } else {
    src << "    return x + h\n";
  }
  m.define(src.str());
  return m;
}

// Single-head self-attention over the H·W positions, residual.
torch::jit::Module attention(ScriptBuilder& b, int64_t channels, int64_t groups) {
  torch::jit::Module m = b.module("Attention");
  b.norm(m, "norm", channels);
  b.conv(m, "qkv", channels, 3 * channels, 1);
  b.conv(m, "proj", channels, channels, 1);
  std::ostringstream src;
  src << "def forward(self, x: Tensor) -> Tensor:\n"
      << "    b = x.size(0)\n"
      << "    c = x.size(1)\n"
      << "    n = x.size(2) * x.size(3)\n"
      << "    h = torch.group_norm(x, " << groups << ", self.norm_weight, self.norm_bias, 1e-5)\n"
      << "    qkv = torch.conv2d(h, self.qkv_weight, self.qkv_bias).reshape([b, 3, c, n])\n"
      << "    q = qkv.select(1, 0)\n"
      << "    k = qkv.select(1, 1)\n"
      << "    v = qkv.select(1, 2)\n"
      << "    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * "
      << nets_detail::float_literal(1.0 / std::sqrt(channels)) << ", -1)\n"
      << "    out = torch.bmm(v, w.transpose(1, 2)).reshape(x.size())\n"
      << "    return x + torch.conv2d(out, self.proj_weight, self.proj_bias)\n";
  m.define(src.str());
  return m;
}

}  // namespace

ScriptNet make_unet(const UNetConfig& c, uint64_t seed) {
  check_config(c);
  ScriptBuilder b(seed);
  auto net = std::make_shared<torch::jit::Module>(b.module("TimeUNet"));
  const int64_t levels = static_cast<int64_t>(c.channel_mult.size());
  const int64_t embed = 4 * c.base_channels;
  const int64_t g = c.groups;
  auto ch = [&c](int64_t l) { return c.base_channels * c.channel_mult[static_cast<size_t>(l)]; };
  auto add = [&net](const std::string& name, const torch::jit::Module& m) { net->register_module(name, m); };

  add("time_embed", nets_detail::time_embedding(b, c.time_frequencies, embed, c.time_multiplier, c.num_classes,
                                                                 c.guidance_input));
  b.conv(*net, "conv_in", c.in_channels, ch(0), 3);

  std::ostringstream src;
  src << nets_detail::forward_signature(c.num_classes, c.guidance_input);
  src << "    h = torch.conv2d(x, self.conv_in_weight, self.conv_in_bias, [1, 1], [1, 1])\n";

  // Down path. Registration order is the parameter order (optimiser state, checkpoints).
  int64_t channels = ch(0);
  const int64_t lowest = levels - 1;
  for (int64_t l = 0; l < levels; ++l) {
    for (int64_t i = 0; i < c.res_blocks; ++i) {
      const std::string name = "down" + std::to_string(l) + "_" + std::to_string(i);
      add(name, res_block(b, channels, ch(l), embed, g));
      channels = ch(l);
      src << "    h = self." << name << ".forward(h, emb)\n";
      if (c.attention && l == lowest) {
        add(name + "_attn", attention(b, channels, g));
        src << "    h = self." << name << "_attn.forward(h)\n";
      }
    }
    src << "    s" << l << " = h\n";
    if (l < lowest) {
      b.conv(*net, "downsample" + std::to_string(l), channels, channels, 3);
      src << "    h = torch.conv2d(h, self.downsample" << l << "_weight, self.downsample" << l
          << "_bias, [2, 2], [1, 1])\n";
    }
  }

  // Middle, at the lowest resolution.
  add("mid0", res_block(b, channels, channels, embed, g));
  src << "    h = self.mid0.forward(h, emb)\n";
  if (c.attention) {
    add("mid_attn", attention(b, channels, g));
    src << "    h = self.mid_attn.forward(h)\n";
  }
  add("mid1", res_block(b, channels, channels, embed, g));
  src << "    h = self.mid1.forward(h, emb)\n";

  // Up path: the first block of each level takes the level's skip.
  for (int64_t l = lowest; l >= 0; --l) {
    for (int64_t i = 0; i < c.res_blocks; ++i) {
      const std::string name = "up" + std::to_string(l) + "_" + std::to_string(i);
      const int64_t in = i == 0 ? channels + ch(l) : channels;
      add(name, res_block(b, in, ch(l), embed, g));
      channels = ch(l);
      if (i == 0) {
        src << "    h = self." << name << ".forward(torch.cat([h, s" << l << "], 1), emb)\n";
      } else {
        src << "    h = self." << name << ".forward(h, emb)\n";
      }
      if (c.attention && l == lowest) {
        add(name + "_attn", attention(b, channels, g));
        src << "    h = self." << name << "_attn.forward(h)\n";
      }
    }
    if (l > 0) {
      b.conv(*net, "upsample" + std::to_string(l), channels, channels, 3);
      src << "    h = torch.upsample_nearest2d(h, [s" << l - 1 << ".size(2), s" << l - 1 << ".size(3)])\n"
          << "    h = torch.conv2d(h, self.upsample" << l << "_weight, self.upsample" << l
          << "_bias, [1, 1], [1, 1])\n";
    }
  }

  b.norm(*net, "norm_out", channels);
  b.conv(*net, "conv_out", channels, c.in_channels, 3);
  src << "    h = torch.silu(torch.group_norm(h, " << g << ", self.norm_out_weight, self.norm_out_bias, 1e-5))\n"
      << "    return torch.conv2d(h, self.conv_out_weight, self.conv_out_bias, [1, 1], [1, 1])\n";
  net->define(src.str());
  return net;
}

}  // namespace fewstep
