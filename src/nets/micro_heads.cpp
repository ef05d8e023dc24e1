#include "fewstep/nets/micro_heads.h"

#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "fewstep/core/check.h"
#include "script_builder.h"

namespace fewstep {

namespace {

using nets_detail::ScriptBuilder;

bool is_image(const MicroHeadConfig& c) { return c.sample_shape.size() == 3; }
int64_t width(const MicroHeadConfig& c) { return c.width > 0 ? c.width : (is_image(c) ? 32 : 64); }
int64_t blocks(const MicroHeadConfig& c) { return c.blocks > 0 ? c.blocks : (is_image(c) ? 4 : 3); }

void zero(torch::jit::Module& m, const std::string& name) {
  at::NoGradGuard no_grad;
  m.attr(name + "_weight").toTensor().zero_();
  m.attr(name + "_bias").toTensor().zero_();
}

// The embedded scalars, in the order of the heads' forward: λ_s, h, then one step length per previous
// evaluation. The embedding's forward always takes at least three (without history h_prev is not used).
const std::vector<std::string> kScalars = {"lambda_s", "h", "h_prev", "h_prev2", "h_prev3"};
int64_t embedded_scalars(const MicroHeadConfig& c) { return 2 + c.previous_evaluations(); }
std::string scalar_parameters(int64_t count) {
  std::string out;
  for (int64_t i = 0; i < std::max<int64_t>(count, 3); ++i) out += (i ? ", " : "") + kScalars[i] + ": Tensor";
  return out;
}

// Embedding of (λ_s, h, h_prev…): sinusoids of each, Linear–SiLU–Linear.
torch::jit::Module step_embedding(ScriptBuilder& b, int64_t frequencies, int64_t embed, int64_t scalars) {
  torch::jit::Module m = b.module("StepEmbedding");
  // Periods 2π … 200π: λ ∈ [−10, 10] and h ∈ (0, 20] stay inside one period of the slowest sinusoid.
  m.register_buffer("freqs",
                    at::exp(at::arange(frequencies, at::kDouble) * (-std::log(100.0) / frequencies)).to(at::kFloat));
  b.linear(m, "fc1", 2 * scalars * frequencies, embed);
  b.linear(m, "fc2", embed, embed);
  std::ostringstream src;
  src << "def forward(self, " << scalar_parameters(scalars) << ", like: Tensor) -> Tensor:\n"
      << "    f = self.freqs.to(like.dtype).unsqueeze(0)\n";
  std::string waves;
  for (int64_t i = 0; i < scalars; ++i) {
    src << "    a" << i << " = " << kScalars[i] << ".to(like.device, like.dtype).reshape([-1, 1]) * f\n";
    const std::string a = "a" + std::to_string(i);
    waves += (i ? ", " : "") + ("torch.sin(" + a + "), torch.cos(" + a + ")");
  }
  src << "    e = torch.cat([" << waves << "], 1)\n"
      << "    e = torch.linear(e, self.fc1_weight, self.fc1_bias)\n"
      << "    return torch.linear(torch.silu(e), self.fc2_weight, self.fc2_bias)\n";
  m.define(src.str());
  return m;
}

// GN–SiLU–Conv3×3(dilated) + Linear(e), GN–SiLU–Conv3×3, residual.
torch::jit::Module conv_block(ScriptBuilder& b, int64_t channels, int64_t embed, int64_t groups, int64_t dilation) {
  torch::jit::Module m = b.module("MicroConvBlock");
  b.norm(m, "norm1", channels);
  b.conv(m, "conv1", channels, channels, 3);
  b.linear(m, "time", embed, channels);
  b.norm(m, "norm2", channels);
  b.conv(m, "conv2", channels, channels, 3);
  std::ostringstream src;
  src << "def forward(self, x: Tensor, emb: Tensor) -> Tensor:\n"
      << "    h = torch.silu(torch.group_norm(x, " << groups << ", self.norm1_weight, self.norm1_bias, 1e-5))\n"
      << "    h = torch.conv2d(h, self.conv1_weight, self.conv1_bias, [1, 1], [" << dilation << ", " << dilation
      << "], [" << dilation << ", " << dilation << "])\n"
      << "    h = h + torch.linear(torch.silu(emb), self.time_weight, self.time_bias).unsqueeze(-1).unsqueeze(-1)\n"
      << "    h = torch.silu(torch.group_norm(h, " << groups << ", self.norm2_weight, self.norm2_bias, 1e-5))\n"
      << "    return x + torch.conv2d(h, self.conv2_weight, self.conv2_bias, [1, 1], [1, 1])\n";
  m.define(src.str());
  return m;
}

// The registered residual head kinds (below, after the builders).
bool is_residual_kind(const std::string& name);
std::string residual_kind_names();  // "'network', 'coefficients', 'hybrid'"

}  // namespace

void MicroHeadConfig::validate() const {
  FEWSTEP_CHECK_VALUE(sample_shape.size() == 1 || sample_shape.size() == 3,
                      "MicroHeadConfig.sample_shape must be [D] (vectors) or [C, H, W] (images), got ",
                      c10::IntArrayRef(sample_shape));
  for (int64_t d : sample_shape)
    FEWSTEP_CHECK_VALUE(d >= 1, "MicroHeadConfig.sample_shape has a non-positive size: ", c10::IntArrayRef(sample_shape));
  FEWSTEP_CHECK_VALUE(width >= 0, "MicroHeadConfig.width must be >= 0 (0 = default), got ", width);
  FEWSTEP_CHECK_VALUE(blocks >= 0, "MicroHeadConfig.blocks must be >= 0 (0 = default), got ", blocks);
  FEWSTEP_CHECK_VALUE(frequencies >= 1, "MicroHeadConfig.frequencies must be >= 1, got ", frequencies);
  FEWSTEP_CHECK_VALUE(embed >= 1, "MicroHeadConfig.embed must be >= 1, got ", embed);
  FEWSTEP_CHECK_VALUE(step_features >= 1, "MicroHeadConfig.step_features must be >= 1, got ", step_features);
  FEWSTEP_CHECK_VALUE(step_width >= 1, "MicroHeadConfig.step_width must be >= 1, got ", step_width);
  FEWSTEP_CHECK_VALUE(is_residual_kind(residual_kind), "MicroHeadConfig.residual_kind must be one of ",
                      residual_kind_names(), ", got '", residual_kind, "'");
  FEWSTEP_CHECK_VALUE(history_depth >= 1 && history_depth <= max_history_depth,
                      "MicroHeadConfig.history_depth must be between 1 and ", max_history_depth, ", got ",
                      history_depth);
  FEWSTEP_CHECK_VALUE(history || history_depth == 1, "MicroHeadConfig.history_depth = ", history_depth,
                      " needs history = true");
  if (sample_shape.size() == 3)
    FEWSTEP_CHECK_VALUE(groups >= 1 && fewstep::width(*this) % groups == 0, "MicroHeadConfig.groups = ", groups,
                        " must divide the width ", fewstep::width(*this));
}

std::string MicroHeadConfig::describe() const {
  std::ostringstream out;
  out << "sample_shape=" << c10::IntArrayRef(sample_shape) << ", width=" << fewstep::width(*this)
      << ", blocks=" << fewstep::blocks(*this) << ", frequencies=" << frequencies << ", embed=" << embed
      << ", groups=" << groups << ", step_features=" << step_features << ", step_width=" << step_width
      << ", history=" << (history ? "true" : "false");
  // Named only when not the default, so checkpoints written before the field existed still match.
  if (history_depth != 1) out << ", history_depth=" << history_depth;
  if (residual_kind != "network") out << ", residual_kind=" << residual_kind;
  return out.str();
}

namespace {

// The data inputs of the residual heads, in the order of their forward: x, eps, then one difference of
// successive evaluations per previous evaluation (d = eps − eps_prev, d2 = eps_prev − eps_prev2, …).
// Each new input is appended, so a deeper head's weights extend a shallower one's (copy_residual_head).
const std::vector<std::string> kVectors = {"x", "eps", "d", "d2", "d3"};

// "def forward(self, x, eps[, d[, d2]], lambda_s, h[, h_prev[, h_prev2]]) -> Tensor:".
std::string head_signature(const MicroHeadConfig& c) {
  const int64_t vectors = 2 + c.previous_evaluations(), scalars = embedded_scalars(c);
  std::ostringstream src;
  src << "def forward(self";
  for (int64_t i = 0; i < vectors; ++i) src << ", " << kVectors[i] << ": Tensor";
  for (int64_t i = 0; i < scalars; ++i) src << ", " << kScalars[i] << ": Tensor";
  src << ") -> Tensor:\n";
  return src.str();
}

// "x, eps[, d[, d2]], lambda_s, h[, h_prev[, h_prev2]]": the forward's arguments, to pass them on.
std::string head_arguments(const MicroHeadConfig& c) {
  std::string out;
  for (int64_t i = 0; i < 2 + c.previous_evaluations(); ++i) out += kVectors[i] + ", ";
  for (int64_t i = 0; i < embedded_scalars(c); ++i) out += (i ? ", " : "") + kScalars[i];
  return out;
}

// The signature and the line "    emb = self.embed.forward(...)" (without history the embedding gets h
// for h_prev, unused).
std::string head_preamble(const MicroHeadConfig& c) {
  const int64_t scalars = embedded_scalars(c);
  std::ostringstream src;
  src << head_signature(c) << "    emb = self.embed.forward(";
  for (int64_t i = 0; i < std::max<int64_t>(scalars, 3); ++i) src << (i < scalars ? kScalars[i] : "h") << ", ";
  src << "x)\n";
  return src.str();
}

// "torch.cat([x, eps, ...], 1)" of the data inputs.
std::string data_inputs(const MicroHeadConfig& c) {
  std::string out = "torch.cat([";
  for (int64_t i = 0; i < 2 + c.previous_evaluations(); ++i) out += (i ? ", " : "") + kVectors[i];
  return out + "], 1)";
}

// The coefficient head: one learned weight per data input, from the step's scalars alone:
// out = k_0 x + k_1 eps (+ k_2 d (+ k_3 d2)).
ScriptNet make_coefficient_head(ScriptBuilder& b, const MicroHeadConfig& c) {
  auto net = std::make_shared<torch::jit::Module>(b.module("MicroCoefficientHead"));
  net->register_module("embed", step_embedding(b, c.frequencies, c.embed, embedded_scalars(c)));
  const int64_t vectors = 2 + c.previous_evaluations();
  b.linear(*net, "fc_out", c.embed, vectors);
  zero(*net, "fc_out");
  std::ostringstream src;
  src << head_preamble(c) << "    k = torch.linear(torch.silu(emb), self.fc_out_weight, self.fc_out_bias)\n"
      << "    out = k[:, 0:1] * x.flatten(1)";
  for (int64_t i = 1; i < vectors; ++i)
    src << " + k[:, " << i << ":" << i + 1 << "] * " << kVectors[i] << ".flatten(1)";
  src << "\n    return out.reshape(x.shape)\n";
  net->define(src.str());
  return net;
}

// The network head: a conv/MLP net of the step's vectors, its output layer zero.
ScriptNet make_network_head(ScriptBuilder& b, const MicroHeadConfig& c) {
  auto net = std::make_shared<torch::jit::Module>(b.module("MicroResidualHead"));
  net->register_module("embed", step_embedding(b, c.frequencies, c.embed, embedded_scalars(c)));
  const int64_t w = width(c), n = blocks(c), inputs = 2 + c.previous_evaluations();
  const std::string data = data_inputs(c);
  std::ostringstream src;
  src << head_preamble(c);
  if (is_image(c)) {
    const int64_t ch = c.sample_shape[0];
    b.conv(*net, "conv_in", inputs * ch, w, 3);
    for (int64_t i = 0; i < n; ++i)
      net->register_module("block" + std::to_string(i), conv_block(b, w, c.embed, c.groups, int64_t{1} << (i % 4)));
    b.norm(*net, "norm_out", w);
    b.conv(*net, "conv_out", w, ch, 3);
    zero(*net, "conv_out");
    src << "    a = torch.conv2d(" << data << ", self.conv_in_weight, self.conv_in_bias, [1, 1], [1, 1])\n";
    for (int64_t i = 0; i < n; ++i) src << "    a = self.block" << i << ".forward(a, emb)\n";
    src << "    a = torch.silu(torch.group_norm(a, " << c.groups << ", self.norm_out_weight, self.norm_out_bias, 1e-5))\n"
        << "    return torch.conv2d(a, self.conv_out_weight, self.conv_out_bias, [1, 1], [1, 1])\n";
  } else {
    const int64_t d = c.sample_shape[0];
    b.linear(*net, "fc_in", inputs * d, w);
    for (int64_t i = 0; i < n; ++i)
      net->register_module("block" + std::to_string(i), nets_detail::mlp_block(b, w, c.embed));
    b.linear(*net, "fc_out", w, d);
    zero(*net, "fc_out");
    src << "    a = torch.linear(" << data << ", self.fc_in_weight, self.fc_in_bias)\n";
    for (int64_t i = 0; i < n; ++i) src << "    a = self.block" << i << ".forward(a, emb)\n";
    src << "    return torch.linear(torch.silu(a), self.fc_out_weight, self.fc_out_bias)\n";
  }
  net->define(src.str());
  return net;
}

// The hybrid head: the coefficient head plus a network head, summed (one builder, so that the saved
// file has one class per name). The network part starts at zero: an untrained hybrid is its
// coefficient part.
ScriptNet make_hybrid_head(ScriptBuilder& b, const MicroHeadConfig& c) {
  auto net = std::make_shared<torch::jit::Module>(b.module("MicroHybridHead"));
  net->register_module("coefficients", *make_coefficient_head(b, c));
  net->register_module("network", *make_network_head(b, c));
  const std::string args = head_arguments(c);
  net->define(head_signature(c) + "    return self.coefficients.forward(" + args + ") + self.network.forward(" +
              args + ")\n");
  return net;
}

// Multiply-adds of the (λ_s, h, h_prev…) embedding.
int64_t embedding_macs(const MicroHeadConfig& c) {
  return 2 * embedded_scalars(c) * c.frequencies * c.embed + c.embed * c.embed;
}

int64_t coefficient_head_flops(const MicroHeadConfig& c) {
  const int64_t k = 2 + c.previous_evaluations();
  int64_t coordinates = 1;
  for (int64_t d : c.sample_shape) coordinates *= d;
  return 2 * (embedding_macs(c) + c.embed * k + k * coordinates);
}

int64_t network_head_flops(const MicroHeadConfig& c) {
  const int64_t w = width(c), n = blocks(c), e = c.embed, k = 2 + c.previous_evaluations();
  int64_t macs = embedding_macs(c);
  if (is_image(c)) {
    const int64_t ch = c.sample_shape[0], hw = c.sample_shape[1] * c.sample_shape[2];
    macs += (k * ch * w * 9 + n * (2 * w * w * 9) + w * ch * 9) * hw + n * e * w;
  } else {
    const int64_t d = c.sample_shape[0];
    macs += k * d * w + n * (2 * w * w + e * w) + w * d;
  }
  return 2 * macs;
}

int64_t hybrid_head_flops(const MicroHeadConfig& c) { return coefficient_head_flops(c) + network_head_flops(c); }

// The residual heads by MicroHeadConfig::residual_kind.
struct ResidualKind {
  const char* name;
  ScriptNet (*build)(ScriptBuilder&, const MicroHeadConfig&);
  int64_t (*flops)(const MicroHeadConfig&);
};
const ResidualKind kResidualKinds[] = {
    {"network", make_network_head, network_head_flops},
    {"coefficients", make_coefficient_head, coefficient_head_flops},
    {"hybrid", make_hybrid_head, hybrid_head_flops},
};

const ResidualKind* find_residual_kind(const std::string& name) {
  for (const ResidualKind& k : kResidualKinds)
    if (name == k.name) return &k;
  return nullptr;
}

bool is_residual_kind(const std::string& name) { return find_residual_kind(name) != nullptr; }

std::string residual_kind_names() {
  std::string out;
  for (const ResidualKind& k : kResidualKinds) out += (out.empty() ? "'" : ", '") + std::string(k.name) + "'";
  return out;
}

const ResidualKind& residual_kind_entry(const std::string& name) {
  const ResidualKind* k = find_residual_kind(name);
  FEWSTEP_CHECK(k != nullptr, "unknown residual head kind '", name, "' (validate() admits only registered kinds)");
  return *k;
}

}  // namespace

ScriptNet make_residual_head(const MicroHeadConfig& c, uint64_t seed) {
  c.validate();
  ScriptBuilder b(seed);
  return residual_kind_entry(c.residual_kind).build(b, c);
}

bool MicroHeadConfig::can_start_from(const MicroHeadConfig& from) const {
  if (from.describe() == describe()) return true;
  MicroHeadConfig grown = from;
  if (residual_kind == "hybrid" && from.residual_kind == "coefficients") {
    // Everything but the network part's settings must agree.
    grown.residual_kind = residual_kind;
    grown.width = fewstep::width(*this);
    grown.blocks = fewstep::blocks(*this);
    grown.groups = groups;
  }
  // With history on both sides the base term is DEIS-2 at any depth: zero weights on the new inputs
  // leave the sampler as it was. (Without history the base term is DDIM's, so that cannot grow.)
  if (from.history && history && from.history_depth < history_depth) grown.history_depth = history_depth;
  return grown.describe() == describe();
}

void copy_residual_head(const MicroHeadConfig& from, const torch::jit::Module& source, const MicroHeadConfig& to,
                        torch::jit::Module& target) {
  FEWSTEP_CHECK_VALUE(to.can_start_from(from), "copy_residual_head: a head with settings (", from.describe(),
                      ") cannot start one with settings (", to.describe(), ")");
  torch::jit::Module into = target;
  if (from.residual_kind != to.residual_kind) into = target.attr("coefficients").toModule();
  // A deeper head's input layers are wider; its inputs are appended (kVectors, kScalars), so the
  // shallower weights are their leading block and the new inputs' weights start at zero.
  copy_weights(source, into, from.previous_evaluations() == to.previous_evaluations() ? WeightShapes::Same
                                                                                      : WeightShapes::ZeroPadded);
}

ScriptNet make_step_size_head(const MicroHeadConfig& c, uint64_t seed) {
  c.validate();
  ScriptBuilder b(seed ^ 0x68656164ull);
  auto net = std::make_shared<torch::jit::Module>(b.module("MicroStepSizeHead"));
  b.linear(*net, "fc1", c.step_features, c.step_width);
  b.linear(*net, "fc2", c.step_width, c.step_width);
  b.linear(*net, "fc_out", c.step_width, 1);
  zero(*net, "fc_out");
  net->define(R"(
def forward(self, features: Tensor) -> Tensor:
    a = torch.silu(torch.linear(features, self.fc1_weight, self.fc1_bias))
    a = torch.silu(torch.linear(a, self.fc2_weight, self.fc2_bias))
    return torch.linear(a, self.fc_out_weight, self.fc_out_bias).reshape([-1])
)");
  return net;
}

int64_t residual_head_flops(const MicroHeadConfig& c) {
  c.validate();
  return residual_kind_entry(c.residual_kind).flops(c);
}

int64_t step_size_head_flops(const MicroHeadConfig& c) {
  c.validate();
  return 2 * (c.step_features * c.step_width + c.step_width * c.step_width + c.step_width);
}

}  // namespace fewstep
