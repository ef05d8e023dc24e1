// One training run of a CLI command (`fewstep train`, `fewstep distill ...`): the --out directory
// (checkpoint.pt, run.json with the flags that decide the numbers, state.json with time and recent
// losses), --resume with the flags checked, Ctrl-C / SIGTERM saving a checkpoint before exit, the
// progress bar (or log lines when stderr is not a terminal), periodic checkpoints and exports.
// Works on any fewstep::Trainer (train/trainer.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "fewstep/train/trainer.h"

namespace fewstep::cli {

class TrainingRun {
 public:
  /// Creates `out`; UsageError if it holds a checkpoint and !resume, or if resuming with flags
  /// (`identity`, a JSON object flag → value) other than those in its run.json.
  TrainingRun(std::string command, std::string out, bool resume, nlohmann::json identity);

  const std::string& checkpoint() const { return checkpoint_; }
  const std::string& out() const { return out_; }
  /// Loads the checkpoint and state.json into `trainer` if there is one (a fresh run otherwise).
  void restore(Trainer& trainer);

  struct Loop {
    int64_t target = 0;  ///< run until this step
    int64_t total = 0;   ///< the run's planned length (for the log lines)
    int64_t checkpoint_every = 500;
    int64_t log_every = 100;
    /// Called with the run's elapsed seconds after every checkpoint (and when there is nothing to train).
    std::function<void()> on_save;
    /// Called after every step (e.g. an export at a round boundary); may be empty.
    std::function<void(const TrainStepStats&)> on_step;
  };
  /// Trains to loop.target; returns the exit code (0, or 128 + signal when interrupted).
  int run(Trainer& trainer, const Loop& loop);

  double seconds() const;  ///< training time of the whole run so far (all sessions)
  double mean_recent_loss() const;
  size_t loss_window() const { return recent_.size(); }
  int threads() const;
  /// The "training" block of a sidecar: command, seconds, threads, machine, final loss.
  nlohmann::json training_json() const;

 private:
  void save(Trainer& trainer);
  std::string command_, out_, checkpoint_, run_file_, state_file_;
  bool has_checkpoint_ = false;
  double seconds_before_ = 0.0;
  double session_start_ = 0.0;
  std::deque<double> recent_;
};

/// "model name, N cores" from /proc/cpuinfo.
std::string machine_text();
/// h:mm:ss.
std::string clock_text(double seconds);
/// Parses a JSON file; UsageError naming it.
nlohmann::json read_json_file(const std::string& path);

}  // namespace fewstep::cli
