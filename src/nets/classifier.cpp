#include "fewstep/nets/classifier.h"

#include <torch/script.h>

#include <sstream>

#include "fewstep/core/check.h"
#include "script_builder.h"

namespace fewstep {

namespace {

void check_config(const ClassifierConfig& c) {
  FEWSTEP_CHECK_VALUE(c.in_channels >= 1, "ClassifierConfig.in_channels must be >= 1, got ", c.in_channels);
  FEWSTEP_CHECK_VALUE(!c.channels.empty(), "ClassifierConfig.channels must have at least one level");
  FEWSTEP_CHECK_VALUE(c.convs_per_level >= 1, "ClassifierConfig.convs_per_level must be >= 1, got ",
                      c.convs_per_level);
  FEWSTEP_CHECK_VALUE(c.groups >= 1, "ClassifierConfig.groups must be >= 1, got ", c.groups);
  FEWSTEP_CHECK_VALUE(c.feature_dim >= 1, "ClassifierConfig.feature_dim must be >= 1, got ", c.feature_dim);
  FEWSTEP_CHECK_VALUE(c.num_classes >= 2, "ClassifierConfig.num_classes must be >= 2, got ", c.num_classes);
  for (size_t l = 0; l < c.channels.size(); ++l) {
    FEWSTEP_CHECK_VALUE(c.channels[l] >= 1 && c.channels[l] % c.groups == 0, "ClassifierConfig.channels[", l,
                        "] = ", c.channels[l], " must be a positive multiple of ClassifierConfig.groups = ", c.groups);
  }
  int64_t size = c.image_size;
  for (size_t l = 0; l < c.channels.size(); ++l) size /= 2;
  FEWSTEP_CHECK_VALUE(size >= 1, "ClassifierConfig.image_size = ", c.image_size, " is too small for ",
                      c.channels.size(), " levels of 2x2 pooling");
}

int64_t final_size(const ClassifierConfig& c) {
  int64_t size = c.image_size;
  for (size_t l = 0; l < c.channels.size(); ++l) size /= 2;
  return size;
}

}  // namespace

int64_t classifier_parameter_count(const ClassifierConfig& c) {
  check_config(c);
  int64_t n = 0, in = c.in_channels;
  for (int64_t out : c.channels) {
    for (int64_t i = 0; i < c.convs_per_level; ++i) {
      n += out * in * 9 + out + 2 * out;  // conv weight + bias, GroupNorm affine
      in = out;
    }
  }
  const int64_t s = final_size(c);
  n += (in * s * s + 1) * c.feature_dim;
  n += (c.feature_dim + 1) * c.num_classes;
  return n;
}

ScriptNet make_classifier(const ClassifierConfig& c, uint64_t seed) {
  check_config(c);
  nets_detail::ScriptBuilder b(seed);
  auto net = std::make_shared<torch::jit::Module>(b.module("Classifier"));
  std::ostringstream src;
  src << "def features(self, x: Tensor) -> Tensor:\n"
      << "    h = x\n";
  int64_t in = c.in_channels;
  for (size_t l = 0; l < c.channels.size(); ++l) {
    for (int64_t i = 0; i < c.convs_per_level; ++i) {
      const std::string name = "conv" + std::to_string(l) + "_" + std::to_string(i);
      b.conv(*net, name, in, c.channels[l], 3);
      b.norm(*net, name + "_norm", c.channels[l]);
      in = c.channels[l];
      src << "    h = torch.conv2d(h, self." << name << "_weight, self." << name << "_bias, [1, 1], [1, 1])\n"
          << "    h = torch.relu(torch.group_norm(h, " << c.groups << ", self." << name << "_norm_weight, self."
          << name << "_norm_bias, 1e-5))\n";
    }
    src << "    h = torch.max_pool2d(h, [2, 2], [2, 2])\n";
  }
  const int64_t s = final_size(c);
  b.linear(*net, "fc", in * s * s, c.feature_dim);
  b.linear(*net, "out", c.feature_dim, c.num_classes);
  src << "    return torch.relu(torch.linear(h.flatten(1), self.fc_weight, self.fc_bias))\n"
      << "\n"
      << "def head(self, features: Tensor) -> Tensor:\n"
      << "    return torch.linear(features, self.out_weight, self.out_bias)\n"
      << "\n"
      << "def forward(self, x: Tensor) -> Tensor:\n"
      << "    return self.head(self.features(x))\n";
  net->define(src.str());
  return net;
}

}  // namespace fewstep
