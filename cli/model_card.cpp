#include "model_card.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "command.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/models/model_file.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep::cli {

namespace {

std::string with_extension(const std::string& path, const char* ext) {
  return std::filesystem::path(path).replace_extension(ext).string();
}

std::string thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// A JSON object as "k=v, k=v" (strings unquoted), for one-line table cells.
std::string inline_object(const nlohmann::json& j) {
  std::string out;
  for (const auto& [k, v] : j.items()) {
    if (!out.empty()) out += ", ";
    out += k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

}  // namespace

std::string card_path(const std::string& model_path) { return with_extension(model_path, ".md"); }

std::optional<nlohmann::json> read_sidecar(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::exists(model_sidecar_path(model_path), ec)) return std::nullopt;
  try {
    // Validated (and its nesting bounded) by the library before this parser sees it.
    return nlohmann::json::parse(read_model_file_info(model_path).sidecar_json);
  } catch (const c10::Error& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

void write_text_file(const std::string& path, const std::string& text) {
  try {
    atomic_write_bytes(path, text.data(), text.size());
  } catch (const c10::Error& e) {
    throw UsageError("cannot write '" + path + "': " + e.what_without_backtrace());
  }
}

std::string training_time_cell(const nlohmann::json& tr) {
  const double seconds = tr.at("seconds").get<double>();
  const int threads = tr.at("threads").get<int>();
  std::ostringstream o;
  o << format_duration(seconds) << " (" << threads << (threads == 1 ? " thread, " : " threads, ")
    << tr.at("machine").get<std::string>();
  const char* key = tr.contains("steps_done") ? "steps_done" : tr.contains("steps") ? "steps" : nullptr;
  if (key != nullptr && tr.at(key).is_number() && seconds > 0) {
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.2f", tr.at(key).get<double>() / seconds);
    o << "; " << rate << " it/s";
  }
  o << ")";
  return o.str();
}

std::string status_cell(int64_t steps_done, int64_t steps_total) {
  return std::string(steps_done >= steps_total ? "complete" : "in progress") + ": " + std::to_string(steps_done) +
         " / " + std::to_string(steps_total) + " steps";
}

std::string render_card(const nlohmann::json& m, const std::string& model_file) {
  const nlohmann::json& tr = m.at("training");
  std::ostringstream o;
  const int64_t done = tr.at("steps_done"), total = tr.at("steps");
  o << "# " << m.at("name").get<std::string>() << "\n\n"
    << "A " << m.at("network").at("kind").get<std::string>() << " denoiser trained by `fewstep train` (denoising "
    << "score matching with fewstep's C++ DenoiserTrainer), exported as TorchScript from the EMA weights. "
    << "`forward(x, t)` returns the " << m.at("prediction").get<std::string>() << " prediction. The sidecar `"
    << std::filesystem::path(model_sidecar_path(model_file)).filename().string()
    << "` holds the same metadata for `fewstep sample`.\n\n";
  o << "| | |\n| --- | --- |\n";
  o << "| command | `" << tr.at("command").get<std::string>() << "` |\n";
  o << "| status | " << status_cell(done, total) << " |\n";
  o << "| seed | " << tr.at("seed").dump() << " |\n";
  o << "| training time | " << training_time_cell(tr) << " |\n";
  char loss[64];
  std::snprintf(loss, sizeof loss, "%.5g", tr.at("final_loss").get<double>());
  o << "| final loss | " << loss << " (mean batch loss of the last " << tr.at("final_loss_window").dump()
    << " steps, weighting " << tr.at("weighting").get<std::string>() << ") |\n";
  o << "| parameters | " << thousands(m.at("parameters").get<int64_t>()) << " |\n";
  o << "| network | " << m.at("network").at("kind").get<std::string>() << "("
    << inline_object(m.at("network").at("config")) << ") |\n";
  o << "| data | " << m.at("data").at("description").get<std::string>() << " |\n";
  o << "| sample shape | " << m.at("sample_shape").dump() << " |\n";
  o << "| schedule | " << m.at("schedule").at("repr").get<std::string>() << " |\n";
  o << "| prediction | " << m.at("prediction").get<std::string>() << " |\n";
  o << "| time input | " << m.at("time_input").get<std::string>() << " × " << m.at("time_scale").dump() << " |\n";
  o << "| optimiser | AdamW, lr " << tr.at("lr").dump() << " (warmup " << tr.at("warmup").dump()
    << ", cosine to " << tr.at("min_lr").dump() << "), batch " << tr.at("batch").dump() << ", weight decay "
    << tr.at("weight_decay").dump() << ", clip " << tr.at("grad_clip").dump() << ", EMA " << tr.at("ema").dump()
    << " |\n";
  o << "| versions | fewstep " << m.at("fewstep_version").get<std::string>() << ", LibTorch "
    << m.at("torch_version").get<std::string>() << " |\n\n";
  const std::string file = std::filesystem::path(model_file).filename().string();
  o << "## Use\n\n```sh\nfewstep sample --model " << file
    << " --solver dpmpp_2m --steps 10 --n 16 --seed 0 --out grid.png\n```\n\n"
    << "From C++: `fewstep::load_model_file(\"" << file
    << "\")` reads the model with this sidecar and gives a ready `Denoiser`, its schedule and sample shape "
    << "(`include/fewstep/models/model_file.h`); from Python: `torch.jit.load` and `fs.Denoiser(net, schedule=..., "
    << "prediction=\"" << m.at("prediction").get<std::string>() << "\")` with the schedule above.\n";
  return o.str();
}

}  // namespace fewstep::cli
