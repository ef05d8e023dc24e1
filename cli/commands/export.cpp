// `fewstep export`: a TorchScript network of one's own (scripted or traced in Python, or written by
// another tool) into a fewstep model file: the .pt plus the sidecar that says how to sample it
// (schedule, prediction, time input, sample shape; models/model_file.h). The library checks that the
// network runs on a batch of that shape and writes both files atomically; `fewstep sample`,
// `fewstep eval`, `fewstep-bench` and `fs.sample(path)` then run it without further flags. From
// Python, fs.export does the same for nn.Modules and the fewstep.adapters models (docs/interop.md).
#include <torch/script.h>

#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "../command.h"
#include "../schedule_spec.h"
#include "fewstep/models/model_file.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

struct Config {
  std::string network, out, schedule, prediction, time_input = "t", name;
  double time_scale = 1.0;
  std::vector<int64_t> shape;
  bool force = false;
};

class ExportCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    app.add_option("--network", c.network, "The TorchScript file: forward(x, t) -> the prediction, x of shape "
                                           "[batch, *shape], t of shape [batch] (torch.jit.script or trace)")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("--out", c.out, "The model file to write (.pt); its sidecar goes beside it (.json)")->required();
    app.add_option("--schedule", c.schedule, "The noise schedule the network was trained with: a name (" +
                                                 schedule_names_text() +
                                                 ", default parameters) or a JSON spec as in a sidecar, e.g. "
                                                 "'{\"name\": \"vp_linear\", \"beta_min\": 0.1, \"beta_max\": 20}'")
        ->required();
    app.add_option("--prediction", c.prediction, "What the network predicts: eps, x0, v, score or flow")
        ->required()
        ->check(CLI::IsMember({"eps", "x0", "v", "score", "flow"}));
    app.add_option("--time-input", c.time_input, "What the network reads as t: t, index, sigma or lambda")
        ->check(CLI::IsMember({"t", "index", "sigma", "lambda"}))
        ->capture_default_str();
    app.add_option("--time-scale", c.time_scale, "Multiplier of the time input (e.g. 1000 for t in [0, 1000])")
        ->check(positive())
        ->check(finite_number())
        ->capture_default_str();
    app.add_option("--shape", c.shape, "One sample without the batch, e.g. 1,28,28")->delimiter(',')->required();
    app.add_option("--name", c.name, "The model's name in its sidecar (default: the file stem of --out)");
    app.add_flag("--force", c.force, "Replace an existing --out");
  }

  int run(const GlobalOptions&) override {
    const Config& c = config_;
    for (int64_t d : c.shape)
      if (d <= 0) throw UsageError("--shape entries must be positive, got " + std::to_string(d));
    std::error_code ec;
    if (fsys::exists(c.out, ec) && !c.force)
      throw UsageError("--out '" + c.out + "' exists; pass --force to replace it");
    json spec;
    if (!c.schedule.empty() && c.schedule.front() == '{') {
      try {
        spec = json::parse(c.schedule);
      } catch (const json::exception& e) {
        throw UsageError("--schedule '" + c.schedule + "' is not valid JSON: " + e.what());
      }
    } else {
      spec = default_schedule_spec(c.schedule);
    }
    ModelFileInfo info;
    info.schedule = make_schedule(spec, "--schedule");
    info.prediction = parse_prediction(c.prediction);
    info.time_input = parse_time_input(c.time_input);
    info.time_scale = c.time_scale;
    info.sample_shape = c.shape;
    info.name = c.name;
    info.metadata = json{{"export", {{"source", c.network}, {"how", "fewstep export (a TorchScript file)"}}}}.dump();
    torch::jit::Module net;
    try {
      net = torch::jit::load(c.network);
    } catch (const c10::Error& e) {
      throw UsageError("--network '" + c.network + "' is not a TorchScript file: " + e.what_without_backtrace());
    }
    try {
      save_model_file(c.out, net, info);
    } catch (const c10::Error& e) {
      throw UsageError(e.what_without_backtrace());
    }
    std::cerr << "fewstep export: wrote " << c.out << " and " << model_sidecar_path(c.out) << " ("
              << info.schedule->repr() << ", " << c.prediction << " prediction, time input " << c.time_input
              << ")\nsample it: fewstep sample --model " << c.out << " --n 16 --out grid.png\n";
    return 0;
  }

 private:
  static std::string schedule_names_text() {
    std::string s;
    for (const auto& n : schedule_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }
  Config config_;
};

const bool registered = register_command(
    {"export", "Write a TorchScript network of your own as a fewstep model file (.pt + sidecar)",
     "Examples:\n"
     "  # in Python: torch.jit.script(net).save('net.pt')   (forward(x, t) -> eps)\n"
     "  fewstep export --network net.pt --schedule vp_linear --prediction eps --shape 1,28,28 --out model.pt\n"
     "  fewstep sample --model model.pt --solver unipc --steps 8 --n 16 --out grid.png\n"
     "diffusers pipelines, k-diffusion/EDM denoisers and nn.Modules: fs.export in Python (docs/interop.md).\n",
     [] { return std::make_unique<ExportCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
