/// @file nets/network_spec.h
/// @brief A reference network's architecture as JSON text, as written into model sidecars.
///
/// {"kind": "UNet", "config": {"base_channels": 16, "channel_mult": [1, 2, 2], ...}} or
/// {"kind": "MLP", "config": {"dim": 16, "hidden": 128, ...}}; config keys are the fields of
/// UNetConfig / MlpConfig, missing keys take their defaults. Distillation builds a student of the
/// teacher's architecture (optionally with an extra guidance input) from its sidecar this way.
/// JSON travels as text so public headers need no JSON library.
#pragma once

#include <cstdint>
#include <string>

#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network.h"
#include "fewstep/nets/unet.h"

namespace fewstep {

std::string network_spec(const UNetConfig& config);
std::string network_spec(const MlpConfig& config);

/// Builds the network a spec describes, parameters drawn with `seed`. `guidance_input` (if set)
/// overrides the spec's field. ValueError naming `source` (e.g. the sidecar's path) for a spec that
/// is not valid JSON, has an unknown kind, or a bad config.
ScriptNet network_from_spec(const std::string& json_text, uint64_t seed, const std::string& source,
                            int guidance_input = -1);

/// The spec's "config.num_classes" (0 when absent) and "config.guidance_input".
int64_t network_spec_num_classes(const std::string& json_text, const std::string& source);
bool network_spec_guidance_input(const std::string& json_text, const std::string& source);

}  // namespace fewstep
