// Private helpers of the reference networks: TorchScript modules assembled from C++ (parameters
// registered with explicit-generator initialisation, methods compiled from TorchScript source).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>

namespace fewstep::nets_detail {

class ScriptBuilder {
 public:
  explicit ScriptBuilder(uint64_t seed);

  /// A new module of class `__torch__.fewstep.<kind>`; every module of one network shares one
  /// compilation unit, and repeated kinds get mangled class names (each instance is its own class).
  torch::jit::Module module(const std::string& kind);
  /// <name>_weight [out, in] and <name>_bias [out], U(−1/√in, 1/√in) (PyTorch's nn.Linear default).
  void linear(torch::jit::Module& m, const std::string& name, int64_t in, int64_t out);
  /// <name>_weight [out, in, k, k] and <name>_bias [out], U(−1/√(in k²), 1/√(in k²)) (nn.Conv2d's default).
  void conv(torch::jit::Module& m, const std::string& name, int64_t in, int64_t out, int64_t k);
  /// <name>_weight = 1 and <name>_bias = 0 [channels] (GroupNorm/LayerNorm affine).
  void norm(torch::jit::Module& m, const std::string& name, int64_t channels);
  /// An embedding table <name>_weight [rows, dim] ~ N(0, 1) (nn.Embedding's default).
  void embedding(torch::jit::Module& m, const std::string& name, int64_t rows, int64_t dim);

 private:
  void parameter(torch::jit::Module& m, const std::string& name, at::Tensor value);
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  at::Generator gen_;
};

/// Sinusoidal time embedding followed by Linear–SiLU–Linear, plus the class-label hook:
/// forward(t, x, y) with t a scalar or [B] tensor broadcast to x's batch, in x's dtype; when
/// num_classes > 0 a label embedding (row num_classes = the "null" class, used for y = None) is
/// added. Frequencies exp(−log(10⁴) i/half), i < half = frequencies/2, applied to t·time_multiplier.
/// With guidance_input, forward(t, x, y, w) also adds Linear(SiLU(Linear(sinusoidal(w·kGuidanceMultiplier))))
/// for a guidance weight w (scalar or [B]; nothing is added for w = None); its output layer starts at zero.
torch::jit::Module time_embedding(ScriptBuilder& b, int64_t frequencies, int64_t dim, double time_multiplier,
                                  int64_t num_classes, bool guidance_input);

/// w ∈ [0, ~10] spans the sinusoids' periods like t·1000 does for t ∈ [0, 1].
constexpr double kGuidanceMultiplier = 100.0;

/// The residual MLP block h + Linear(SiLU(Linear(SiLU(h)) + Linear(SiLU(emb)))), forward(h, emb).
torch::jit::Module mlp_block(ScriptBuilder& b, int64_t hidden, int64_t embed);

/// The first lines of a network's forward: the signature (x, t[, y][, w]) and
/// `emb = self.time_embed.forward(t, x, y, w)` (None for the inputs the network does not take).
std::string forward_signature(int64_t num_classes, bool guidance_input);

/// A C++ double as a TorchScript float literal that round-trips exactly.
std::string float_literal(double v);

/// Total number of parameter elements (recursive).
int64_t count_parameters(const torch::jit::Module& m);

}  // namespace fewstep::nets_detail
