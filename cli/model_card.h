// The human side of a model file: <name>.md, the card, renders the sidecar's metadata as a short
// Markdown page. The model file itself (<name>.pt and its sidecar <name>.json) is written and read
// by the library only (models/model_file.h: save_model_file, read_model_file_info, load_model_file).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace fewstep::cli {

/// "dir/model.pt" → "dir/model.md".
std::string card_path(const std::string& model_path);

/// The sidecar of `model_path` as read and validated by the library (read_model_file_info), or
/// nullopt when there is none. UsageError naming the file if it is not a valid fewstep sidecar.
std::optional<nlohmann::json> read_sidecar(const std::string& model_path);

/// Writes text atomically (temporary file + rename); UsageError naming the path on failure.
void write_text_file(const std::string& path, const std::string& text);

/// The "training time" cell of a card from a sidecar's "training" block: the time (format_duration),
/// threads, machine and the mean iterations per second over the run (steps_done, or steps, / seconds),
/// e.g. "1 h 16 min (1 thread, AMD EPYC, 2 cores; 2.60 it/s)".
std::string training_time_cell(const nlohmann::json& training);

/// The "status" cell of a card: "complete: N / N steps", or "in progress: done / total steps" for a
/// file written at a checkpoint of a run that goes on.
std::string status_cell(int64_t steps_done, int64_t steps_total);

/// The Markdown card for a sidecar (model file name given for the usage lines).
std::string render_card(const nlohmann::json& meta, const std::string& model_file);

}  // namespace fewstep::cli
