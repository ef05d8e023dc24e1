#include "fewstep/nets/mlp.h"

#include <torch/script.h>

#include <sstream>

#include "fewstep/core/check.h"
#include "script_builder.h"

namespace fewstep {

namespace {

void check_config(const MlpConfig& c) {
  FEWSTEP_CHECK_VALUE(c.dim >= 1, "MlpConfig.dim must be >= 1, got ", c.dim);
  FEWSTEP_CHECK_VALUE(c.hidden >= 1, "MlpConfig.hidden must be >= 1, got ", c.hidden);
  FEWSTEP_CHECK_VALUE(c.blocks >= 0, "MlpConfig.blocks must be >= 0, got ", c.blocks);
}

}  // namespace

ScriptNet make_mlp(const MlpConfig& c, uint64_t seed) {
  check_config(c);
  nets_detail::ScriptBuilder b(seed);
  auto net = std::make_shared<torch::jit::Module>(b.module("TimeMLP"));
  net->register_module("time_embed", nets_detail::time_embedding(b, c.time_frequencies, c.time_embed_dim,
                                                                 c.time_multiplier, c.num_classes,
                                                                 c.guidance_input));
  b.linear(*net, "fc_in", c.dim, c.hidden);
  for (int64_t i = 0; i < c.blocks; ++i)
    net->register_module("block" + std::to_string(i), nets_detail::mlp_block(b, c.hidden, c.time_embed_dim));
  b.linear(*net, "fc_out", c.hidden, c.dim);

  std::ostringstream src;
  src << nets_detail::forward_signature(c.num_classes, c.guidance_input);
  src << "    h = torch.linear(x, self.fc_in_weight, self.fc_in_bias)\n";
  for (int64_t i = 0; i < c.blocks; ++i) src << "    h = self.block" << i << ".forward(h, emb)\n";
  src << "    return torch.linear(torch.silu(h), self.fc_out_weight, self.fc_out_bias)\n";
  net->define(src.str());
  return net;
}

int64_t mlp_parameter_count(const MlpConfig& c) {
  check_config(c);
  const int64_t f = c.time_frequencies, e = c.time_embed_dim, h = c.hidden, d = c.dim;
  const int64_t time = (f * e + e) + (e * e + e) + (c.num_classes > 0 ? (c.num_classes + 1) * e : 0) +
                       (c.guidance_input ? (f * e + e) + (e * e + e) : 0);
  const int64_t per_block = 2 * (h * h + h) + (e * h + h);
  return time + (d * h + h) + c.blocks * per_block + (h * d + d);
}

}  // namespace fewstep
