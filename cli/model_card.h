// What `fewstep train` writes beside an exported TorchScript model, and what `fewstep sample` reads:
//  - <name>.json, the sidecar: format, schedule spec, prediction, time input, sample shape, network,
//    data and training metadata (one JSON object, written atomically);
//  - <name>.md, the card: the same metadata as a short Markdown page for people.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace fewstep::cli {

inline constexpr const char* kSidecarFormat = "fewstep.model.v1";

/// "dir/model.pt" → "dir/model.json" (the extension, if any, replaced).
std::string sidecar_path(const std::string& model_path);
/// "dir/model.pt" → "dir/model.md".
std::string card_path(const std::string& model_path);

/// The sidecar of `model_path`, or nullopt when there is none. UsageError naming the file if it is
/// not valid JSON or not a fewstep sidecar.
std::optional<nlohmann::json> read_sidecar(const std::string& model_path);

/// Writes text atomically (temporary file + rename); UsageError naming the path on failure.
void write_text_file(const std::string& path, const std::string& text);

/// The Markdown card for a sidecar (model file name given for the usage lines).
std::string render_card(const nlohmann::json& meta, const std::string& model_file);

}  // namespace fewstep::cli
