#include "teacher.h"

#include "fewstep/models/student_init.h"

#include <iostream>
#include <torch/script.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "../command.h"
#include "../model_card.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/core/cache_dir.h"
#include "fewstep/version.h"

namespace fewstep::cli {

namespace {
using json = nlohmann::json;
namespace fsys = std::filesystem;
}  // namespace

Teacher load_teacher(const std::string& path, const c10::Device& device, const std::string& flag) {
  Teacher t;
  t.path = path;
  std::error_code ec;
  if (!fsys::is_regular_file(path, ec)) throw UsageError(flag + " '" + path + "' is not a file");
  if (!fsys::exists(model_sidecar_path(path), ec))
    throw UsageError(flag + " '" + path + "' has no sidecar '" + model_sidecar_path(path) +
                     "' (written by `fewstep train`; it names the schedule, prediction and data)");
  try {
    fewstep::Placement placement;
    placement.device = device;
    t.file = std::make_shared<const ModelFile>(load_model_file(path, {}, placement));
  } catch (const c10::Error& e) {
    throw UsageError(flag + " '" + path + "': " + e.what_without_backtrace());
  }
  const ModelFileInfo& info = t.file->info;
  t.sidecar = json::parse(info.sidecar_json);  // validated by the library
  t.schedule = info.schedule;
  t.prediction = info.prediction;
  t.time_input = info.time_input;
  t.time_scale = info.time_scale;
  t.sample_shape = info.sample_shape;
  t.num_classes = info.num_classes;
  t.net = t.file->network;
  return t;
}

void DistillFlags::add_to(CLI::App& app) {
  app.add_option("--teacher", teacher, "Teacher model file (TorchScript .pt with its .json sidecar, as written by "
                                       "`fewstep train`)")
      ->required();
  app.add_option("--out", out, "Run directory: checkpoint.pt, run.json, state.json and the exported students; "
                               "created if missing")
      ->required();
  app.add_option("--name", name, "File stem of the exported student(s)")->capture_default_str();
  app.add_option("--batch", batch, "Batch size")->check(positive())->capture_default_str();
  app.add_option("--lr", lr, "Peak AdamW learning rate")->check(positive())->capture_default_str();
  app.add_option("--min-lr", min_lr, "Learning rate at the end of the decay")->capture_default_str();
  app.add_option("--warmup", warmup, "Linear warmup steps")->check(non_negative())->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--grad-clip", grad_clip, "Clip the global gradient norm (<= 0: off)")->capture_default_str();
  app.add_option("--ema", ema, "EMA decay of the student weights (the EMA is exported)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--seed", seed, "Seed of the data order and every training draw")->capture_default_str();
  app.add_flag("--resume", resume, "Continue the run in --out (same flags; bit-identical to an uninterrupted run "
                                   "with the same --threads)");
  app.add_option("--checkpoint-every", checkpoint_every, "Checkpoint (and export) every K steps; 0 = only at the end")
      ->check(non_negative())
      ->capture_default_str();
  app.add_option("--log-every", log_every, "Log line every K steps when stderr is not a terminal")
      ->check(positive())
      ->capture_default_str();
  app.add_option("--device", device, "Where the teacher, the student and the batches live: cpu, cuda or cuda:N "
                                     "(default cpu; the data is drawn on the host, so a run's numbers do not "
                                     "depend on it beyond kernel rounding; docs/gpu.md)");
  app.add_option("--fmnist-dir", fmnist_dir, "Fashion-MNIST directory (default $FEWSTEP_FASHION_MNIST_DIR or "
                                             "/usr/share/datasets/fashion-mnist)");
}

json DistillFlags::identity() const {
  return {{"--teacher", teacher}, {"--batch", batch},         {"--lr", lr},
          {"--min-lr", min_lr},   {"--warmup", warmup},       {"--weight-decay", weight_decay},
          {"--grad-clip", grad_clip}, {"--ema", ema},         {"--seed", seed}};
}

c10::Device DistillFlags::training_device() const { return cli::training_device(device); }

TrainingRun::Loop DistillFlags::loop(int64_t total_steps) const {
  TrainingRun::Loop l;
  l.target = total_steps;
  l.checkpoint_every = checkpoint_every;
  l.log_every = log_every;
  return l;
}

OptimizerOptions DistillFlags::optimizer(int64_t total_steps, bool linear_decay) const {
  if (min_lr > lr) throw UsageError("--min-lr " + std::to_string(min_lr) + " exceeds --lr " + std::to_string(lr));
  OptimizerOptions o;
  o.schedule.lr = lr;
  o.schedule.min_lr = min_lr;
  o.schedule.warmup_steps = warmup;
  o.schedule.total_steps = total_steps;
  o.schedule.decay = linear_decay ? LrDecay::Linear : LrDecay::Cosine;
  o.weight_decay = weight_decay;
  o.grad_clip = grad_clip;
  return o;
}

std::string cache_root(const std::string& flag, bool no_cache) {
  if (no_cache) return "";
  return flag.empty() ? cache_directory() : flag;
}

std::shared_ptr<BatchSource> teacher_data(const Teacher& teacher, int64_t batch, uint64_t seed,
                                          const std::string& fmnist_dir) {
  if (!teacher.sidecar.contains("data"))
    throw UsageError("--teacher sidecar has no \"data\"; the distillation data cannot be rebuilt");
  const json& d = teacher.sidecar["data"];
  const std::string name = d.value("name", std::string());
  if (name == "fmnist") {
    FashionMnist f;
    try {
      f = load_fashion_mnist("train", fmnist_dir);
    } catch (const c10::Error& e) {
      throw UsageError("Fashion-MNIST: " + std::string(e.what_without_backtrace()));
    }
    return std::make_shared<ShuffledBatches>(f.images, f.labels, batch, seed);
  }
  if (name == "gmm2d" || name == "gmm16d") {
    auto mixture = GaussianMixture::random(d.at("dim").get<int64_t>(), d.at("components").get<int64_t>(),
                                           d.at("gmm_seed").get<uint64_t>());
    return std::make_shared<MixtureData>(mixture, batch, seed);
  }
  throw UsageError("--teacher data '" + name + "' is not one fewstep distill can rebuild (fmnist, gmm2d, gmm16d)");
}

namespace {

std::string render_student_card(const json& m, const std::string& file) {
  std::ostringstream o;
  const json& tr = m.at("training");
  o << "# " << m.at("name").get<std::string>() << "\n\n"
    << "A student distilled by `fewstep distill " << m.at("distillation").at("method").get<std::string>()
    << "` from `" << m.at("distillation").at("teacher").get<std::string>() << "`. `forward` returns the "
    << m.at("prediction").get<std::string>() << " prediction.";
  if (m.contains("sampler"))
    o << " It samples in " << m["sampler"]["timesteps"].size() - 1 << " " << m["sampler"]["solver"].get<std::string>()
      << " step(s) on the grid in the sidecar's \"sampler\".";
  if (m.contains("sampler") && m.at("distillation").at("method") == "progressive" && m["sampler"]["solver"] != "ddim")
    o << " Its steps were trained as DDIM steps; " << m["sampler"]["solver"].get<std::string>()
      << " combines the same calls closer to the teacher (measured by `--student-solver auto`; docs/distillation.md, "
         "\"Which solver samples a student\").";
  o << "\n\n| | |\n|---|---|\n";
  o << "| command | `" << tr.at("command").get<std::string>() << "` |\n";
  char buf[64];
  // A student exported at a checkpoint says how far its run had gone (a long run's files are read,
  // and sometimes shipped, before it ends).
  if (tr.contains("steps_done") && tr.contains("steps_total"))
    o << "| status | " << status_cell(tr.at("steps_done"), tr.at("steps_total")) << " |\n";
  o << "| training time | " << training_time_cell(tr) << " |\n";
  std::snprintf(buf, sizeof buf, "%.5g", tr.at("final_loss").get<double>());
  o << "| final loss | " << buf << " (mean of the last " << tr.at("final_loss_window").dump() << " steps) |\n";
  for (const auto& [k, v] : m.at("distillation").items())
    o << "| " << k << " | " << (v.is_string() ? v.get<std::string>() : v.dump()) << " |\n";
  o << "| parameters | " << m.at("parameters").dump() << " |\n";
  o << "| schedule | " << m.at("schedule").value("repr", m.at("schedule").dump()) << " |\n";
  o << "| versions | fewstep " << m.at("fewstep_version").get<std::string>() << ", LibTorch "
    << m.at("torch_version").get<std::string>() << " |\n\n";
  o << "## Use\n\n```sh\nfewstep sample --model " << file << " --n 16 --seed 0 --out grid.png\n```\n\n"
    << "The sidecar's grid is used unless --solver/--steps are given. From Python: `fs.sample(\"" << file
    << "\", x_T)`; from C++: `fewstep::load_model_file`.\n";
  return o.str();
}

}  // namespace

std::string export_student(const torch::jit::Module& net, const Teacher& teacher, const StudentInfo& info,
                           const std::string& dir) {
  const std::string model = (fsys::path(dir) / (info.name + ".pt")).string();
  torch::jit::Module copy = net.clone();
  copy.eval();
  ModelFileInfo m;
  m.schedule = teacher.schedule;
  m.prediction = info.prediction;
  m.time_input = teacher.time_input;
  m.time_scale = teacher.time_scale;
  m.sample_shape = teacher.sample_shape;
  m.name = info.name;
  json network = info.network;
  // A student that started as the teacher in function space is the teacher's network behind a fixed
  // output conversion (models/student_init.h): the spec says so.
  StudentTarget target{info.prediction, std::nullopt};
  if (info.consistency) target.consistency = ConsistencyParameterization{info.consistency->sigma_data};
  const std::string output_map =
      info.teacher_output_map
          ? student_output_map_json({teacher.prediction, teacher.time_input, teacher.time_scale}, target)
          : std::string();
  if (!output_map.empty() && network.is_object()) network["output_map"] = json::parse(output_map);
  if (!info.teacher_output_map && network.is_object()) network.erase("output_map");  // a fresh network
  m.network = network.dump();
  if (!info.timesteps.empty()) {
    m.solver = info.solver;
    m.timesteps = info.timesteps;
  }
  if (info.default_guidance > 0.0) m.default_guidance = info.default_guidance;
  m.consistency = info.consistency;
  // The teacher's metadata as a student inherits it (models/model_file.h), with this run's record.
  json distillation = info.distillation;
  distillation["method"] = info.method;
  distillation["teacher"] = teacher.path;
  json metadata = json::parse(student_metadata(teacher.file->info.metadata, distillation.dump()));
  metadata["training"] = info.training;
  m.metadata = metadata.dump();
  json side = json::parse(save_model_file(model, copy, m));
  if (info.after_save) {
    info.after_save(model);
    side = json::parse(read_model_file_info(model).sidecar_json);
  }
  write_text_file(card_path(model), render_student_card(side, fsys::path(model).filename().string()));
  return model;
}

std::string export_checkpoint_student(const Trainer& trainer, const TrainingRun& run, StudentInfo info,
                                      const Teacher& teacher, const std::string& dir, int64_t final_step,
                                      const std::string& who) {
  info.training = run.training_json();
  info.training["steps_done"] = trainer.step_count();
  info.training["steps_total"] = final_step;
  const std::string path = export_student(*trainer.export_net(), teacher, info, dir);
  if (trainer.step_count() >= final_step) std::cerr << "fewstep " << who << ": wrote " << path << "\n";
  return path;
}

}  // namespace fewstep::cli
