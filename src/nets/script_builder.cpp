#include "script_builder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <sstream>

#include "fewstep/core/check.h"

namespace fewstep::nets_detail {

ScriptBuilder::ScriptBuilder(uint64_t seed)
    : cu_(std::make_shared<torch::jit::CompilationUnit>()), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

torch::jit::Module ScriptBuilder::module(const std::string& kind) {
  return torch::jit::Module(c10::QualifiedName("__torch__.fewstep." + kind), cu_, /*shouldMangle=*/true);
}

void ScriptBuilder::parameter(torch::jit::Module& m, const std::string& name, at::Tensor value) {
  m.register_parameter(name, value.set_requires_grad(true), /*is_buffer=*/false);
}

void ScriptBuilder::linear(torch::jit::Module& m, const std::string& name, int64_t in, int64_t out) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  parameter(m, name + "_weight", at::empty({out, in}, at::kFloat).uniform_(-bound, bound, gen_));
  parameter(m, name + "_bias", at::empty({out}, at::kFloat).uniform_(-bound, bound, gen_));
}

void ScriptBuilder::conv(torch::jit::Module& m, const std::string& name, int64_t in, int64_t out, int64_t k) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * k * k));
  parameter(m, name + "_weight", at::empty({out, in, k, k}, at::kFloat).uniform_(-bound, bound, gen_));
  parameter(m, name + "_bias", at::empty({out}, at::kFloat).uniform_(-bound, bound, gen_));
}

void ScriptBuilder::norm(torch::jit::Module& m, const std::string& name, int64_t channels) {
  parameter(m, name + "_weight", at::ones({channels}, at::kFloat));
  parameter(m, name + "_bias", at::zeros({channels}, at::kFloat));
}

void ScriptBuilder::embedding(torch::jit::Module& m, const std::string& name, int64_t rows, int64_t dim) {
  parameter(m, name + "_weight", at::empty({rows, dim}, at::kFloat).normal_(0.0, 1.0, gen_));
}

std::string float_literal(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  // TorchScript reads "1000" as an int: keep it a float literal.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

torch::jit::Module time_embedding(ScriptBuilder& b, int64_t frequencies, int64_t dim, double time_multiplier,
                                  int64_t num_classes, bool guidance_input) {
  FEWSTEP_CHECK_VALUE(frequencies >= 2 && frequencies % 2 == 0, "time_frequencies must be an even number >= 2, got ",
                      frequencies);
  FEWSTEP_CHECK_VALUE(dim >= 1, "time_embed_dim must be >= 1, got ", dim);
  FEWSTEP_CHECK_VALUE(std::isfinite(time_multiplier) && time_multiplier > 0.0,
                      "time_multiplier must be finite and positive, got ", time_multiplier);
  FEWSTEP_CHECK_VALUE(num_classes >= 0, "num_classes must be >= 0, got ", num_classes);
  torch::jit::Module m = b.module("TimeEmbedding");
  const int64_t half = frequencies / 2;
  m.register_buffer("freqs", at::exp(at::arange(half, at::kDouble) * (-std::log(10000.0) / half)).to(at::kFloat));
  b.linear(m, "fc1", frequencies, dim);
  b.linear(m, "fc2", dim, dim);
  if (num_classes > 0) b.embedding(m, "label", num_classes + 1, dim);
  if (guidance_input) {
    b.linear(m, "guidance_fc1", frequencies, dim);
    b.linear(m, "guidance_fc2", dim, dim);
    // Zero output layer: a student whose other weights are copied from its teacher starts as the
    // teacher for every w (guidance distillation initialises the student this way).
    for (const char* name : {"guidance_fc2_weight", "guidance_fc2_bias"}) {
      at::NoGradGuard no_grad;
      m.attr(name).toTensor().zero_();
    }
  }

  std::ostringstream src;
  src << "def forward(self, t: Tensor, x: Tensor, y: Optional[Tensor], w: Optional[Tensor]) -> Tensor:\n"
      << "    n = x.size(0)\n"
      << "    t = t.to(x.device, x.dtype).reshape([-1]).expand([n])\n"
      << "    args = (t * " << float_literal(time_multiplier)
      << ").unsqueeze(1) * self.freqs.to(x.dtype).unsqueeze(0)\n"
      << "    emb = torch.cat([torch.sin(args), torch.cos(args)], 1)\n"
      << "    emb = torch.linear(emb, self.fc1_weight, self.fc1_bias)\n"
      << "    emb = torch.linear(torch.silu(emb), self.fc2_weight, self.fc2_bias)\n";
  if (num_classes > 0) {
    src << "    if y is None:\n"
        << "        labels = torch.full([n], " << num_classes << ", device=x.device).long()\n"
        << "    else:\n"
        << "        labels = y.to(x.device).long().reshape([-1]).expand([n])\n"
        << "    emb = emb + torch.embedding(self.label_weight, labels)\n";
  }
  if (guidance_input) {
    src << "    if w is not None:\n"
        << "        ws = w.to(x.device, x.dtype).reshape([-1]).expand([n])\n"
        << "        wargs = (ws * " << float_literal(kGuidanceMultiplier)
        << ").unsqueeze(1) * self.freqs.to(x.dtype).unsqueeze(0)\n"
        << "        g = torch.cat([torch.sin(wargs), torch.cos(wargs)], 1)\n"
        << "        g = torch.linear(g, self.guidance_fc1_weight, self.guidance_fc1_bias)\n"
        << "        emb = emb + torch.linear(torch.silu(g), self.guidance_fc2_weight, self.guidance_fc2_bias)\n";
  }
  src << "    return emb\n";
  m.define(src.str());
  return m;
}

// h + Linear(SiLU(Linear(SiLU(h)) + Linear(SiLU(e)))): the time embedding enters every block.
torch::jit::Module mlp_block(ScriptBuilder& b, int64_t hidden, int64_t embed) {
  torch::jit::Module m = b.module("MlpBlock");
  b.linear(m, "fc1", hidden, hidden);
  b.linear(m, "time", embed, hidden);
  b.linear(m, "fc2", hidden, hidden);
  m.define(R"(
def forward(self, h: Tensor, emb: Tensor) -> Tensor:
    a = torch.linear(torch.silu(h), self.fc1_weight, self.fc1_bias)
    a = a + torch.linear(torch.silu(emb), self.time_weight, self.time_bias)
    return h + torch.linear(torch.silu(a), self.fc2_weight, self.fc2_bias)
)");
  return m;
}

std::string forward_signature(int64_t num_classes, bool guidance_input) {
  std::string sig = "def forward(self, x: Tensor, t: Tensor";
  if (num_classes > 0) sig += ", y: Optional[Tensor] = None";
  if (guidance_input) sig += ", w: Optional[Tensor] = None";
  sig += ") -> Tensor:\n    emb = self.time_embed.forward(t, x, ";
  sig += num_classes > 0 ? "y, " : "None, ";
  sig += guidance_input ? "w)\n" : "None)\n";
  return sig;
}

int64_t count_parameters(const torch::jit::Module& m) {
  int64_t n = 0;
  for (const at::Tensor& p : m.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace fewstep::nets_detail
