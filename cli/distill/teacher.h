// What every `fewstep distill` method needs from its teacher model file: the network, its sidecar,
// the training data it was trained on (rebuilt from the sidecar's "data"), and the student export
// (TorchScript + sidecar with the student's own grid + card).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/models/denoiser.h"
#include "fewstep/models/model_file.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/trainer.h"
#include "../training_run.h"

namespace fewstep::cli {

struct Teacher {
  std::string path;
  std::shared_ptr<const ModelFile> file;  // the model file as the library loaded it (checksum verified)
  nlohmann::json sidecar;
  ScriptNet net;  // loaded TorchScript module
  SchedulePtr schedule;
  Prediction prediction = Prediction::Eps;
  TimeInput time_input = TimeInput::T;
  double time_scale = 1.0;
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;
};

/// load_model_file of --teacher (or of the model-file flag `flag`), its network mapped to `device` as
/// it is read. UsageError naming the flag when the file or its sidecar is missing, invalid or corrupted.
Teacher load_teacher(const std::string& path, const c10::Device& device = c10::Device(c10::kCPU),
                     const std::string& flag = "--teacher");

/// The teacher's training data (sidecar "data": fmnist or a GaussianMixture::random mixture),
/// batches of `batch` drawn with `seed`. `fmnist_dir` overrides the dataset location.
std::shared_ptr<BatchSource> teacher_data(const Teacher& teacher, int64_t batch, uint64_t seed,
                                          const std::string& fmnist_dir);

/// --cache-dir of the methods that cache teacher solves: the cache root (core/cache_dir.h), the
/// default when `flag` is empty; "" with --no-cache.
std::string cache_root(const std::string& flag, bool no_cache);

/// The flags every distillation method shares.
struct DistillFlags {
  std::string teacher, out, name = "student", fmnist_dir, device;
  int64_t batch = 64, warmup = 0, checkpoint_every = 500, log_every = 100;
  double lr = 2e-4, min_lr = 0.0, weight_decay = 0.0, grad_clip = 1.0, ema = 0.995;
  uint64_t seed = 0;
  bool resume = false;

  void add_to(CLI::App& app);
  /// The flags that decide the numbers (checked on --resume).
  nlohmann::json identity() const;
  /// AdamW options for a run of `total_steps` (linear or cosine decay).
  OptimizerOptions optimizer(int64_t total_steps, bool linear_decay) const;
  /// --device as parsed by the library (core/device.h): where the teacher, the student and the batches
  /// live (default cpu). UsageError naming the flag and the value.
  c10::Device training_device() const;
  /// The training loop of a run of `total_steps`, with these flags' checkpoint and log intervals.
  TrainingRun::Loop loop(int64_t total_steps) const;
};

struct StudentInfo {
  std::string name;            // file stem
  std::string method;          // "progressive", "kd", "guidance"
  Prediction prediction;       // the student's output
  nlohmann::json network;      // the student's architecture spec
  std::vector<double> timesteps;  // its sampling grid (empty: any grid, e.g. a guidance-distilled model)
  nlohmann::json distillation;    // method settings for the card and sidecar
  nlohmann::json training;        // TrainingRun::training_json() plus settings
  double default_guidance = 0.0;  // > 0: written as the sidecar's default_guidance
  std::string solver = "ddim";     // the sampler of `timesteps`
  std::optional<ModelConsistency> consistency;  // a consistency model's scalings
  /// The student started as the teacher in function space (models/student_init.h), so its network is
  /// the teacher's behind a fixed output conversion, recorded in the spec; false for a fresh network.
  bool teacher_output_map = true;
  /// Called with the model path once the model file is written and before its card is: may re-seal
  /// the sidecar (e.g. record the measured sampler, metrics/solver_choice.h); the card shows the result.
  std::function<void(const std::string& model_path)> after_save;
};

/// Writes dir/<name>.pt (eval-mode copy of `net`) and its sidecar with save_model_file, then the
/// card. Returns the model path.
std::string export_student(const torch::jit::Module& net, const Teacher& teacher, const StudentInfo& info,
                           const std::string& dir);

/// export_student of the trainer's exported network at a checkpoint of `run`: info.training gets the
/// run's training record, the steps done and `final_step` (steps_total; the card's status row); once
/// the trainer reached `final_step` the path is
/// reported on stderr as "fewstep <who>: wrote <path>".
std::string export_checkpoint_student(const Trainer& trainer, const TrainingRun& run, StudentInfo info,
                                      const Teacher& teacher, const std::string& dir, int64_t final_step,
                                      const std::string& who);

}  // namespace fewstep::cli
