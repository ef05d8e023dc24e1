// One training run of a CLI command (`fewstep train`, `fewstep distill ...`): the --out directory
// (checkpoint.pt, run.json recording the flags and the command line, state.json with time and recent
// losses), --resume, Ctrl-C / SIGTERM saving a checkpoint before exit, exports after checkpoints.
// The loop itself is the library's (Trainer::train, train/trainer.h), and so is the resume check:
// the flags that decide the numbers are the trainer's run options, stored in its checkpoint and
// compared on --resume like its own options (a changed flag is refused, naming it and both values).
#pragma once

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/train/trainer.h"

namespace fewstep::cli {

/// Where a run keeps its files.
struct RunFiles {
  std::string checkpoint;  ///< the trainer's checkpoint
  std::string state;       ///< time so far, threads, recent losses (for the log and the card)
  std::string flags;       ///< the flags and the command line that started the run
  /// checkpoint.pt, state.json and run.json in `dir` (a run directory of its own).
  static RunFiles in(const std::string& dir);
  /// <stem>.checkpoint.pt, <stem>.run.json and <stem>.flags.json in `dir` (beside the exported files).
  static RunFiles named(const std::string& dir, const std::string& stem);
};

class TrainingRun {
 public:
  /// Creates `out`; UsageError if it holds a checkpoint and !resume. `identity` (a JSON object flag →
  /// value) holds the flags that decide the numbers; `resumable` those of them that may change on
  /// --resume (e.g. "--steps"); `files` default to RunFiles::in(out).
  TrainingRun(std::string command, std::string out, bool resume, nlohmann::json identity,
              std::vector<std::string> resumable = {}, std::optional<RunFiles> files = std::nullopt);

  const std::string& checkpoint() const { return checkpoint_; }
  const std::string& out() const { return out_; }
  /// Flags added after runs of this command were first checkpointed, with the values those runs had
  /// (e.g. {"--history-depth": 1}): such a checkpoint resumes as if it had recorded them.
  void set_flags_added_later(nlohmann::json values) { added_later_ = std::move(values); }
  /// Gives `trainer` the flags as run options, then loads the checkpoint and state.json if there is one
  /// (a fresh run otherwise); UsageError naming the flag or option that differs from the checkpoint's.
  void restore(Trainer& trainer);

  struct Loop {
    int64_t target = 0;  ///< run until this step
    int64_t checkpoint_every = 500;
    int64_t log_every = 100;
    /// Called with the run's elapsed seconds after every checkpoint (and when there is nothing to train).
    std::function<void()> on_save;
    /// Called after every step (e.g. an export at a round boundary); may be empty.
    std::function<void(const TrainStepStats&)> on_step;
  };
  /// Trains to loop.target; returns the exit code (0, or 128 + signal when interrupted).
  int run(Trainer& trainer, const Loop& loop);
  /// Removes the run's files (after a completed run whose results were exported).
  void remove_files() const;

  double seconds() const;  ///< training time of the whole run so far (all sessions)
  double mean_recent_loss() const;
  size_t loss_window() const { return recent_.size(); }
  int threads() const;
  /// The "training" block of a sidecar: command, seconds, threads, machine, final loss.
  nlohmann::json training_json() const;

 private:
  void write_state(const Trainer& trainer) const;
  std::string command_, out_, checkpoint_, run_file_, state_file_;  // files: RunFiles
  nlohmann::json identity_;
  std::vector<std::string> resumable_;
  nlohmann::json added_later_ = nlohmann::json::object();
  bool has_checkpoint_ = false;
  double seconds_before_ = 0.0;
  double session_start_ = 0.0;
  std::deque<double> recent_;
};

/// The --device of a training command, parsed by the library (core/device.h): cpu for "", else
/// cpu, cuda or cuda:N. UsageError naming --device and the value (also when CUDA is not available).
c10::Device training_device(const std::string& flag_value);

/// "model name, N cores" from /proc/cpuinfo.
std::string machine_text();
/// h:mm:ss.
std::string clock_text(double seconds);
/// Parses a JSON file; UsageError naming it.
nlohmann::json read_json_file(const std::string& path);

}  // namespace fewstep::cli
