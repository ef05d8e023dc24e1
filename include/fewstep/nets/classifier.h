/// @file nets/classifier.h
/// @brief Small CNN classifier for 28×28 grey-level images: the feature extractor of FD-FMNIST.
///
/// A ScriptNet (nets/network.h) like the UNet: parameters registered from C++, methods compiled
/// from TorchScript source. Input x [B, in_channels, H, W] with pixels in [−1, 1] (the scaling of
/// data/fashion_mnist.h). With c_l = channels[l], levels l = 0..L−1:
///   level l:   convs_per_level × { conv 3×3 (padding 1) → GroupNorm(groups) → ReLU }, max-pool 2×2
///              (28 → 14 → 7 → 3 with the default three levels; odd sizes round down)
///   features:  flatten (c_{L−1}·s²) → Linear → ReLU                        [B, feature_dim]
///   head:      Linear(feature_dim → num_classes)                           [B, num_classes] logits
/// Methods: `features(x) -> [B, feature_dim]` (the penultimate layer, used for Fréchet distances),
/// `head(features) -> logits`, and `forward(x) = head(features(x))`. The network has no dropout,
/// batch statistics or other train/eval difference, so features are a pure function of x.
///
/// Parameter count with the defaults (channels {32, 64, 64}, 2 convs per level, feature_dim 128):
/// 214,634 (0.86 MB as float32).
#pragma once

#include <cstdint>
#include <vector>

#include "fewstep/nets/network.h"

namespace fewstep {

struct ClassifierConfig {
  int64_t in_channels = 1;
  int64_t image_size = 28;                       // square inputs; must stay >= 1 after every pooling
  std::vector<int64_t> channels = {32, 64, 64};  // one entry per level (each followed by 2×2 max-pooling)
  int64_t convs_per_level = 2;
  int64_t groups = 8;  // GroupNorm groups (must divide every channel count)
  int64_t feature_dim = 128;
  int64_t num_classes = 10;
};

/// Builds the classifier with parameters drawn from a CPU generator seeded with `seed`.
/// ValueError naming the field for a bad config.
ScriptNet make_classifier(const ClassifierConfig& config, uint64_t seed);

/// The number of parameters make_classifier(config, ·) has (no module is built).
int64_t classifier_parameter_count(const ClassifierConfig& config);

}  // namespace fewstep
